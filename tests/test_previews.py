"""Previews: linear projection, TAESD-architecture decoder (parity with diffusers' AutoencoderTiny), VAE."""

from __future__ import annotations

import pytest
import torch

from sdkit.image import Image
from sdkit.latents import SD_RGB_FACTORS, Latents, LatentSpace
from sdkit.previews import TinyDecoder, channel_strip, channels, linear_rgb, preview

SPACE = LatentSpace("sd", scale=0.18215, rgb_factors=SD_RGB_FACTORS)


def _latents(seed: int = 0, b: int = 2) -> Latents:
    return Latents(torch.randn(b, 4, 6, 8, generator=torch.Generator().manual_seed(seed)), SPACE)


def test_linear_preview_is_the_published_projection():
    lat = _latents()
    image = preview(lat, "linear")
    assert isinstance(image, Image) and image.tensor.shape == (2, 3, 6, 8)
    # pixel (0, 0) of image 0 by hand: rgb = sum_c latent_c * factor[c], mapped from [-1, 1] to [0, 1]
    z = lat.tensor[0, :, 0, 0]
    rgb = (torch.tensor(SD_RGB_FACTORS).T @ z + 1) / 2
    assert torch.allclose(image.tensor[0, :, 0, 0], rgb.clamp(0, 1), atol=1e-6)
    up = linear_rgb(lat, upscale=True)
    assert up.shape == (2, 3, 48, 64) and torch.equal(up[:, :, ::8, ::8], image.tensor)


def test_channels_side_by_side():
    lat = _latents(b=1)
    ch = channels(lat)
    assert ch.shape == (4, 6, 8)
    assert torch.allclose(ch.amin(dim=(1, 2)), torch.zeros(4)) and torch.allclose(ch.amax(dim=(1, 2)), torch.ones(4))
    strip = channel_strip(lat)
    assert strip.tensor.shape == (1, 3, 6, 32) and torch.equal(strip.tensor[0, 0, :, 8:16], ch[1])


def test_preview_dispatch_and_errors(tiny_sd1_kit):
    lat = Latents(torch.randn(1, 4, 4, 4), tiny_sd1_kit.vae.space)
    via_vae = preview(lat, "vae", vae=tiny_sd1_kit.vae)
    assert torch.equal(via_vae.tensor, preview(lat, tiny_sd1_kit.vae).tensor)
    assert torch.equal(via_vae.tensor, tiny_sd1_kit.vae.decode(lat).tensor) and via_vae.size == (32, 32)
    assert preview(lat, lambda x: Image(torch.zeros(1, 3, 2, 2))).size == (2, 2)
    with pytest.raises(ValueError, match="needs the VAE"):
        preview(lat, "vae")
    with pytest.raises(ValueError, match="linear"):
        preview(lat, "bicubic")
    with pytest.raises(TypeError, match="Latents"):
        preview(torch.zeros(1, 4, 4, 4))


def test_tiny_decoder_matches_diffusers_autoencoder_tiny():
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    reference = AutoencoderTiny().eval()  # the published TAESD configuration, random weights
    decoder = TinyDecoder.from_state_dict(reference.state_dict(), space=SPACE)
    assert sum(p.numel() for p in decoder.parameters()) == sum(p.numel() for p in reference.decoder.parameters())
    lat = _latents(seed=1, b=1)
    with torch.no_grad():
        expected = reference.decode(lat.tensor).sample  # diffusers maps TAESD's [0, 1] output to [-1, 1]
        ours = decoder(lat.tensor)
    assert ours.shape == (1, 3, 48, 64)
    assert torch.allclose(ours, (expected + 1) / 2, atol=1e-5)
    image = preview(lat, decoder)
    assert torch.allclose(image.tensor, ((expected + 1) / 2).clamp(0, 1), atol=1e-5)


def test_tiny_decoder_state_dict_uses_the_published_keys():
    decoder = TinyDecoder()
    keys = set(decoder.state_dict())
    assert {"1.weight", "1.bias", "3.conv.0.weight", "3.conv.4.bias", "7.weight", "19.weight"} <= keys
    assert "7.bias" not in keys  # the convs after each upsampling have no bias
    clone = TinyDecoder.from_state_dict(decoder.state_dict())
    x = torch.randn(1, 4, 2, 2)
    assert torch.equal(clone(x), decoder.eval()(x))
    with pytest.raises(ValueError, match="TAESD"):
        TinyDecoder.from_state_dict({"foo": torch.zeros(1)})


def test_tiny_decoder_checks_the_latent_space():
    decoder = TinyDecoder(space=SPACE)
    xl = Latents(torch.zeros(1, 4, 2, 2), LatentSpace("sdxl", scale=0.13025))
    with pytest.raises(TypeError, match="sdxl"):
        decoder.decode(xl)
