"""Fuzzing every public entry point with careless and hostile input (hypothesis, bounded examples).

Each case must either work or raise one of the clear error classes below, with a one-line message, and stay
within the budget: no case may allocate more than ``PEAK_RSS_GIB`` of new resident memory (the kernel's peak-RSS
counter is reset before each case through ``/proc/self/clear_refs``), and a hang guard (``HANG_GUARD_S``, far
above what any case needs, so a loaded machine cannot trip it) turns an endless loop into a failure instead of a
stuck CI job. ``prompt editing with an init image`` is the one documented ``NotImplementedError``.

``FUZZ_SCALE=20 pytest tests/test_fuzz_entry_points.py`` runs twenty times the examples; ``bench/fuzz_long.py``
does that and prints the outcome classes per entry point (the README's reliability figures).
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

import sdkit
from sdkit import metadata
from sdkit.cli import main as cli_main
from sdkit.loading import ModelLoadError, open_image, read_image_parameters
from sdkit.noise import SeedSpec
from sdkit.schedules import SCHEDULES, make_sigmas
from sdkit.text.prompt_syntax import parse_weights, prompt_schedule

pytestmark = pytest.mark.usefixtures("one_thread")

CLEAR = (ValueError, TypeError, ModelLoadError, FloatingPointError)
PEAK_RSS_GIB = 3.0
HANG_GUARD_S = 300
SCALE = int(os.environ.get("FUZZ_SCALE", "1"))
OUTCOMES: collections.Counter[tuple[str, str]] = collections.Counter()


def fuzz(examples: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        derandomize=SCALE == 1,  # CI: the same examples every run; FUZZ_SCALE > 1 explores
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    )


def _peak_rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # pragma: no cover - kernels without clear_refs: the budget is then checked on the run's peak
        pass


@contextmanager
def _hang_guard(seconds: int) -> Iterator[None]:
    def expired(*_: Any) -> None:
        raise TimeoutError(f"a fuzz case ran past the {seconds} s hang guard")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_case(entry: str, fn: Callable[[], Any], *, allow: tuple[type[BaseException], ...] = ()) -> Any:
    """Run one case: it works (returns its value) or raises a clear one-line error (returns None)."""
    _reset_peak_rss()
    before = _peak_rss_gib()
    try:
        with _hang_guard(HANG_GUARD_S):
            result = fn()
        OUTCOMES[(entry, "ok")] += 1
        return result
    except (*CLEAR, *allow) as e:
        message = str(e)
        assert message and "\n" not in message and "Traceback" not in message, f"{entry}: {message!r}"
        OUTCOMES[(entry, type(e).__name__)] += 1
        return None
    finally:
        grown = _peak_rss_gib() - before
        assert grown < PEAK_RSS_GIB, f"{entry}: peak RSS grew by {grown:.2f} GiB"


@pytest.fixture(scope="module", autouse=True)
def _report_outcomes() -> Iterator[None]:
    yield
    target = os.environ.get("FUZZ_REPORT")
    if target:
        rows = [{"entry": e, "outcome": o, "cases": n} for (e, o), n in sorted(OUTCOMES.items())]
        Path(target).write_text(json.dumps(rows, indent=1))


# ------------------------------------------------------------------------------------------------ text
SYNTAX = st.text(alphabet="()[]{}:|\\ ,.0123456789-+eEab BREAKAND\n\t", max_size=120)
UNICODE = st.text(st.characters(codec="utf-8"), max_size=60)
HOSTILE = [
    "(" * 30,
    "[" * 30,
    "[a|" * 30,
    "(" * 400 + "x" + ")" * 400,
    "[red:blue:" + "9" * 400 + "]",
    "(x:" + "9" * 400 + ")",
    "a\ud800b",
    "x" * 25_000,
    "\x00" * 100,
    "[a:b:1e999]",
    "[a:b:-1e999]",
    "(((((a:1.5)))))" * 400,
]  # the examples and their kin
PROMPTS = st.one_of(SYNTAX, UNICODE, st.sampled_from(HOSTILE))


@fuzz(200)
@given(prompt=PROMPTS, steps=st.one_of(st.integers(-2, 40), st.sampled_from([1.5, None, "20"])))
def test_prompt_parser(prompt: str, steps: Any) -> None:
    run_case("prompt_schedule", lambda: prompt_schedule(prompt, steps))
    run_case("parse_weights", lambda: parse_weights(prompt))


def test_tokenizer_and_encoder_on_hostile_prompts(tiny_sd1_kit) -> None:
    for prompt in HOSTILE:
        run_case("encode_pair", lambda p=prompt: tiny_sd1_kit.prompts.encode_pair(p, p))


# ------------------------------------------------------------------------------------------------ infotext
REAL_INFOTEXT = (
    "a red circle, (masterpiece:1.2)\nNegative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 4376845645, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5, Denoising strength: 0.7, Clip skip: 2, Hires upscale: 2, "
    'Hires steps: 10, Hires upscaler: Latent, Lora hashes: "a: 1234, b: 5678", Version: v1.9.4'
)


def _mutate(text: str, data: st.DataObject) -> str:
    cut = data.draw(st.integers(0, len(text)))
    insert = data.draw(st.text(alphabet=string.printable + 'ü日"\\', max_size=12))
    drop = data.draw(st.integers(0, 8))
    return text[:cut] + insert + text[cut + drop :]


@fuzz(300)
@given(data=st.data())
def test_infotext_parse(data: st.DataObject) -> None:
    text = data.draw(st.one_of(UNICODE, st.just(REAL_INFOTEXT), st.sampled_from(["", "\n", ":"])))
    if data.draw(st.booleans()):
        text = _mutate(REAL_INFOTEXT, data)
    params = run_case("metadata.parse", lambda: metadata.parse(text))
    if params is not None:
        run_case("metadata.generate_kwargs", params.generate_kwargs)
        run_case("infotext", params.infotext)


# ------------------------------------------------------------------------------------------------ image files
def _png_bytes(text: str) -> bytes:
    import io

    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", text)
    out = io.BytesIO()
    PILImage.new("RGB", (8, 8), (200, 0, 0)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


@fuzz(100)
@given(data=st.data())
def test_image_files(tmp_path_factory, data: st.DataObject) -> None:
    raw = bytearray(_png_bytes(REAL_INFOTEXT))
    kind = data.draw(st.sampled_from(["flip", "truncate", "random", "empty"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "random":
        raw = bytearray(data.draw(st.binary(max_size=300)))
    else:
        raw = bytearray()
    suffix = data.draw(st.sampled_from([".png", ".jpg", ".webp", ".txt"]))
    path = tmp_path_factory.mktemp("img") / f"x{suffix}"
    path.write_bytes(bytes(raw))
    run_case("read_image_parameters", lambda: read_image_parameters(path))
    run_case("open_image", lambda: open_image(path))
    run_case("cli info", lambda: _cli(["info", str(path)]))


def _cli(argv: list[str]) -> int:
    """``sdkit.cli.main``: 0, or 2 after a one-line error (argparse's own usage errors exit 2 too)."""
    try:
        code = cli_main(argv)
    except SystemExit as e:  # argparse: usage + one error line
        code = int(e.code or 0)
    assert code in (0, 2), code
    return code


# ------------------------------------------------------------------------------------------------ model folders
CONFIG_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True), st.text(max_size=8),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)  # fmt: skip


@fuzz(25)
@given(data=st.data())
def test_load_malformed_folders(tiny_sd1_folder, tmp_path_factory, data: st.DataObject) -> None:
    folder = tmp_path_factory.mktemp("model") / "m"
    shutil.copytree(tiny_sd1_folder, folder)
    configs = sorted(p for p in folder.rglob("*.json") if p.name != "tokenizer.json")
    target = data.draw(st.sampled_from(configs))
    how = data.draw(st.sampled_from(["field", "whole", "garbage"]))
    if how == "garbage":
        target.write_text(data.draw(st.text(max_size=40)))
    elif how == "whole":
        target.write_text(json.dumps(data.draw(CONFIG_VALUES)))
    else:
        config = json.loads(target.read_text())
        if isinstance(config, dict) and config:
            key = data.draw(st.sampled_from(sorted(config)))
            config[key] = data.draw(CONFIG_VALUES)
        target.write_text(json.dumps(config))
    weights = sorted(folder.rglob("*.safetensors"))
    if data.draw(st.booleans()) and weights:
        victim = data.draw(st.sampled_from(weights))
        raw = bytearray(victim.read_bytes())
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= 0xFF
        victim.write_bytes(bytes(raw))
    kit = run_case("sdkit.load", lambda: sdkit.load(str(folder)))
    if kit is not None:  # what loads must also generate (or refuse clearly)
        run_case("generate after load", lambda: kit.generate("a cat", seed=1, steps=2, width=32, height=32))


# ------------------------------------------------------------------------------------------------ generate
def _gen(kit: Any, **kwargs: Any) -> Any:
    out = kit.generate(**kwargs)
    assert all(im.size == (out.parameters.width, out.parameters.height) for im in out.images)
    assert bool(torch.isfinite(out.latents.tensor).all()) if out.latents is not None else True
    return out


NUMBERS = st.one_of(
    st.floats(-1e6, 1e6), st.sampled_from([float("nan"), float("inf"), -0.0]),
    st.sampled_from([np.float32(0.5), np.float64(7.5), np.int64(3), True, "7", None, [1]]),
)  # fmt: skip


@fuzz(40)
@given(
    prompt=PROMPTS,
    steps=st.one_of(st.integers(-1, 3), st.sampled_from([np.int64(2), 10**9, 2.0, None])),
    cfg=NUMBERS,
    strength=NUMBERS,
    subseed_strength=NUMBERS,
    seed_resize_from=st.sampled_from([None, (64, 32), (0, 8), (10**9, 8), "64x64", (8.5, 8)]),
    progress=st.sampled_from([False, True, "no", 0, None]),
    size=st.sampled_from([(32, 32), (8, 8), (100000, 64), (64, 100000), (-8, 8), (12, 32), (np.int64(32), 32)]),
    batch_size=st.sampled_from([1, 2, 0, 10**9, np.int64(2), True]),
    init=st.sampled_from([None, "image", "nan-image", "huge-image"]),
)
def test_generate(tiny_sd1_kit, prompt, steps, cfg, strength, subseed_strength, seed_resize_from, progress, size,
                  batch_size, init) -> None:  # fmt: skip
    kwargs: dict[str, Any] = dict(prompt=prompt, seed=5, steps=steps, cfg=cfg, width=size[0], height=size[1],
                                  batch_size=batch_size, progress=progress, subseed_strength=subseed_strength,
                                  subseed=3, seed_resize_from=seed_resize_from)  # fmt: skip
    if init is not None:
        pixels = np.full((32, 32, 3), 0.5, np.float32)
        if init == "nan-image":
            pixels[3, 3, 0] = np.nan
        if init == "huge-image":
            pixels = np.zeros((9000, 9000, 3), np.uint8)
        kwargs.update(init_image=pixels, strength=strength)
    run_case("Kit.generate", lambda: _gen(tiny_sd1_kit, **kwargs), allow=(NotImplementedError,))


@fuzz(60)
@given(
    seed=st.one_of(st.integers(-5, 2**65), st.sampled_from([np.uint64(7), True, 1.0, "7"])),
    subseed=st.one_of(st.none(), st.integers(-2, 2**65)),
    strength=NUMBERS,
    resize=st.sampled_from([None, (64, 64), (0, 1), "64", (1, 2, 3)]),
    delta=st.one_of(st.integers(-3, 2**65), st.sampled_from([1.5, None, True])),
)
def test_seed_spec(seed, subseed, strength, resize, delta) -> None:
    run_case("SeedSpec", lambda: SeedSpec(seed, subseed, strength, resize, delta))


@fuzz(60)
@given(
    schedule=st.one_of(st.sampled_from([*SCHEDULES, "nope", "", "Karras", "align-your-steps"]), st.none()),
    steps=st.one_of(st.integers(-3, 2000), st.sampled_from([10**7, 2.5, None])),
)
def test_schedules(tiny_sd1_kit, schedule, steps) -> None:
    run_case("make_sigmas", lambda: make_sigmas(schedule, steps, tiny_sd1_kit.denoiser.schedule))


# ------------------------------------------------------------------------------------------------ CLI
FLAGS = st.sampled_from(
    ["--steps", "--seed", "--cfg", "--width", "--height", "--batch-size", "--sampler", "--schedule", "--negative",
     "--clip-skip", "--hires-scale", "--hires-steps", "--hires-strength", "--hires-upscaler", "-o", "--bogus"]
)  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(["0", "-1", "2", "1e999", "nan", "Euler a", "DPM++ 2M Karras", "bogus", "x.png", "x.gif", ""]),
    st.text(alphabet=string.ascii_letters + string.digits + "-.", max_size=6),
)


@fuzz(40)
@given(pairs=st.lists(st.tuples(FLAGS, VALUES), max_size=4), prompt=st.sampled_from(["a cat", "", "(" * 30]))
def test_cli_generate(tiny_sd1_folder, tmp_path_factory, pairs, prompt) -> None:
    out = tmp_path_factory.mktemp("cli")
    argv = ["generate", prompt, "--model", str(tiny_sd1_folder), "--steps", "2", "--width", "32", "--height", "32",
            "-o", str(out / "o.png")]  # fmt: skip
    for flag, value in pairs:
        if flag == "-o" and not re.fullmatch(r"[\w.-]+", value or "-"):
            continue
        argv += [flag, str(out / value) if flag == "-o" else value]
    run_case("cli generate", lambda: _cli(argv))


# ------------------------------------------------------------------------------------------------ found by the long run
def test_a_tokenizer_that_outgrows_its_text_encoder_is_refused_at_load(tiny_sd1_folder, tmp_path):
    """``bos_token: "00"`` made the tokenizer add an id the text encoder cannot embed: an IndexError at the first
    generate. It is now refused when the kit is built, naming both parts."""
    folder = tmp_path / "m"
    shutil.copytree(tiny_sd1_folder, folder)
    config = folder / "tokenizer" / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "bos_token": "00"}))
    with pytest.raises(ValueError, match=r"tokenizer: its ids reach .* text_encoder embeds only"):
        sdkit.load(str(folder))


def test_a_schedule_of_ten_million_steps_is_refused_before_it_is_built(tiny_sd1_kit):
    """``make_sigmas("karras", 10**7, ...)`` grew memory by 6 GiB; steps are bounded by ``sdkit.limits.MAX_STEPS``."""
    with pytest.raises(ValueError, match="MAX_STEPS"):
        make_sigmas("karras", 10**7, tiny_sd1_kit.denoiser.schedule)


def test_an_empty_scheduler_config_means_the_defaults(tiny_sd1_folder, tmp_path):
    """``scheduler_config.json`` holding ``{}`` raised KeyError('scheduler'); it reads as diffusers' defaults."""
    folder = tmp_path / "m"
    shutil.copytree(tiny_sd1_folder, folder)
    (folder / "scheduler" / "scheduler_config.json").write_text("{}")
    kit = sdkit.load(str(folder))
    assert kit.denoiser.schedule.num_timesteps == 1000


def test_review_findings(tiny_sd1_kit, tmp_path):
    """A review's findings, each now a clear error or working: sweeps refuse options their batched runs cannot
    apply; a size that is not a pair is named; a bool index is refused; numpy 2 booleans are booleans; an output
    name close to NAME_MAX is written (the temp file's name no longer outgrows it)."""
    from sdkit.limits import check_bool
    from sdkit.sweep import sweep

    with pytest.raises(ValueError, match=r"a sweep cannot fix \['clip_skip'\]"):
        sweep(tiny_sd1_kit, "x", x=("seed", [1]), steps=2, width=32, height=32, clip_skip=2)
    with pytest.raises(TypeError, match="seed_resize_from"):
        tiny_sd1_kit.parameters("x", seed_resize_from=64)
    with pytest.raises(ValueError, match="hires resize_to"):
        tiny_sd1_kit.parameters("x", hires={"resize_to": 128})
    gen = tiny_sd1_kit.generate("x", seed=1, steps=1, width=32, height=32, batch_size=2)
    with pytest.raises(TypeError, match="index"):
        gen.save(str(tmp_path / "b.png"), index=True)
    assert check_bool("trace", np.True_) is True  # numpy 1's numpy.bool_ and numpy 2's numpy.bool alike
    long_name = tmp_path / ("x" * 250 + ".png")
    assert Path(gen.save(str(long_name))).stat().st_size > 0
