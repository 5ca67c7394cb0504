"""Hires fix (``sdkit.recipes.hires_fix`` via ``Kit.generate(hires=...)``) against A1111's algorithm, restated here
from ``modules/processing.py`` (``calculate_target_resolution``, ``sample_hr_pass``), ``modules/sd_samplers_common.py``
(``setup_img2img_steps`` with explicit steps) and ``modules/shared`` (``latent_upscale_modes``), with k-diffusion's
samplers as the second pass and torch's CPU generators as A1111's ``ImageRNG``."""

from __future__ import annotations

import k_diffusion.sampling as K
import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from sampler_fixtures import a1111_sde_run

from sdkit import metadata
from sdkit.cli import main
from sdkit.guidance import CFG
from sdkit.hires import HiresFix, hires_schedule, hires_sigmas
from sdkit.image import Image
from sdkit.latents import Latents
from sdkit.schedules import make_sigmas

pytestmark = pytest.mark.usefixtures("one_thread")

# A1111 modules/shared_state / shared.py latent_upscale_modes: name -> (mode, antialias)
A1111_LATENT_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


def a1111_target(width: int, height: int, scale: float, resize_x: int, resize_y: int) -> tuple[int, int, int, int]:
    """A1111's calculate_target_resolution: (hr_upscale_to_x, hr_upscale_to_y, truncate_x, truncate_y)."""
    if resize_x == 0 and resize_y == 0:
        return int(width * scale), int(height * scale), 0, 0
    if resize_y == 0:
        return resize_x, resize_x * height // width, 0, 0
    if resize_x == 0:
        return resize_y * width // height, resize_y, 0, 0
    if width / height < resize_x / resize_y:
        to_x, to_y = resize_x, resize_x * height // width
    else:
        to_x, to_y = resize_y * width // height, resize_y
    return to_x, to_y, (to_x - resize_x) // 8, (to_y - resize_y) // 8


def a1111_hires_tail(make, steps: int, strength: float) -> torch.Tensor:
    """setup_img2img_steps(p, steps) + sample_img2img: a schedule of int(steps / min(strength, 0.999)) steps, from
    index steps_total - t_enc - 1 with t_enc = steps - 1."""
    total = int(steps / min(strength, 0.999))
    return make(total)[total - (steps - 1) - 1 :]


@pytest.mark.parametrize(
    ("width", "height", "scale", "resize"),
    [(64, 48, 2.0, (0, 0)), (40, 64, 1.55, (0, 0)), (64, 48, 2.0, (100, 0)), (64, 48, 2.0, (0, 72)),
     (64, 48, 2.0, (96, 96)), (48, 64, 2.0, (128, 96)), (448, 640, 2.0, (768, 1024))],
)  # fmt: skip
def test_target_size_is_a1111s(width, height, scale, resize):
    to_x, to_y, tx, ty = a1111_target(width, height, scale, *resize)
    hires = HiresFix(scale=scale, resize_to=None if resize == (0, 0) else resize)
    upscale_to, final = hires.target_size(width, height)
    assert upscale_to == (to_x, to_y)
    # A1111 crops truncate // 2 at the start and (truncate + 1) // 2 at the end of the latent rows/columns
    assert hires.latent_size(width, height, 8) == (to_x // 8 - tx, to_y // 8 - ty)
    assert final == ((resize[0], resize[1]) if min(resize) > 0 else (to_x, to_y))


@pytest.mark.parametrize("steps", [1, 5, 20])
@pytest.mark.parametrize("strength", [0.05, 0.3, 0.7, 0.9995, 1.0])
def test_hires_sigmas_are_a1111s_tail(tiny_sd1_kit, steps, strength):
    def make(n: int) -> torch.Tensor:
        return make_sigmas("karras", n, tiny_sd1_kit.denoiser.schedule)

    tail = hires_sigmas(make, steps, strength)
    assert torch.equal(tail, a1111_hires_tail(make, steps, strength))
    assert len(tail) == steps + 1  # the second pass runs exactly the hires steps


def _second_pass_oracle(
    kit, prompt, low: torch.Tensor, *, seed, steps, strength, mode, antialias, cfg, sampler, schedule="normal"
):
    """A1111's sample_hr_pass on the tiny model: interpolate, fresh noise from generator(seed) over the new shape,
    x = z + noise * sigmas[0], then k-diffusion's sampler; ancestral step noise continues the same generator."""
    cond, uncond = kit.prompts.encode_pair(prompt, "")
    h, w = low.shape[2] * 3 // 2, low.shape[3] * 3 // 2  # scale 1.5
    z = torch.nn.functional.interpolate(low, size=(h, w), mode=mode, antialias=antialias)

    def make(n: int) -> torch.Tensor:
        return make_sigmas(schedule, n, kit.denoiser.schedule)

    tail = a1111_hires_tail(make, steps, strength)
    gen = torch.Generator().manual_seed(seed)
    x = z + torch.randn(z.shape[1:], generator=gen)[None] * tail[0]
    model = CFG(kit.denoiser, cond, uncond, cfg)
    if sampler == "euler":
        return K.sample_euler(model, x, tail, disable=True)
    if sampler == "dpmpp_sde":  # Brownian trees over the whole longer schedule setup_img2img_steps makes
        return a1111_sde_run(sampler, model, x, tail, make(int(steps / min(strength, 0.999))), [seed])
    return K.sample_euler_ancestral(
        model, x, tail, disable=True, noise_sampler=lambda s, sn: torch.randn(z.shape[1:], generator=gen)[None]
    )


@pytest.mark.parametrize("upscaler", list(A1111_LATENT_MODES))
@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_sde"])
def test_latent_hires_matches_a1111s_second_pass(tiny_sd1_kit, upscaler, sampler):
    seed, steps, strength = 4376845645, 3, 0.6
    args = dict(seed=seed, steps=4, cfg=6.0, sampler=sampler, schedule="normal", width=32, height=48)
    low = tiny_sd1_kit.generate("a red circle", **args).latents.tensor
    gen = tiny_sd1_kit.generate(
        "a red circle", **args, hires=dict(scale=1.5, steps=steps, denoising_strength=strength, upscaler=upscaler)
    )
    mode, antialias = A1111_LATENT_MODES[upscaler]
    expected = _second_pass_oracle(
        tiny_sd1_kit, "a red circle", low, seed=seed, steps=steps, strength=strength, mode=mode, antialias=antialias,
        cfg=6.0, sampler=sampler,
    )  # fmt: skip
    torch.testing.assert_close(gen.latents.tensor, expected, rtol=1e-5, atol=1e-5)
    assert gen.images[0].size == (48, 72)
    info = gen.infotext
    assert f"Denoising strength: 0.6, Hires upscale: 1.5, Hires steps: 3, Hires upscaler: {upscaler}" in info


@pytest.mark.parametrize("schedule", ["leading"])
def test_dpmpp_sde_hires_spans_the_longer_schedule_whose_top_moves(tiny_sd1_kit, schedule):
    """Spacings whose top sigma depends on the step count: the second pass's trees span the longer schedule's top
    (A1111's setup_img2img_steps), not the first pass's."""
    seed, steps, strength = 11, 3, 0.4
    args = dict(seed=seed, steps=4, cfg=6.0, sampler="dpmpp_sde", schedule=schedule, width=32, height=32)
    longer = make_sigmas(schedule, int(steps / strength), tiny_sd1_kit.denoiser.schedule)
    first = make_sigmas(schedule, 4, tiny_sd1_kit.denoiser.schedule)
    assert abs(float(longer.max()) - float(first.max())) > 0.1  # the two tops differ: the span matters here
    low = tiny_sd1_kit.generate("a red circle", **args).latents.tensor
    gen = tiny_sd1_kit.generate("a red circle", **args, hires=dict(scale=1.5, steps=steps, denoising_strength=strength))
    expected = _second_pass_oracle(
        tiny_sd1_kit, "a red circle", low, seed=seed, steps=steps, strength=strength, mode="bilinear", antialias=False,
        cfg=6.0, sampler="dpmpp_sde", schedule=schedule,
    )  # fmt: skip
    torch.testing.assert_close(gen.latents.tensor, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strength", [0.05, 0.3, 0.7, 1.0])
def test_hires_sigmas_are_the_tail_of_hires_schedule(tiny_sd1_kit, strength):
    def make(n: int) -> torch.Tensor:
        return make_sigmas("ddim_uniform", n, tiny_sd1_kit.denoiser.schedule)

    whole, tail = hires_schedule(make, 5, strength), hires_sigmas(make, 5, strength)
    assert len(tail) == 6 and torch.equal(whole[-6:], tail)


@pytest.mark.parametrize(
    ("upscaler", "resample"), [("Lanczos", "LANCZOS"), ("Nearest", "NEAREST"), ("None", "LANCZOS")]
)
def test_pixel_hires_resizes_decoded_pixels(tiny_sd1_kit, upscaler, resample):
    args = dict(seed=7, steps=3, sampler="euler", width=32, height=32)
    low = tiny_sd1_kit.generate("a blue square", **args)
    zero = tiny_sd1_kit.generate(
        "a blue square", **args, hires=HiresFix(scale=2.0, denoising_strength=0.0, upscaler=upscaler)
    )
    # strength 0: the second pass is skipped, leaving exactly decode -> PIL resize -> encode (posterior mean)
    big = low.images[0].resize((64, 64), getattr(PILImage.Resampling, resample))
    expected = tiny_sd1_kit.vae.encode(Image.from_pil(big)).tensor
    torch.testing.assert_close(zero.latents.tensor, expected)
    assert zero.images[0].size == (64, 64) and f"Hires upscaler: {upscaler}" in zero.infotext


def test_unknown_upscaler_falls_back_to_lanczos_with_a_warning(tiny_sd1_kit):
    args = dict(seed=3, steps=2, width=32, height=32)
    with pytest.warns(UserWarning, match=r"'4x-UltraSharp'.*'Lanczos'"):
        gen = tiny_sd1_kit.generate("x", **args, hires=dict(upscaler="4x-UltraSharp", denoising_strength=0.5))
    lanczos = tiny_sd1_kit.generate("x", **args, hires=dict(upscaler="Lanczos", denoising_strength=0.5))
    assert np.array_equal(np.asarray(gen.images[0]), np.asarray(lanczos.images[0]))
    assert "Hires upscaler: Lanczos" in gen.infotext and gen.parameters.hires.upscaler == "Lanczos"


def test_hires_infotext_regenerates_bit_identically(tiny_sd1_kit, tmp_path):
    hires = HiresFix(scale=1.25, steps=2, denoising_strength=0.55, upscaler="Latent (bicubic)", resize_to=(48, 40))
    gen = tiny_sd1_kit.generate("a green triangle", seed=11, steps=3, width=32, height=32, hires=hires, batch_size=2)
    path = gen.save(str(tmp_path / "h.png"))
    kwargs = metadata.read(path)
    assert kwargs["hires"] == hires and "strength" not in kwargs
    again = tiny_sd1_kit.generate(**kwargs)
    for k in range(2):
        assert np.array_equal(np.asarray(gen.images[k]), np.asarray(again.images[k]))
    assert gen.images[0].size == (48, 40)


def test_hires_steps_zero_means_base_steps(tiny_sd1_kit):
    gen = tiny_sd1_kit.generate("x", seed=1, steps=3, width=32, height=32, hires={"denoising_strength": 0.5},
                                trace=True)  # fmt: skip
    seen = [s.i for s in gen.trace.steps]
    assert seen == [0, 1, 2, 0, 1, 2]  # 3 base steps, then 3 hires steps (A1111: Hires steps 0 = the base steps)
    assert "Hires steps" not in gen.infotext


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(hires=dict(scale=0)), "hires scale"),
        (dict(hires=dict(steps=-1)), "hires steps"),
        (dict(hires=dict(denoising_strength=1.5)), "hires denoising_strength"),
        (dict(hires=dict(upscaler="")), "hires upscaler"),
        (dict(hires=dict(resize_to=(0, 0))), "hires resize_to"),
        (dict(hires=dict(sclae=2)), "hires: unknown keys"),
        (dict(hires="2x"), "hires must be"),
        (dict(hires=HiresFix(), init_image=PILImage.new("RGB", (32, 32))), "hires"),
        (dict(hires=HiresFix(), schedule=torch.tensor([10.0, 1.0, 0.0])), "hires"),
        (dict(hires=HiresFix(scale=0.01)), "smaller than one latent cell"),
        (dict(hires=HiresFix(denoising_strength=1e-9)), "hires denoising_strength 1e-09 with 2 steps"),
    ],
)
def test_bad_hires_is_one_clear_error(tiny_sd1_kit, kwargs, message):
    with pytest.raises((ValueError, TypeError)) as info:
        tiny_sd1_kit.generate("x", seed=1, steps=2, width=32, height=32, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_prompt_editing_with_hires_is_refused_clearly(tiny_sd1_kit):
    with pytest.raises(NotImplementedError, match="hires"):
        tiny_sd1_kit.generate("[a:b:0.5]", seed=1, steps=2, width=32, height=32, hires=HiresFix())


def test_recipe_runs_without_a_kit(tiny_sd1_kit):
    """The recipe alone, as a notebook cell would call it: the same latents as Kit.generate."""
    from sdkit.recipes import hires_fix

    kit = tiny_sd1_kit
    hires = HiresFix(scale=1.5, steps=2, denoising_strength=0.5)
    cond, uncond = kit.prompts.encode_pair("a cat", "dark")
    sigmas = make_sigmas("karras", 3, kit.denoiser.schedule)
    tail = hires_sigmas(lambda n: make_sigmas("karras", n, kit.denoiser.schedule), 2, 0.5)
    out = hires_fix(kit.denoiser, kit.vae, cond, uncond, sigmas=sigmas, hires_sigmas=tail, hires=hires,
                    sampler="dpmpp_2m", cfg_scale=5.0, seed=9, width=32, height=32)  # fmt: skip
    gen = kit.generate("a cat", "dark", seed=9, steps=3, cfg=5.0, sampler="dpmpp_2m", schedule="karras", width=32,
                       height=32, hires=hires)  # fmt: skip
    assert isinstance(out, Latents) and torch.equal(out.tensor, gen.latents.tensor)


def test_cli_hires_options(tiny_sd1_folder, tmp_path, capsys):
    out = tmp_path / "h.png"
    argv = ["generate", "a red circle", "--model", str(tiny_sd1_folder), "--seed", "5", "--steps", "2", "--width",
            "32", "--height", "32", "--hires-scale", "1.5", "--hires-steps", "1", "--hires-strength", "0.4",
            "--hires-upscaler", "Nearest", "--clip-skip", "2", "-o", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = metadata.read(out)
    assert text["hires"] == HiresFix(1.5, 1, 0.4, "Nearest") and text["clip_skip"] == 2
    assert PILImage.open(out).size == (48, 48)
    capsys.readouterr()
    assert main([*argv[:-2], "--hires-strength", "2", "-o", str(tmp_path / "bad.png")]) == 2
    assert "--hires-strength" in capsys.readouterr().err and not (tmp_path / "bad.png").exists()


def test_sdxl_second_pass_is_conditioned_on_its_own_size():
    """A1111 builds the hires conds with the hires size (SdConditioning width/height = hr_upscale_to), so SDXL's
    size micro-conditioning of the second pass says the larger size."""
    from sdkit.kit import Kit
    from sdkit.recipes import hires_fix
    from sdkit.sdxl import add_time_ids
    from sdkit.testing import tiny_components

    kit = Kit.from_components(tiny_components("sdxl"), family="sdxl", name="tiny-xl")
    hires = HiresFix(scale=1.5, steps=1, denoising_strength=0.5)
    gen = kit.generate("a cat", seed=2, steps=2, width=32, height=32, hires=hires)
    cond, uncond = kit.prompts.encode_pair("a cat", "")
    sigmas = make_sigmas("normal", 2, kit.denoiser.schedule)
    tail = hires_sigmas(lambda n: make_sigmas("normal", n, kit.denoiser.schedule), 1, 0.5)
    common = dict(sigmas=sigmas, hires_sigmas=tail, hires=hires, cfg_scale=5.0, seed=2, width=32, height=32)
    base = add_time_ids(kit.unet, cond, uncond, 32, 32)
    own = hires_fix(kit.denoiser, kit.vae, *base, hires_cond=add_time_ids(kit.unet, cond, uncond, 48, 48), **common)
    same = hires_fix(kit.denoiser, kit.vae, *base, **common)
    assert torch.equal(gen.latents.tensor, own.tensor)
    assert not torch.equal(own.tensor, same.tensor)
