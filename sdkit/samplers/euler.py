"""Euler, Euler ancestral and Heun: the samplers of Karras et al. 2022 ("Elucidating the Design Space of
Diffusion-Based Generative Models"), Algorithm 2, in sigma space.

Each is a generator: one ``Step`` per interval of ``sigmas``, no state outside local variables.
"""

from __future__ import annotations

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


def _churn(
    x: Tensor,
    sigmas: Tensor,
    i: int,
    sigma: float,
    gamma: float,
    s_noise: float,
    noise: NoiseSampler,
) -> tuple[Tensor, float]:
    """Algorithm 2, lines 4-6: raise the noise level from sigma to ``sigma_hat = sigma (1 + gamma)`` by
    adding fresh noise of std ``sqrt(sigma_hat^2 - sigma^2)``."""
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        eps = noise(sigma_arg(sigmas, i), sigma_like(sigmas, sigma_hat)) * s_noise
        x = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
    return x, sigma_hat


def euler(
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
    """First-order Euler steps of the probability-flow ODE ``dx/dsigma = (x - D(x; sigma)) / sigma``
    (Algorithm 2 without the correction). ``s_churn > 0`` adds Karras' stochastic churn and then needs
    ``generator=`` or ``noise_sampler=``."""
    sig = read_sigmas(sigmas)
    noise = lazy_noise(x, noise_sampler, generator, "euler (s_churn > 0)")
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        gamma = churn_gamma(s_churn, len(sig) - 1, sigma, s_tmin, s_tmax)
        x_hat, sigma_hat = _churn(x, sigmas, i, sigma, gamma, s_noise, noise)
        denoised = denoise(denoiser, x_hat, sigma_hat)
        d = to_d(x_hat, sigma_hat, denoised)
        x_next = x_hat + d * (sigma_next - sigma_hat)  # Algorithm 2, line 8
        yield Step(i, sigma, sigma_next, x, denoised, x_next)
        x = x_next


def euler_ancestral(
    denoiser: Denoiser,
    x: Float[Tensor, "b c h w"],
    sigmas: Float[Tensor, " n"],
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    generator: torch.Generator | int | None = None,
) -> Iterator[Step]:
    """Euler step down to ``sigma_down``, then fresh noise of std ``sigma_up`` back up to ``sigma_next``
    (the DDPM-style ancestral split, see ``ancestral_step``). Needs ``generator=`` or ``noise_sampler=``."""
    sig = read_sigmas(sigmas)
    noise = noise_source(x, noise_sampler, generator, "euler_ancestral") if eta else None
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(denoiser, x, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        x_next = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
        if sigma_next > 0 and sigma_up > 0 and noise is not None:
            x_next = x_next + noise(sigma_arg(sigmas, i), sigma_arg(sigmas, i + 1)) * s_noise * sigma_up
        yield Step(i, sigma, sigma_next, x, denoised, x_next)
        x = x_next


def heun(
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
    """Heun's second-order method (Algorithm 2, lines 7-11): an Euler predictor, then the trapezoidal
    average of the slopes at both ends. The last step to sigma = 0 is a plain Euler step (the slope at
    sigma 0 is undefined), so n steps cost 2n - 1 denoiser calls."""
    sig = read_sigmas(sigmas)
    noise = lazy_noise(x, noise_sampler, generator, "heun (s_churn > 0)")
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        gamma = churn_gamma(s_churn, len(sig) - 1, sigma, s_tmin, s_tmax)
        x_hat, sigma_hat = _churn(x, sigmas, i, sigma, gamma, s_noise, noise)
        denoised = denoise(denoiser, x_hat, sigma_hat)
        d = to_d(x_hat, sigma_hat, denoised)
        dt = sigma_next - sigma_hat
        x_euler = x_hat + d * dt  # line 8
        if sigma_next == 0:
            x_next = x_euler
        else:
            d_next = to_d(x_euler, sigma_next, denoise(denoiser, x_euler, sigma_next))  # line 10
            x_next = x_hat + (d + d_next) / 2 * dt  # line 11
        yield Step(i, sigma, sigma_next, x, denoised, x_next)
        x = x_next
