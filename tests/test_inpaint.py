"""Inpainting: the masked denoiser, masks of every kind, each "masked content" option, the exact paste-back,
and 9-channel inpainting UNets (checked against diffusers' StableDiffusionInpaintPipeline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from image_fixtures import gradient_image
from PIL import Image as PILImage

from sdkit.conditioners import Mask, as_mask, fill_masked, latent_mask, masked, paste_back, prepare_mask
from sdkit.image import Image
from sdkit.recipes import inpaint

PROMPT = "a green square"


def square_mask(size: int = 64, lo: int = 16, hi: int = 40) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[lo:hi, lo:hi] = True
    return m


def test_unmasked_pixels_are_exactly_the_original(tiny_sd1_kit):
    init = gradient_image()
    gen = tiny_sd1_kit.generate(PROMPT, init_image=init, mask=square_mask(), seed=2, steps=4)
    out, orig = np.asarray(gen.images[0]), np.asarray(init)
    keep = prepare_mask(square_mask(), blur=4.0)[0, 0].numpy() == 0  # Kit's default mask blur is 4
    assert keep.sum() == 64 * 64 - 48 * 48 and not keep[20:36, 20:36].any()
    assert np.array_equal(out[keep], orig[keep])
    assert np.abs(out[24:32, 24:32].astype(int) - orig[24:32, 24:32]).mean() > 5  # the hole was repainted
    assert "Mask blur: 4" in gen.infotext and "Denoising strength: 1" in gen.infotext


@pytest.mark.parametrize("content", ["original", "fill", "latent_noise", "latent_nothing"])
def test_every_masked_content_keeps_the_outside(tiny_sd1_kit, content):
    kit = tiny_sd1_kit
    init = Image.from_pil(gradient_image())
    mask = prepare_mask(square_mask(), grow_pixels=2, blur=1.5)
    cond, uncond = kit.prompts.encode_pair(PROMPT, "")
    out = inpaint(
        kit.denoiser, kit.vae, init, mask, cond, uncond, sigmas=torch.tensor([5.0, 2.0, 0.5, 0.0]),
        strength=0.7, content=content, seed=4, batch_size=2,
    )  # fmt: skip
    assert out.tensor.shape == (2, 3, 64, 64)
    outside = mask[0, 0] == 0
    for k in range(2):
        got, want = np.asarray(out.to_pil()[k]), np.asarray(init.to_pil()[0])
        assert np.array_equal(got[outside.numpy()], want[outside.numpy()])
    assert not torch.equal(out.tensor[0], out.tensor[1])  # seed, seed + 1


def test_masked_denoiser_holds_the_kept_region():
    known = torch.randn(1, 4, 8, 8)
    noise = torch.randn(1, 4, 8, 8)
    m = torch.zeros(1, 1, 8, 8)
    m[..., 2:5, 2:5] = 1
    seen = {}

    def model(x, sigma):
        seen["x"] = x
        return x * 0.5

    x = torch.randn(1, 4, 8, 8)
    out = masked(model, known, m, noise)(x, torch.tensor([3.0]))
    keep = m.expand_as(x) == 0
    assert torch.equal(seen["x"][keep], (known + noise * 3.0)[keep])  # the model sees the noised original
    assert torch.equal(seen["x"][~keep], x[~keep])
    assert torch.equal(out[keep], known[keep]) and torch.equal(out[~keep], x[~keep] * 0.5)


def test_mask_conversions():
    m = square_mask()
    from_bool = as_mask(m)
    assert from_bool.shape == (1, 1, 64, 64) and from_bool.sum() == 24 * 24
    assert torch.equal(as_mask(PILImage.fromarray(m.astype(np.uint8) * 255)), from_bool)
    assert torch.equal(as_mask(torch.from_numpy(m)), from_bool)
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = m * 255  # white strokes on a transparent layer
    assert torch.equal(as_mask(PILImage.fromarray(rgba, "RGBA")), from_bool)
    assert torch.equal(prepare_mask(m, invert=True), 1 - from_bool)
    grown = prepare_mask(m, grow_pixels=3)
    assert grown.sum() == 30 * 30 and grown[0, 0, 13, 13] == 1 and grown[0, 0, 12, 12] == 0
    blurred = prepare_mask(m, blur=2.0)
    assert blurred[0, 0, 0:9, :].abs().sum() == 0 and blurred[0, 0, 10, 28] > 0  # reaches 3 sigma = 6 px
    assert blurred[0, 0, 15, 28] + blurred[0, 0, 16, 28] == pytest.approx(1.0, abs=1e-5)  # symmetric about the edge
    with pytest.raises(ValueError, match="differs from the image"):
        prepare_mask(m, size=(32, 32))
    assert latent_mask(from_bool, 8)[0, 0].sum() == 9  # cells (2..4, 2..4): 16..40 px


def test_fill_paints_the_hole_from_its_surroundings():
    a = np.zeros((32, 32, 3), np.float32)
    a[:, :16] = (1.0, 0.0, 0.0)  # red left half, blue right half
    a[:, 16:] = (0.0, 0.0, 1.0)
    img = Image(torch.from_numpy(a).permute(2, 0, 1)[None])
    m = torch.zeros(1, 1, 32, 32)
    m[..., 8:24, 4:12] = 1  # a hole in the red half
    filled = fill_masked(img, m).tensor[0]
    assert torch.equal(filled[:, m[0, 0] == 0], img.tensor[0][:, m[0, 0] == 0])
    assert filled[0, 16, 5] > 0.8 and filled[2, 16, 5] < 0.2  # red, from the red around it


def test_paste_back_is_exact_outside_and_blends_inside():
    a, b = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    m = torch.zeros(1, 1, 8, 8)
    m[..., 4:, :] = 0.25
    out = paste_back(Image(a), Image(b), m).tensor
    assert torch.equal(out[..., :4, :], a[..., :4, :])
    assert torch.allclose(out[..., 4:, :], 0.75 * a[..., 4:, :] + 0.25 * b[..., 4:, :])


def test_mask_spec_options_reach_the_recipe(tiny_sd1_kit):
    init = gradient_image()
    spec = Mask(square_mask(), blur=0, grow=4, content="latent_noise")
    gen = tiny_sd1_kit.generate(PROMPT, init_image=init, mask=spec, seed=2, steps=3, strength=0.9)
    out, orig = np.asarray(gen.images[0]), np.asarray(init)
    keep = ~prepare_mask(square_mask(), grow_pixels=4)[0, 0].bool().numpy()
    assert np.array_equal(out[keep], orig[keep]) and not np.array_equal(out[~keep], orig[~keep])
    assert "Mask blur: 0" in gen.infotext and "Denoising strength: 0.9" in gen.infotext


def test_nine_channel_unet_matches_diffusers_inpaint_pipeline():
    """An inpainting UNet (4 latent + 1 mask + 4 masked-image channels) through sdkit's ``inpaint`` and through
    diffusers' pipeline: same noise (``latents=``), same masked-image latents (sdkit's VAE mean, passed in, since
    diffusers would sample the posterior), a mask aligned to the 8-pixel latent grid, strength 1."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionInpaintPipeline

    from sdkit.conditioners.masks import masked_image
    from sdkit.kit import Kit
    from sdkit.noise import randn
    from sdkit.testing import tiny_components, tiny_unet

    parts = tiny_components("sd1")
    parts["unet"] = tiny_unet("sd1", seed=3, in_channels=9).eval()
    kit = Kit.from_components(parts, family="sd1", name="tiny-inpaint")
    pipe = StableDiffusionInpaintPipeline(
        **{k: parts[k] for k in ("unet", "vae", "text_encoder", "tokenizer")},
        scheduler=EulerDiscreteScheduler.from_config(parts["scheduler"].config, timestep_spacing="linspace"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    steps, seed = 4, 123
    pipe.scheduler.set_timesteps(steps)
    sigmas = pipe.scheduler.sigmas.clone().float()
    init = Image.from_pil(gradient_image())
    mask = as_mask(square_mask())
    hole = kit.vae.encode(masked_image(init, mask)).tensor
    with torch.no_grad():
        theirs = pipe(
            PROMPT,
            image=init.tensor * 2 - 1,
            mask_image=mask,
            masked_image_latents=hole,
            latents=randn([seed], (4, 8, 8)),
            height=64,
            width=64,
            strength=1.0,
            num_inference_steps=steps,
            guidance_scale=7.5,
            output_type="pt",
        ).images
    cond, uncond = kit.prompts.encode_pair(PROMPT, "")
    ours = inpaint(kit.denoiser, kit.vae, init, mask, cond, uncond, sigmas=sigmas, seed=seed, cfg_scale=7.5).tensor
    inside = mask[0, 0].bool()
    diff = (ours[..., inside] - theirs[..., inside]).abs().max().item()
    assert diff <= 1e-4, f"max abs difference inside the mask {diff:.3g} > 1e-4"
    assert torch.equal(ours[..., ~inside], init.tensor[..., ~inside])  # and our paste-back outside
