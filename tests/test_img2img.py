"""img2img: strength 0 is the VAE round trip, strength 1 is txt2img, and it matches diffusers'
StableDiffusionImg2ImgPipeline on tiny random components. Init images of every kind convert correctly."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from image_fixtures import gradient_image
from PIL import Image as PILImage

from sdkit import metadata
from sdkit.conditioners import InitImage, as_image, to_image
from sdkit.image import Image
from sdkit.noise import randn
from sdkit.recipes import img2img

PROMPT = "a red circle above a blue square"


def test_strength_zero_is_the_vae_round_trip(tiny_sd1_kit):
    kit = tiny_sd1_kit
    init = Image.from_pil(gradient_image())
    cond, uncond = kit.prompts.encode_pair(PROMPT, "")
    sigmas = torch.linspace(10, 0, 5)
    latents = img2img(kit.denoiser, kit.vae, init, cond, uncond, sigmas=sigmas, strength=0.0, seed=1)
    assert torch.equal(latents.tensor, kit.vae.encode(init).tensor)
    gen = kit.generate(PROMPT, init_image=gradient_image(), strength=0.0, seed=1, steps=4)
    round_trip = kit.vae.decode(kit.vae.encode(init)).to_pil()[0]
    assert np.array_equal(np.asarray(gen.images[0]), np.asarray(round_trip))
    assert gen.images[0].size == (64, 64) and gen.infotext.endswith("Denoising strength: 0")


def test_strength_one_equals_txt2img_with_the_same_seed(tiny_sd1_kit):
    common = dict(seed=77, steps=3, cfg=6.0, sampler="euler_ancestral")
    txt = tiny_sd1_kit.generate(PROMPT, width=64, height=64, **common)
    img = tiny_sd1_kit.generate(PROMPT, init_image=gradient_image(), strength=1.0, **common)
    assert torch.equal(txt.latents.tensor, img.latents.tensor)
    assert np.array_equal(np.asarray(txt.images[0]), np.asarray(img.images[0]))


def test_intermediate_strength_keeps_the_init_and_runs_the_tail(tiny_sd1_kit):
    kit = tiny_sd1_kit
    steps_seen = []
    init = Image.from_pil(gradient_image())
    cond, uncond = kit.prompts.encode_pair(PROMPT, "")
    sigmas = torch.tensor([14.6, 8.0, 4.0, 2.0, 1.0, 0.5, 0.0])
    latents = img2img(
        kit.denoiser, kit.vae, init, cond, uncond, sigmas=sigmas, strength=0.5, seed=3, on_step=steps_seen.append
    )
    assert [s.sigma for s in steps_seen] == pytest.approx([2.0, 1.0, 0.5])  # the last 3 of 6 steps
    z = kit.vae.encode(init).tensor
    assert torch.allclose(steps_seen[0].x, z + randn([3], z.shape[1:]) * 2.0)
    assert latents.tensor.shape == z.shape and not torch.equal(latents.tensor, z)


def test_batch_of_one_init_image(tiny_sd1_kit):
    gen = tiny_sd1_kit.generate(PROMPT, init_image=gradient_image(), strength=0.6, seed=5, steps=4, batch_size=2)
    single = tiny_sd1_kit.generate(PROMPT, init_image=gradient_image(), strength=0.6, seed=6, steps=4)
    assert len(gen.images) == 2
    assert torch.allclose(gen.latents.tensor[1], single.latents.tensor[0], atol=1e-4)


def test_matches_diffusers_img2img_pipeline(tiny_sd1_folder, tiny_sd1_kit):
    """Same noise: diffusers draws it from ``generator`` with the shape [1, 4, 8, 8], which is our seeded draw
    for one image. Same init latents: given a 4-channel tensor as ``image``, diffusers uses it as the init
    latents (it would otherwise *sample* the VAE posterior, while sdkit uses its mean)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
        str(tiny_sd1_folder), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    steps, seed, strength = 12, 4376845645, 0.6
    pipe.scheduler.set_timesteps(steps)
    sigmas = pipe.scheduler.sigmas.clone().float()
    kit = tiny_sd1_kit
    init = Image.from_pil(gradient_image())
    z = kit.vae.encode(init).tensor
    with torch.no_grad():
        theirs = pipe(
            PROMPT,
            negative_prompt="blurry",
            image=z.clone(),
            strength=strength,
            num_inference_steps=steps,
            guidance_scale=7.5,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
        ).images
    cond, uncond = kit.prompts.encode_pair(PROMPT, "blurry")
    latents = img2img(
        kit.denoiser,
        kit.vae,
        init,
        cond,
        uncond,
        sigmas=sigmas,
        strength=strength,
        strength_mode="diffusers",
        seed=seed,
        cfg_scale=7.5,
    )
    ours = kit.vae.decode(latents).tensor
    diff = (ours - theirs).abs().max().item()
    assert diff <= 1e-4, f"max abs difference {diff:.3g} > 1e-4"
    assert (ours - kit.vae.decode(kit.vae.encode(init)).tensor).abs().max() > 1e-3  # the steps did something


def test_infotext_records_strength_and_reads_back(tiny_sd1_kit, tmp_path):
    gen = tiny_sd1_kit.generate(PROMPT, init_image=gradient_image(), strength=0.35, seed=9, steps=4)
    assert "Denoising strength: 0.35" in gen.infotext
    gen.save(str(tmp_path / "a.png"))
    params = metadata.read(tmp_path / "a.png")
    assert params["strength"] == 0.35
    with pytest.raises(ValueError, match="needs an init_image"):
        tiny_sd1_kit.generate(**params)
    again = tiny_sd1_kit.generate(init_image=gradient_image(), **params)
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(gen.images[0]))


def test_bad_conditioning_inputs_raise(tiny_sd1_kit):
    with pytest.raises(ValueError, match="not a multiple of 8"):
        tiny_sd1_kit.generate(PROMPT, init_image=gradient_image(60, 64), steps=2)
    with pytest.raises(ValueError, match=r"strength must be in \[0, 1\]"):
        tiny_sd1_kit.generate(PROMPT, init_image=gradient_image(), strength=1.5, steps=2)
    with pytest.raises(ValueError, match="mask needs an init_image"):
        tiny_sd1_kit.generate(PROMPT, mask=np.ones((64, 64), bool), steps=2)
    # an explicit size resizes the init image to it
    gen = tiny_sd1_kit.generate(PROMPT, init_image=gradient_image(60, 64), width=64, height=56, steps=2, seed=1)
    assert gen.images[0].size == (64, 56)


# ------------------------------------------------------------------------------------------ conversions
def test_rgba_is_composited_over_white():
    a = np.zeros((8, 8, 4), np.uint8)
    a[..., 0] = 255  # red ...
    a[:4, ..., 3] = 255  # ... opaque in the top half, transparent below
    img = to_image(PILImage.fromarray(a, "RGBA")).tensor[0]
    assert torch.equal(img[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(img[:, 7, 0], torch.tensor([1.0, 1.0, 1.0]))
    assert torch.equal(as_image(a).tensor, img[None])  # the numpy path agrees with the PIL path


def test_palette_image_reads_its_colours():
    p = PILImage.new("P", (8, 8))
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    p.putpixel((3, 2), 1)
    img = to_image(p).tensor[0]
    assert torch.allclose(img[:, 2, 3] * 255, torch.tensor([10.0, 200.0, 30.0]))
    assert torch.equal(img[:, 0, 0], torch.zeros(3))


def test_sixteen_bit_grayscale():
    a = np.full((8, 8), 65535, np.uint16)
    a[0, 0] = 32768
    img = to_image(PILImage.fromarray(a)).tensor[0]
    assert img[0, 0, 0] == pytest.approx(32768 / 65535) and img[1, 7, 7] == 1.0
    assert torch.allclose(as_image(a).tensor[0], img)


def test_exif_rotated_jpeg_is_upright():
    a = np.zeros((8, 16, 3), np.uint8)  # stored 16 wide, 8 high, white block at the stored top-left
    a[:4, :4] = 255
    stored = PILImage.fromarray(a)
    exif = stored.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=100, exif=exif.tobytes())
    img = to_image(PILImage.open(io.BytesIO(buf.getvalue())))
    assert img.size == (8, 16)  # displayed upright: 8 wide, 16 high
    t = img.tensor[0].mean(0)
    assert t[:4, 4:].mean() > 0.9 and t[:4, :4].mean() < 0.1  # the block is now at the top-right


def test_tensor_and_batch_inputs():
    t = torch.rand(3, 16, 24)
    assert torch.equal(as_image(t).tensor[0], t)
    assert as_image([t, t]).tensor.shape == (2, 3, 16, 24)
    with pytest.raises(ValueError, match="channels-first"):
        as_image(torch.rand(16, 24, 5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        as_image(torch.rand(3, 8, 8) * 2)


def test_size_policies_never_misread():
    im = gradient_image(60, 44)
    with pytest.raises(ValueError, match="60x44 is not a multiple of 8"):
        to_image(im)
    assert InitImage(size_policy="resize")(im).size == (64, 48)
    cropped = InitImage(size_policy="crop")(im)
    assert cropped.size == (56, 40)
    original = as_image(im).tensor
    assert torch.equal(cropped.tensor, original[:, :, 2:42, 2:58])  # centre crop, no resampling
    assert to_image(im, size=(32, 32), size_policy="crop").size == (32, 32)
    with pytest.raises(ValueError, match="differs from the requested"):
        to_image(gradient_image(), size=(32, 32))
