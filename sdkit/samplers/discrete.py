"""DDIM, DDPM and LCM: the samplers written for discrete-time (variance-preserving) models, in sigma space.

A VP model sees ``x_vp = sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * eps``; sdkit's sigma-space latent is
``x = x_vp / sqrt(alpha_bar)`` with ``sigma^2 = (1 - alpha_bar) / alpha_bar``, so ``alpha_bar = 1 / (1 +
sigma^2)``. Each update below is written in its paper's alpha notation on ``x_vp`` and mapped back; which
timesteps are visited is the schedule's business (``sdkit.schedules``: "leading", "trailing",
"ddim_uniform", "lcm"), since the samplers only see sigmas.

Identities worth knowing (and tested): DDIM with eta = 0 is exactly Euler in sigma space (Karras et al.
2022, section 3 / Song et al. 2021 eq. 14), DDIM with eta is Euler ancestral with that eta, and DDPM is
DDIM with eta = 1 (the posterior of Ho et al. 2020 eq. 7).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit.samplers.base import denoise, noise_source, read_sigmas, sigma_arg
from sdkit.types import Denoiser, NoiseSampler, Step


def _alpha_bar(sigma: float) -> float:
    return 1.0 / (1.0 + sigma**2)


def ddim(
    denoiser: Denoiser,
    x: Float[Tensor, "b c h w"],
    sigmas: Float[Tensor, " n"],
    *,
    eta: float = 0.0,
    noise_sampler: NoiseSampler | None = None,
    generator: torch.Generator | int | None = None,
) -> Iterator[Step]:
    """DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models"), eq. 12:
    ``x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - s^2) eps + s z`` with
    ``s = eta sqrt((1 - a_prev) / (1 - a)) sqrt(1 - a / a_prev)`` (eq. 16). Deterministic for eta = 0;
    eta > 0 needs ``generator=`` or ``noise_sampler=``."""
    sig = read_sigmas(sigmas)
    noise = noise_source(x, noise_sampler, generator, "ddim (eta > 0)") if eta else None
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(denoiser, x, sigma)
        eps = (x - denoised) / sigma  # the model's noise estimate (same in VP and sigma space)
        a, a_prev = _alpha_bar(sigma), _alpha_bar(sigma_next)
        std = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        x_vp_next = math.sqrt(a_prev) * denoised + math.sqrt(max(1 - a_prev - std**2, 0.0)) * eps
        if std > 0 and noise is not None:
            x_vp_next = x_vp_next + std * noise(sigma_arg(sigmas, i), sigma_arg(sigmas, i + 1))
        x_next = x_vp_next / math.sqrt(a_prev)
        yield Step(i, sigma, sigma_next, x, denoised, x_next)
        x = x_next


def ddpm(
    denoiser: Denoiser,
    x: Float[Tensor, "b c h w"],
    sigmas: Float[Tensor, " n"],
    *,
    noise_sampler: NoiseSampler | None = None,
    generator: torch.Generator | int | None = None,
) -> Iterator[Step]:
    """Ancestral DDPM (Ho et al. 2020): sample the posterior ``q(x_prev | x_t, x0)`` at the model's x0
    estimate, eq. 6-7, with strided steps ``alpha_t = a / a_prev``, ``beta_t = 1 - alpha_t``:
    mean ``sqrt(a_prev) beta_t / (1 - a) x0 + sqrt(alpha_t) (1 - a_prev) / (1 - a) x_t`` and variance
    ``beta_tilde = (1 - a_prev) / (1 - a) beta_t`` ("fixed_small"). Needs ``generator=`` or ``noise_sampler=``."""
    sig = read_sigmas(sigmas)
    noise = noise_source(x, noise_sampler, generator, "ddpm")
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(denoiser, x, sigma)
        a, a_prev = _alpha_bar(sigma), _alpha_bar(sigma_next)
        alpha_t = a / a_prev
        beta_t = 1 - alpha_t
        x_vp = x * math.sqrt(a)
        mean = (math.sqrt(a_prev) * beta_t / (1 - a)) * denoised + (math.sqrt(alpha_t) * (1 - a_prev) / (1 - a)) * x_vp
        variance = (1 - a_prev) / (1 - a) * beta_t
        x_vp_next = mean
        if sigma_next > 0 and variance > 0:
            x_vp_next = mean + math.sqrt(variance) * noise(sigma_arg(sigmas, i), sigma_arg(sigmas, i + 1))
        x_next = x_vp_next / math.sqrt(a_prev)
        yield Step(i, sigma, sigma_next, x, denoised, x_next)
        x = x_next


def lcm(
    denoiser: Denoiser,
    x: Float[Tensor, "b c h w"],
    sigmas: Float[Tensor, " n"],
    *,
    noise_sampler: NoiseSampler | None = None,
    generator: torch.Generator | int | None = None,
) -> Iterator[Step]:
    """Latent Consistency Model multistep sampling (Luo et al. 2023, Algorithm 1; Song et al. 2023,
    "Consistency Models", Algorithm 1): jump to the x0 estimate, then re-noise it to the next level with
    fresh noise, ``x_next = x0 + sigma_next z`` (in VP terms ``sqrt(a_prev) x0 + sqrt(1 - a_prev) z``).

    Meant for LCM-distilled models and the "lcm" schedule. diffusers' LCMScheduler also applies the
    consistency boundary condition ``c_skip(t) x_t + c_out(t) x0`` with ``c_skip = 0.25 / ((10 t)^2 + 0.25)``;
    samplers never see timesteps, so it is omitted here: it changes x0 by less than 1e-5 relative for
    t >= 19 (the smallest timestep of the 50-step LCM grid) and by < 4e-8 at the usual 4-step timesteps.
    Needs ``generator=`` or ``noise_sampler=`` when more than one step is taken."""
    sig = read_sigmas(sigmas)
    noise = noise_source(x, noise_sampler, generator, "lcm") if len(sig) > 2 else None
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(denoiser, x, sigma)
        x_next = denoised
        if sigma_next > 0 and noise is not None:
            x_next = denoised + sigma_next * noise(sigma_arg(sigmas, i), sigma_arg(sigmas, i + 1))
        yield Step(i, sigma, sigma_next, x, denoised, x_next)
        x = x_next
