"""The typed latent-tensor protocol: mismatched pieces fail at once, naming both sides."""

from __future__ import annotations

import pytest
import torch

from sdkit.image import Image
from sdkit.latents import Latents, LatentSpace

SD = LatentSpace("sd", 4, 8, 0.18215)
SDXL = LatentSpace("sdxl", 4, 8, 0.13025)


def test_pixels_where_latents_belong():
    with pytest.raises(ValueError, match="pixels where latents belong"):
        Latents(torch.zeros(1, 3, 64, 64), SD)


def test_latents_where_pixels_belong():
    with pytest.raises(ValueError, match="latents where pixels belong"):
        Image(torch.zeros(1, 4, 8, 8))


def test_wrong_space_names_both_sides(tiny_sd1_kit):
    sdxl_latents = Latents(torch.zeros(1, 4, 8, 8), SDXL)
    with pytest.raises(TypeError) as info:
        tiny_sd1_kit.vae.decode(sdxl_latents)
    assert "sdxl" in str(info.value) and "sd (" in str(info.value)


def test_wrong_channel_count_for_unet(tiny_sd1_kit):
    with pytest.raises(ValueError, match="expects 4 input channels, got a tensor with 3"):
        tiny_sd1_kit.denoiser.model(torch.zeros(1, 3, 8, 8), torch.zeros(1), tiny_sd1_kit.prompts.encode("a"))


def test_vae_owns_the_scale(tiny_sd1_kit):
    image = Image(torch.rand(1, 3, 64, 64))
    latents = tiny_sd1_kit.vae.encode(image)
    raw = tiny_sd1_kit.vae.model.encode(image.to_signed()).latent_dist.mean
    assert torch.allclose(latents.tensor, raw * 0.18215, atol=1e-6)
    assert latents.space == tiny_sd1_kit.vae.space and latents.pixel_size == (64, 64)
    assert tiny_sd1_kit.vae.decode(latents).size == (64, 64)


def test_previews_render():
    latents = Latents(torch.randn(2, 4, 8, 8), SD)
    assert latents.preview().shape == (2, 3, 8, 8)
    assert latents._repr_png_()[:4] == b"\x89PNG"
    assert Image(torch.rand(1, 3, 16, 16))._repr_png_()[:4] == b"\x89PNG"


def test_image_modes_convert_to_rgb():
    from PIL import Image as PIL

    rgba = PIL.new("RGBA", (16, 8), (255, 0, 0, 0))  # fully transparent red over white -> white
    assert Image.from_pil(rgba).tensor.min().item() == 1.0
    gray16 = PIL.new("I;16", (8, 8), 65535)
    assert Image.from_pil(gray16).tensor.shape == (1, 3, 8, 8) and Image.from_pil(gray16).tensor.max() == 1.0
    pal = PIL.new("P", (8, 8), 0)
    assert Image.from_pil(pal).size == (8, 8)
