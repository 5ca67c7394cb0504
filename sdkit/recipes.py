"""Recipes: short, visible compositions of sdkit's objects. Copy one into a notebook cell and edit it.

Each recipe takes the objects it composes (a conditional denoiser, the latent space, encoded prompts, a
sigma schedule, a sampler) and returns latents; ``Kit.generate`` adds prompt encoding, decoding and metadata.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit import samplers
from sdkit.guidance import CFG, PartsHook
from sdkit.latents import Latents, LatentSpace
from sdkit.noise import batch_seeds, noise_sampler_for, randn
from sdkit.types import ConditionalDenoiser, Sampler, Step, TextConditioning

StepHook = Callable[[Step], None]


def txt2img(
    denoiser: ConditionalDenoiser,
    space: LatentSpace,
    cond: TextConditioning,
    uncond: TextConditioning,
    *,
    sigmas: Float[Tensor, " n1"],
    sampler: str | Sampler = "euler",
    cfg_scale: float = 7.5,
    seed: int = 0,
    width: int = 512,
    height: int = 512,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    on_step: StepHook | None = None,
    on_cfg_parts: PartsHook | None = None,
) -> Latents:
    """Text to image: pure noise at ``sigmas[0]``, denoised step by step under classifier-free guidance."""
    # 1. Starting noise: one seeded CPU generator per image, so image i of a batch equals seed + i alone.
    shape = (space.channels, height // space.factor, width // space.factor)
    x = randn(batch_seeds(seed, batch_size), shape, device=device, dtype=dtype) * sigmas[0].to(dtype)
    # 2. Guidance wraps the model: [uncond, cond] in one batch, mixed as uncond + scale * (cond - uncond).
    guided = CFG(denoiser, cond.repeat(batch_size), uncond.repeat(batch_size), cfg_scale, on_parts=on_cfg_parts)
    # 3. The sampler walks the sigmas; stochastic samplers draw their step noise from seeded generators.
    for step in samplers.steps(sampler, guided, x, sigmas.to(device), noise_sampler=noise_sampler_for(seed, x)):
        if on_step is not None:
            on_step(step)
        x = step.x_next
    return Latents(x, space)
