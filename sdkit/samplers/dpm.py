"""DPM2 and DPM2 ancestral: Karras-style samplers with a DPM-Solver-2 midpoint step.

DPM-Solver-2 (Lu et al. 2022, "DPM-Solver", Algorithm 4 with r1 = 1/2) evaluates the slope at the
midpoint in log-sigma, ``sigma_mid = sqrt(sigma * sigma_next)``, and takes the whole step with it. Written
in Karras' sigma-space ODE (k-diffusion's ``sample_dpm_2``), with Algorithm 2's optional churn.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit.samplers.base import (
    ancestral_step,
    churn_gamma,
    denoise,
    lazy_noise,
    noise_source,
    read_sigmas,
    sigma_arg,
    sigma_like,
    to_d,
)
from sdkit.types import Denoiser, NoiseSampler, Step


def _midpoint_step(denoiser: Denoiser, x: Tensor, sigma: float, d: Tensor, sigma_to: float) -> Tensor:
    """One DPM-Solver-2 step ``sigma -> sigma_to`` given the slope ``d`` at ``sigma`` (sigma_to > 0)."""
    sigma_mid = math.exp(0.5 * (math.log(sigma) + math.log(sigma_to)))  # midpoint in log sigma
    x_mid = x + d * (sigma_mid - sigma)
    d_mid = to_d(x_mid, sigma_mid, denoise(denoiser, x_mid, sigma_mid))
    return x + d_mid * (sigma_to - sigma)


def dpm_2(
    denoiser: Denoiser,
    x: Float[Tensor, "b c h w"],
    sigmas: Float[Tensor, " n"],
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    generator: torch.Generator | int | None = None,
) -> Iterator[Step]:
    """Second-order steps through the log-sigma midpoint; the last step to sigma 0 is Euler (log 0 is
    undefined). Two denoiser calls per step except the last. ``s_churn`` as in ``euler``."""
    sig = read_sigmas(sigmas)
    noise = lazy_noise(x, noise_sampler, generator, "dpm_2 (s_churn > 0)")
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        gamma = churn_gamma(s_churn, len(sig) - 1, sigma, s_tmin, s_tmax)
        sigma_hat = sigma * (gamma + 1)
        x_hat = x
        if gamma > 0:  # Karras et al. 2022, Algorithm 2, lines 5-6
            eps = noise(sigma_arg(sigmas, i), sigma_like(sigmas, sigma_hat)) * s_noise
            x_hat = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
        denoised = denoise(denoiser, x_hat, sigma_hat)
        d = to_d(x_hat, sigma_hat, denoised)
        if sigma_next == 0:
            x_next = x_hat + d * (sigma_next - sigma_hat)
        else:
            x_next = _midpoint_step(denoiser, x_hat, sigma_hat, d, sigma_next)
        yield Step(i, sigma, sigma_next, x, denoised, x_next)
        x = x_next


def dpm_2_ancestral(
    denoiser: Denoiser,
    x: Float[Tensor, "b c h w"],
    sigmas: Float[Tensor, " n"],
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    generator: torch.Generator | int | None = None,
) -> Iterator[Step]:
    """DPM2 down to ``sigma_down``, then noise of std ``sigma_up`` (see ``base.ancestral_step``).

    Unlike k-diffusion, noise is added whenever ``sigma_next > 0``, also when ``eta > 1`` makes
    ``sigma_down`` 0 (k-diffusion skips it there); for ``eta <= 1`` the two agree.
    """
    sig = read_sigmas(sigmas)
    noise = noise_source(x, noise_sampler, generator, "dpm_2_ancestral") if eta else None
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(denoiser, x, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        d = to_d(x, sigma, denoised)
        if sigma_down == 0:
            x_next = x + d * (sigma_down - sigma)
        else:
            x_next = _midpoint_step(denoiser, x, sigma, d, sigma_down)
        if sigma_next > 0 and sigma_up > 0 and noise is not None:
            x_next = x_next + noise(sigma_arg(sigmas, i), sigma_arg(sigmas, i + 1)) * s_noise * sigma_up
        yield Step(i, sigma, sigma_next, x, denoised, x_next)
        x = x_next
