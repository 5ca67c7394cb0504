"""The noise schedule the shapes model trains on, and the small Euler sampler its training evaluates with.

The real samplers live in ``sdkit.samplers``; this one exists so that training (on a GPU machine without the rest of
sdkit's dependencies) can score its model every few steps with nothing but the model's own components.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def alphas_cumprod(n: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Tensor:
    """SD's "scaled_linear" schedule: betas linear in sqrt space; returns abar_t = prod(1 - beta)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


@torch.no_grad()
def sample(
    unet: Any,
    text: Tensor,
    uncond: Tensor,
    acp: Tensor,
    *,
    steps: int = 20,
    cfg: float = 7.5,
    seed: int = 0,
    controlnet: Any = None,
    cond: Tensor | None = None,
    latent_size: int = 8,
) -> Tensor:
    """Euler sampling with classifier-free guidance, for in-training evaluation only. Works in k-diffusion's sigma
    space: sigma_t = sqrt((1 - abar_t) / abar_t)."""
    b, device = text.shape[0], text.device
    ts = torch.linspace(len(acp) - 1, 0, steps, device=device).round().long()
    sigmas = torch.cat([((1 - acp[ts]) / acp[ts]).sqrt(), torch.zeros(1, device=device)])
    g = torch.Generator("cpu").manual_seed(seed)  # CPU noise: the same images on any device
    x = torch.randn(b, 4, latent_size, latent_size, generator=g).to(device) * sigmas[0]
    both = torch.cat([uncond, text])
    for i, t in enumerate(ts):
        x_in = torch.cat([x, x]) / (sigmas[i] ** 2 + 1).sqrt()  # c_in: undo the VP scaling the UNet expects
        extra: dict[str, Any] = {}
        if controlnet is not None:
            assert cond is not None, "a ControlNet needs its condition image"
            down, mid = controlnet(x_in, t, both, controlnet_cond=torch.cat([cond, cond]), return_dict=False)
            extra = dict(down_block_additional_residuals=down, mid_block_additional_residual=mid)
        eps_u, eps_c = unet(x_in, t, both, **extra).sample.float().chunk(2)
        eps = eps_u + cfg * (eps_c - eps_u)
        denoised = x - sigmas[i] * eps
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])  # Euler: dx/dsigma = (x - x0) / sigma
    return x
