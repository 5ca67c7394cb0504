"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models"): exponential integrators written on the data prediction ``denoised``, in ``lambda = -log sigma``.

In sigma space (alpha = 1) the exact solution of the probability-flow ODE with ``denoised`` held fixed
over a step of length ``h = lambda_next - lambda`` is (eq. 9 / Algorithm 1, first-order term)
``x_next = (sigma_next / sigma) x - expm1(-h) denoised``; higher orders replace ``denoised`` by a
combination of estimates at several sigmas.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit.samplers.base import ancestral_step, denoise, noise_source, read_sigmas, sigma_arg
from sdkit.types import Denoiser, NoiseSampler, Step


def dpmpp_2s_ancestral(
    denoiser: Denoiser,
    x: Float[Tensor, "b c h w"],
    sigmas: Float[Tensor, " n"],
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    generator: torch.Generator | int | None = None,
) -> Iterator[Step]:
    """DPM-Solver++(2S) (Algorithm 1 with r = 1/2, a single-step second-order method) down to
    ``sigma_down``, then ancestral noise of std ``sigma_up``. Needs ``generator=`` or ``noise_sampler=``."""
    sig = read_sigmas(sigmas)
    noise = noise_source(x, noise_sampler, generator, "dpmpp_2s_ancestral") if eta else None
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(denoiser, x, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        if sigma_down == 0:
            x_next = denoised  # Euler to sigma 0: x + (x - denoised) / sigma * (0 - sigma)
        else:
            lam, lam_down = -math.log(sigma), -math.log(sigma_down)
            h = lam_down - lam
            sigma_s = math.exp(-(lam + h / 2))  # intermediate point at r = 1/2
            x_s = (sigma_s / sigma) * x - math.expm1(-h / 2) * denoised
            denoised_s = denoise(denoiser, x_s, sigma_s)
            x_next = (sigma_down / sigma) * x - math.expm1(-h) * denoised_s
        if sigma_next > 0 and sigma_up > 0 and noise is not None:
            x_next = x_next + noise(sigma_arg(sigmas, i), sigma_arg(sigmas, i + 1)) * s_noise * sigma_up
        yield Step(i, sigma, sigma_next, x, denoised, x_next)
        x = x_next


def dpmpp_2m(
    denoiser: Denoiser,
    x: Float[Tensor, "b c h w"],
    sigmas: Float[Tensor, " n"],
    *,
    noise_sampler: NoiseSampler | None = None,
    generator: torch.Generator | int | None = None,
) -> Iterator[Step]:
    """DPM-Solver++(2M) (Algorithm 2): second order from one denoiser call per step, using the previous
    step's ``denoised`` as history. The first step and the last step (to sigma 0, where ``h`` is
    infinite) are first order. Deterministic: ``noise_sampler``/``generator`` are accepted and unused.

    With ``r = h_last / h`` the combined estimate is
    ``D = (1 + 1/(2r)) denoised - 1/(2r) denoised_last``.
    """
    sig = read_sigmas(sigmas)
    old_denoised: Tensor | None = None
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(denoiser, x, sigma)
        if sigma_next == 0:
            x_next = denoised  # the limit h -> inf of the update below; log(0) is never taken
        else:
            h = math.log(sigma) - math.log(sigma_next)
            if old_denoised is None:
                estimate = denoised
            else:
                h_last = math.log(sig[i - 1]) - math.log(sigma)
                r = h_last / h
                estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x_next = (sigma_next / sigma) * x - math.expm1(-h) * estimate
        yield Step(i, sigma, sigma_next, x, denoised, x_next)
        old_denoised = denoised
        x = x_next
