"""Malformed inputs to every public entry point: each row asserts the exception type and that the one-line
message names the parameter (and, where given, shows the bad value or what is allowed)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

import sdkit
from sdkit import metadata, samplers, schedules
from sdkit.cli import main
from sdkit.conditioners import Control, Mask, as_image, as_mask
from sdkit.image import Image
from sdkit.latents import Latents, LatentSpace
from sdkit.loading import load_controlnet_model, load_midas, read_state_dict
from sdkit.strength import strength_sigmas

SMALL: dict[str, Any] = dict(width=64, height=64, steps=2)
GRAY = PILImage.new("RGB", (64, 64), (128, 128, 128))
HALF = PILImage.new("L", (64, 64), 255)
SIGMAS = torch.tensor([10.0, 1.0, 0.0])
INFO = "a cat\nSteps: {steps}, Sampler: Euler, CFG scale: 7, Seed: 1, Size: {size}"


def gen(**kwargs: Any) -> Callable[[Any], Any]:
    prompt = kwargs.pop("prompt", "a cat")
    return lambda kit: kit.generate(prompt, **{**SMALL, **kwargs})


def gen_unsized(**kwargs: Any) -> Callable[[Any], Any]:
    """The init image sets the size (width/height left out)."""
    return lambda kit: kit.generate("a cat", steps=2, **kwargs)


def identity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return x * 0


X = torch.zeros(1, 4, 8, 8)

# (id, call(kit), exception type, parameter the message must name, text the message must also show or "")
CASES: list[tuple[str, Callable[[Any], Any], type[Exception], str, str]] = [
    ("width not a multiple of 8", gen(width=63), ValueError, "width", "63"),
    ("width zero", gen(width=0), ValueError, "width", "in [8, 8192]"),
    ("width beyond MAX_SIDE", gen(width=100000, height=64), ValueError, "width", "MAX_SIDE"),
    ("width negative", gen(width=-8), ValueError, "width", "-8"),
    ("width float", gen(width=64.0), TypeError, "width", "64.0"),
    ("width str", gen(width="64"), TypeError, "width", "'64'"),
    ("height not a multiple of 8", gen(height=12), ValueError, "height", "12"),
    ("size beyond the memory estimate", gen(width=8192, height=8192), ValueError, "width x height", "GiB"),
    ("batch beyond the memory estimate", gen(width=4096, height=4096, batch_size=8), ValueError, "batch_size", "GiB"),
    ("batch beyond MAX_BATCH_SIZE", gen(batch_size=10**9), ValueError, "batch_size", "MAX_BATCH_SIZE"),
    ("batch_size zero", gen(batch_size=0), ValueError, "batch_size", "0"),
    ("batch_size float", gen(batch_size=1.5), TypeError, "batch_size", "1.5"),
    ("steps zero", gen(steps=0), ValueError, "steps", "[1, 10000]"),
    ("steps negative", gen(steps=-3), ValueError, "steps", "-3"),
    ("steps float", gen(steps=2.5), TypeError, "steps", "2.5"),
    ("steps str", gen(steps="20"), TypeError, "steps", "'20'"),
    ("steps bool", gen(steps=True), TypeError, "steps", "True"),
    ("steps huge", gen(steps=10**7), ValueError, "steps", "10000"),
    ("cfg nan", gen(cfg=math.nan), ValueError, "cfg", "nan"),
    ("cfg inf", gen(cfg=math.inf), ValueError, "cfg", "inf"),
    ("cfg str", gen(cfg="7"), TypeError, "cfg", "'7'"),
    ("cfg bool", gen(cfg=True), TypeError, "cfg", "True"),
    ("seed 2^64", gen(seed=2**64), ValueError, "seed", "2^64"),
    ("seed -2", gen(seed=-2), ValueError, "seed", "-2"),
    ("seed float", gen(seed=1.5), TypeError, "seed", "1.5"),
    ("seed str", gen(seed="42"), TypeError, "seed", "'42'"),
    ("seed None", gen(seed=None), TypeError, "seed", "None"),
    ("prompt None", gen(prompt=None), TypeError, "prompt", "NoneType"),
    ("prompt int", gen(prompt=42), TypeError, "prompt", "int"),
    ("prompt bytes", gen(prompt=b"a cat"), TypeError, "prompt", "bytes"),
    ("prompt list", gen(prompt=["a cat"]), TypeError, "prompt", "list"),
    ("negative prompt None", gen(negative_prompt=None), TypeError, "negative_prompt", "NoneType"),
    ("unknown sampler", gen(sampler="warp drive"), ValueError, "sampler", "euler"),
    ("sampler int", gen(sampler=42), TypeError, "sampler", "int"),
    ("unknown schedule", gen(schedule="sideways"), ValueError, "schedule", "karras"),
    ("schedule int", gen(schedule=3), TypeError, "schedule", "int"),
    ("schedule 2-D tensor", gen(schedule=torch.tensor([[1.0, 0.0]])), ValueError, "schedule", "1-D"),
    ("schedule increasing", gen(schedule=torch.tensor([1.0, 2.0, 0.0])), ValueError, "schedule", "decreasing"),
    ("schedule not ending in 0", gen(schedule=torch.tensor([5.0, 1.0])), ValueError, "schedule", "end in 0"),
    ("schedule int tensor", gen(schedule=torch.tensor([5, 0])), ValueError, "schedule", "floating"),
    ("schedule with nan", gen(schedule=torch.tensor([5.0, math.nan, 0.0])), ValueError, "schedule", "finite"),
    ("strength without init_image", gen(strength=0.5), ValueError, "strength", "init_image"),
    ("mask without init_image", gen(mask=HALF), ValueError, "mask", "init_image"),
    ("strength above 1", gen(init_image=GRAY, strength=1.5), ValueError, "strength", "1.5"),
    ("strength negative", gen(init_image=GRAY, strength=-0.1), ValueError, "strength", "-0.1"),
    ("strength nan", gen(init_image=GRAY, strength=math.nan), ValueError, "strength", "nan"),
    ("strength str", gen(init_image=GRAY, strength="0.5"), TypeError, "strength", "'0.5'"),
    ("init_image a path string", gen(init_image="photo.png"), TypeError, "init_image", "str"),
    ("init_image float out of range", gen(init_image=np.full((64, 64, 3), 2.0)), ValueError, "init_image", "[0, 1]"),
    (
        "init_image not a multiple of 8",
        gen_unsized(init_image=PILImage.new("RGB", (63, 64))),
        ValueError,
        "init_image",
        "63x64",
    ),
    ("init_image 5 channels", gen(init_image=torch.zeros(5, 64, 64)), ValueError, "init_image", "c in 1, 3, 4"),
    ("init_image empty list", gen(init_image=[]), TypeError, "init_image", "list"),
    ("width not a multiple of 8 with init", gen(init_image=GRAY, width=60), ValueError, "width", "60"),
    ("mask of another size", gen(init_image=GRAY, mask=PILImage.new("L", (32, 32))), ValueError, "mask", "32x32"),
    ("mask a string", gen(init_image=GRAY, mask="mask.png"), TypeError, "mask", "str"),
    ("mask out of range", gen(init_image=GRAY, mask=np.full((64, 64), 3.0)), ValueError, "mask", "[0, 1]"),
    ("mask 5-D", gen(init_image=GRAY, mask=np.zeros((1, 1, 1, 64, 64))), ValueError, "mask", "shape"),
    ("mask blur negative", lambda kit: Mask(HALF, blur=-1), ValueError, "mask blur", "-1"),
    ("mask blur nan", lambda kit: Mask(HALF, blur=math.nan), ValueError, "mask blur", "nan"),
    ("mask content unknown", lambda kit: Mask(HALF, content="clouds"), ValueError, "mask content", "'clouds'"),
    ("control an int", gen(control=42), TypeError, "control", "int"),
    ("control weight nan", gen(control=("x", GRAY, math.nan)), ValueError, "control", "weight"),
    ("control start after end", lambda kit: Control("x", GRAY, 1.0, 0.8, 0.2), ValueError, "control", "start"),
    ("trace a string", gen(trace="yes"), TypeError, "trace", "str"),
    ("model not a str", lambda kit: sdkit.load(123), TypeError, "model", "int"),
    ("model empty", lambda kit: sdkit.load(""), ValueError, "model", "empty"),
    ("device unknown", lambda kit: sdkit.load("shapes", device="warp9"), ValueError, "device", "'warp9'"),
    ("device meta", lambda kit: sdkit.load("shapes", device="meta"), ValueError, "device", "'meta'"),
    (
        "device meta object",
        lambda kit: sdkit.load_vae("shapes", device=torch.device("meta")),
        ValueError,
        "device",
        "meta",
    ),
    ("allow_pickle a string", lambda kit: sdkit.load("shapes", allow_pickle="no"), TypeError, "allow_pickle", "'no'"),
    ("allow_pickle an int", lambda kit: sdkit.load("shapes", allow_pickle=1), TypeError, "allow_pickle", "1"),
    ("config an int", lambda kit: sdkit.load("shapes", config=42), TypeError, "config", "int"),
    (
        "read_state_dict allow_pickle",
        lambda kit: read_state_dict("x.ckpt", allow_pickle="yes"),
        TypeError,
        "allow_pickle",
        "'yes'",
    ),
    (
        "controlnet allow_pickle",
        lambda kit: load_controlnet_model("shapes", allow_pickle="no"),
        TypeError,
        "allow_pickle",
        "'no'",
    ),
    ("midas allow_pickle", lambda kit: load_midas("shapes", allow_pickle="no"), TypeError, "allow_pickle", "'no'"),
    ("dtype a string", lambda kit: sdkit.load("shapes", dtype="float16"), TypeError, "dtype", "'float16'"),
    ("dtype integer", lambda kit: sdkit.load("shapes", dtype=torch.int8), TypeError, "dtype", "int8"),
    ("VAE.decode a tensor", lambda kit: kit.vae.decode(X), TypeError, "latents", "Tensor"),
    (
        "VAE.decode latents of another space",
        lambda kit: kit.vae.decode(Latents(X, LatentSpace("sdxl"))),
        TypeError,
        "latents",
        "sdxl",
    ),
    ("VAE.encode an array", lambda kit: kit.vae.encode(np.zeros((8, 8, 3))), TypeError, "image", "ndarray"),
    (
        "Latents with 3 channels",
        lambda kit: Latents(torch.zeros(1, 3, 8, 8), kit.vae.space),
        ValueError,
        "latents",
        "3",
    ),
    ("Image with 4 channels", lambda kit: Image(torch.zeros(1, 4, 8, 8)), ValueError, "image", "latents"),
    ("as_image a dict", lambda kit: as_image({}), TypeError, "image", "dict"),
    ("as_mask a float", lambda kit: as_mask(0.5), TypeError, "mask", "float"),
    ("strength_sigmas strength 2", lambda kit: strength_sigmas(SIGMAS, 2.0), ValueError, "strength", "2.0"),
    ("karras zero steps", lambda kit: schedules.karras(0, 0.1, 10.0), ValueError, "steps", "0"),
    ("karras sigma_min 0", lambda kit: schedules.karras(5, 0.0, 10.0), ValueError, "sigma_min", "0.0"),
    (
        "sample unknown sampler",
        lambda kit: samplers.sample("nope", identity, X, SIGMAS),
        ValueError,
        "sampler",
        "euler",
    ),
    ("sample 2-D sigmas", lambda kit: samplers.sample("euler", identity, X, SIGMAS[None]), ValueError, "sigmas", "1-D"),
    (
        "stochastic sampler without a seed",
        lambda kit: samplers.sample("euler_ancestral", identity, X, SIGMAS),
        ValueError,
        "generator",
        "noise_sampler",
    ),
    ("infotext without fields", lambda kit: metadata.parse("just a prompt"), ValueError, "infotext", "Steps"),
    (
        "infotext bad steps",
        lambda kit: metadata.parse(INFO.format(steps="x", size="64x64")),
        ValueError,
        "steps",
        "'x'",
    ),
    ("infotext bad size", lambda kit: metadata.parse(INFO.format(steps=2, size="64")), ValueError, "size", "'64'"),
    ("infotext not a str", lambda kit: metadata.parse(42), TypeError, "infotext", "int"),
]


@pytest.mark.parametrize("call,exc,name,shows", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_is_one_clear_line(tiny_sd1_kit, call, exc, name, shows):
    with pytest.raises(exc) as info:
        call(tiny_sd1_kit)
    message = str(info.value)
    assert name.lower() in message.lower(), message
    assert shows in message, message
    assert "\n" not in message and len(message) < 1000


def test_the_table_is_large_enough():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


# every PIL mode a user may hold is an acceptable init image (converted to RGB once, in sdkit.image)
PIL_MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"]


@pytest.mark.parametrize("mode", [*PIL_MODES, "I;16"])
def test_init_image_in_any_pil_mode(mode):
    base = PILImage.new("RGB", (16, 8), (200, 30, 90))
    if mode == "I;16":
        image = PILImage.fromarray(np.full((8, 16), 40000, np.uint16))
    else:
        image = base.convert("LA" if mode == "La" else "RGBA" if mode in ("RGBa", "PA") else "RGB").convert(mode)
    t = as_image(image).tensor
    assert t.shape == (1, 3, 8, 16) and t.dtype == torch.float32
    assert 0.05 < float(t.mean()) < 0.95  # read by its mode's range, not clipped to black or white


def test_generate_accepts_odd_modes_and_dtypes(tiny_sd1_kit):
    """Init images in palette/CMYK/16-bit modes and float64/fp16 tensors, and latents of another dtype than
    the VAE, are converted rather than refused."""
    for init in (GRAY.convert("P"), GRAY.convert("CMYK"), torch.full((3, 64, 64), 0.5, dtype=torch.float64)):
        out = tiny_sd1_kit.generate("a cat", init_image=init, seed=1, steps=2)
        assert out.images[0].size == (64, 64)
    latents = Latents(torch.zeros(1, 4, 8, 8, dtype=torch.float64), tiny_sd1_kit.vae.space)
    assert tiny_sd1_kit.vae.decode(latents).tensor.dtype == torch.float32
    half = Latents(torch.zeros(1, 4, 8, 8, dtype=torch.float16), tiny_sd1_kit.vae.space)
    assert torch.equal(tiny_sd1_kit.vae.decode(half).tensor, tiny_sd1_kit.vae.decode(latents).tensor)


def test_numpy_integers_are_accepted(tiny_sd1_kit):
    out = tiny_sd1_kit.generate("a cat", seed=np.uint64(3), steps=np.int32(2), width=np.int64(64), height=64)
    assert out.parameters.steps == 2 and out.parameters.width == 64
    assert out.parameters.seed == 3 and type(out.parameters.seed) is int
    plain = tiny_sd1_kit.generate("a cat", seed=3, steps=2, width=64, height=64)
    assert torch.equal(out.latents.tensor, plain.latents.tensor)


def test_boolean_seeds_are_refused():
    from sdkit.noise import check_seed

    for flag in (True, np.bool_(True)):
        with pytest.raises(TypeError, match="seed"):
            check_seed(flag)


@pytest.mark.parametrize(
    "args,name",
    [
        (["--batch-size", "0"], "batch_size"),
        (["--height", "0"], "height"),
        (["--steps", "-1"], "steps"),
        (["--seed", str(2**64)], "seed"),
        (["--cfg", "inf"], "cfg"),
        (["--schedule", "sideways"], "schedule"),
        (["-o", "out.gif"], "output"),
    ],
)
def test_cli_refuses_with_one_line(tiny_sd1_folder, tmp_path, monkeypatch, capsys, args, name):
    monkeypatch.chdir(tmp_path)
    argv = ["generate", "a cat", "--model", str(tiny_sd1_folder), "--steps", "2", "-o", "o.png", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err.lower()
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_an_empty_prompt(tmp_path, capsys):
    assert main(["generate", "  ", "-o", str(tmp_path / "o.png")]) == 2
    assert "prompt must not be empty" in capsys.readouterr().err and not (tmp_path / "o.png").exists()
