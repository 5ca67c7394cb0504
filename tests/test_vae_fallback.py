"""The VAE: recovery from a half-precision decode overflow (reported in ``Generation.notes``), and swapping a
VAE into a loaded kit (``kit.vae = load_vae(...)``), which must decode the UNet's latent space."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import sdkit
from sdkit.latents import Latents
from sdkit.loading import load_vae
from sdkit.testing import save_tiny_model, tiny_vae
from sdkit.vae import VAE

pytestmark = pytest.mark.usefixtures("one_thread")


def _overflowing_vae() -> torch.nn.Module:
    """A tiny VAE whose decoder activations exceed float16's range (65504) but not float32's: the first conv is
    scaled by 3e4 and the decoder's GroupNorms normalise the scale away again, the way the SDXL VAE's large
    activations overflow in fp16 while its float32 output is fine."""
    model = tiny_vae(seed=3).eval()
    with torch.no_grad():
        model.decoder.conv_in.weight.mul_(3e4)
        model.decoder.conv_in.bias.mul_(3e4)
    return model


def test_fp16_overflow_is_retried_in_float32() -> None:
    half = VAE.from_diffusers(_overflowing_vae().half(), "sd1")
    latents = Latents(torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0)), half.space)
    z = (latents.tensor / half.space.scale).half()
    assert not torch.isfinite(half.model.decode(z).sample).all()  # the overflow is real
    image = half.decode(latents)
    assert "float16" in half.last_decode_note and "float32" in half.last_decode_note
    assert half.dtype == torch.float16  # the model is back in half precision after the retry
    assert torch.isfinite(image.tensor).all() and image.tensor.std() > 1e-2
    # the same (fp16-rounded) weights decoded in float32 from the start give the same pixels
    reference = VAE.from_diffusers(copy.deepcopy(half.model).float(), "sd1").decode(latents)
    torch.testing.assert_close(image.tensor, reference.tensor, atol=1e-6, rtol=0)
    assert reference.tensor.shape == (1, 3, 32, 32)
    fine = VAE.from_diffusers(tiny_vae(seed=3).half(), "sd1")
    fine.decode(latents)
    assert fine.last_decode_note == ""  # no overflow, no retry, no note


def test_generation_reports_the_float32_retry(tiny_sd1_folder: Path) -> None:
    kit = sdkit.load(str(tiny_sd1_folder))
    plain = kit.generate("a cat", seed=4, steps=2, width=32, height=32)
    assert plain.notes == []
    kit.vae = VAE.from_diffusers(_overflowing_vae().half(), "sd1")
    gen = kit.generate("a cat", seed=4, steps=2, width=32, height=32)
    assert len(gen.notes) == 1 and "retried in float32" in gen.notes[0]
    assert np.isfinite(np.asarray(gen.images[0], dtype=np.float32)).all()
    assert torch.equal(gen.latents.tensor, plain.latents.tensor)  # only the decoder changed


def _save_vae(path: Path, seed: int, scale: float) -> Path:
    model = tiny_vae(seed)
    model.register_to_config(scaling_factor=scale)
    model.save_pretrained(path)
    return path


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_vae_swap_changes_only_the_decoding(tmp_path: Path, family: str) -> None:
    kit = sdkit.load(str(save_tiny_model(tmp_path / "model", family)))
    scale = 0.13025 if family == "sdxl" else 0.18215
    args = dict(seed=11, steps=2, width=64, height=64)
    before = kit.generate("a cat", **args)
    kit.vae = load_vae(str(_save_vae(tmp_path / "vae", seed=5, scale=scale)), family=family)
    after = kit.generate("a cat", **args)
    assert torch.equal(before.latents.tensor, after.latents.tensor)  # the UNet's work is the same ...
    a, b = (np.asarray(g.images[0], dtype=np.int16) for g in (before, after))
    assert np.abs(a - b).max() > 10  # ... the pixels come from the new decoder
    expected = kit.vae.decode(after.latents).to_pil()[0]
    assert np.array_equal(np.asarray(expected), np.asarray(after.images[0]))


def test_vae_of_another_latent_space_is_refused(tmp_path: Path) -> None:
    sd1_vae_folder = _save_vae(tmp_path / "sd-vae", seed=5, scale=0.18215)
    xl_vae_folder = _save_vae(tmp_path / "xl-vae", seed=5, scale=0.13025)
    xl = sdkit.load(str(save_tiny_model(tmp_path / "xl", "sdxl")))
    xl.vae = load_vae(str(sd1_vae_folder), family="sd1")
    with pytest.raises(TypeError, match=r"expects latents of sd \(4 ch.*got latents of sdxl \(4 ch"):
        xl.generate("a cat", seed=1, steps=1, width=64, height=64)
    sd1 = sdkit.load(str(save_tiny_model(tmp_path / "sd1", "sd1")))
    sd1.vae = load_vae(str(xl_vae_folder), family="sdxl")
    with pytest.raises(TypeError, match=r"expects latents of sdxl .*got latents of sd \("):
        sd1.generate("a cat", seed=1, steps=1, width=64, height=64)
