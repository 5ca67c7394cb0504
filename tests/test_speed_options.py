"""Speed options change speed, not images: bf16, channels-last, torch.compile and the diffusers slicing switches,
each checked against the float32 default on the embedded model (CPU). Tolerances are set from measured values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import sdkit

PROMPT = "a large red circle on the left, yellow background"


def _generate(kit: Any, seed: int = 3, batch_size: int = 2) -> Any:
    return kit.generate(PROMPT, seed=seed, batch_size=batch_size)


def _pixels(gen: Any) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.float32) for im in gen.images])


@pytest.fixture(scope="module")
def reference() -> Any:
    """The float32 default: two images (seeds 3 and 4)."""
    return _generate(sdkit.load("shapes"))


def test_bf16_on_cpu_is_finite_and_close_to_fp32(reference):
    kit = sdkit.load("shapes")
    assert kit.to(dtype=torch.bfloat16) is kit
    assert kit.dtype == torch.bfloat16
    assert all(next(m.parameters()).dtype == torch.bfloat16 for m in kit.modules().values())
    gen = _generate(kit)
    assert gen.latents.tensor.dtype == torch.bfloat16
    assert torch.isfinite(gen.latents.tensor.float()).all()
    # measured on seeds 3, 11, 12: latents differ by at most 0.12 (|x| up to 2.3), pixels by 0.27-0.41/255 on average
    assert (gen.latents.tensor.float() - reference.latents.tensor).abs().max() < 0.5
    assert np.abs(_pixels(gen) - _pixels(reference)).mean() < 2.0


def test_to_moves_every_model_and_drops_cached_prompts():
    kit = sdkit.load("shapes")
    assert {"unet", "vae", "text_encoder"} <= set(kit.modules())
    kit.prompts.encode_pair(PROMPT, "")
    assert kit.prompts._cache
    kit.to("cpu", torch.float32)  # nothing changes: the cache stays
    assert kit.prompts._cache
    kit.to(dtype=torch.float64)
    assert not kit.prompts._cache
    assert all(next(m.parameters()).dtype == torch.float64 for m in kit.modules().values())
    with pytest.raises(TypeError, match="floating point"):
        kit.to(dtype=torch.int8)


def test_channels_last_gives_the_same_image(reference):
    kit = sdkit.load("shapes").channels_last()
    assert kit.denoiser.model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    gen = _generate(kit)
    # measured: 8.6e-6 on latents of magnitude ~2 (oneDNN picks other conv kernels for NHWC)
    assert (gen.latents.tensor - reference.latents.tensor).abs().max() < 5e-5
    assert np.abs(_pixels(gen) - _pixels(reference)).max() <= 1
    kit.channels_last(False)
    assert kit.denoiser.model.unet.conv_in.weight.is_contiguous()


def test_compile_runs_the_same_unet(reference):
    """``Kit.compile`` goes through torch.compile's graph capture; the "eager" backend keeps the test fast and
    the arithmetic identical (the default inductor backend is timed by bench/gpu_benchmark.py)."""
    kit = sdkit.load("shapes").compile(backend="eager")
    gen = _generate(kit)
    assert torch.equal(gen.latents.tensor, reference.latents.tensor)


def test_vae_and_attention_slicing_pass_through(reference):
    kit = sdkit.load("shapes")
    kit.vae.model.enable_slicing()  # decode one image at a time
    kit.denoiser.model.unet.set_attention_slice(1)  # attention one head slice at a time
    gen = _generate(kit)
    assert (gen.latents.tensor - reference.latents.tensor).abs().max() < 5e-5  # measured 3.6e-6
    assert np.abs(_pixels(gen) - _pixels(reference)).max() <= 1
