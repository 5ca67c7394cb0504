"""Stochastic DPM-Solver++ samplers: DPM++ SDE, DPM++ 2M SDE and DPM++ 3M SDE.

They discretise the reverse SDE in ``lambda = -log sigma`` with exponential integrators (Lu et al. 2022,
"DPM-Solver++", section 5 and appendix: the SDE variant of the data-prediction solver; Gonzalez et al. 2023,
"SEEDS", for the exponential-integrator SDE steps). With ``eta`` scaling the noise, one step of length
``h`` keeps ``exp(-h (1 + eta))`` of the old x, moves the rest toward the data estimate, and adds noise of
std ``sigma_next * sqrt(1 - exp(-2 eta h))`` so the marginal stays at ``sigma_next``.

k-diffusion (and A1111, ComfyUI) draw their noise from a Brownian tree (``torchsde``) so that the same seed
gives similar images at different step counts. ``Kit.generate`` and the recipes do the same, with A1111's
per-image seeding (``sdkit.brownian``, through ``ImageNoise.for_sampler``); called directly, these samplers take
any ``noise_sampler=`` (e.g. ``sdkit.brownian.BrownianNoise``), and with ``generator=`` draw independent per-step
noise (``sdkit.noise``), which has the right distribution but does not keep images stable across step counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit.samplers.base import ancestral_step, denoise, noise_source, read_sigmas, sigma_arg
from sdkit.types import Denoiser, NoiseSampler, Step


def tree_times(sigmas: Tensor, i: int, r: float) -> tuple[Tensor, Tensor, Tensor]:
    """Where a DPM++ SDE step asks its noise sampler for noise: ``sigma``, the intermediate point and
    ``sigma_next``, each recomputed as ``exp(-lambda)`` from ``lambda = -log sigma`` in the schedule's dtype, as
    k-diffusion's ``sample_dpmpp_sde`` (and so A1111 and ComfyUI) computes them. They differ from the sigmas in the
    last bits, and a Brownian tree answers slightly different times with slightly different noise: querying at the
    same times keeps the noise identical to theirs."""
    lam, lam_next = -sigma_arg(sigmas, i).log(), -sigma_arg(sigmas, i + 1).log()
    lam_mid = lam + (lam_next - lam) * r
    return (-lam).exp(), (-lam_mid).exp(), (-lam_next).exp()


def dpmpp_sde(
    denoiser: Denoiser,
    x: Float[Tensor, "b c h w"],
    sigmas: Float[Tensor, " n"],
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 0.5,
    noise_sampler: NoiseSampler | None = None,
    generator: torch.Generator | int | None = None,
) -> Iterator[Step]:
    """DPM-Solver++ SDE: a two-stage (2S-style) step with ancestral noise in each stage; the
    intermediate point sits at ``lambda + r h``. Two denoiser calls per step, Euler on the last one."""
    if not 0 < r <= 1:
        raise ValueError(f"dpmpp_sde: r must be in (0, 1], got {r}")
    sig = read_sigmas(sigmas)
    noise = noise_source(x, noise_sampler, generator, "dpmpp_sde") if eta else None

    def first_order(x: Tensor, sigma: float, sigma_to: float, estimate: Tensor) -> Tensor:
        # DPM-Solver++ first-order step sigma -> sigma_to; sigma_to = 0 (eta > 1) is its limit, the estimate
        if sigma_to == 0:
            return estimate
        return (sigma_to / sigma) * x - math.expm1(math.log(sigma_to) - math.log(sigma)) * estimate

    def add_noise(x: Tensor, sigma_from: Tensor, sigma_to: Tensor, sigma_up: float) -> Tensor:
        if sigma_up > 0 and noise is not None:
            return x + noise(sigma_from, sigma_to) * s_noise * sigma_up
        return x

    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(denoiser, x, sigma)
        if sigma_next == 0:
            x_next = denoised  # Euler to sigma 0
        else:
            at_sigma, at_mid, at_next = tree_times(sigmas, i, r)
            lam = -math.log(sigma)
            h = -math.log(sigma_next) - lam
            sigma_s = math.exp(-(lam + r * h))
            fac = 1 / (2 * r)
            # stage 1: ancestral first-order step sigma -> sigma_s
            sd, su = ancestral_step(sigma, sigma_s, eta)
            x_s = first_order(x, sigma, sd, denoised)
            x_s = add_noise(x_s, at_sigma, at_mid, su)
            denoised_s = denoise(denoiser, x_s, sigma_s)
            # stage 2: the full step with the two estimates combined (second order in h)
            sd, su = ancestral_step(sigma, sigma_next, eta)
            estimate = (1 - fac) * denoised + fac * denoised_s
            x_next = first_order(x, sigma, sd, estimate)
            x_next = add_noise(x_next, at_sigma, at_next, su)
        yield Step(i, sigma, sigma_next, x, denoised, x_next)
        x = x_next


def dpmpp_2m_sde(
    denoiser: Denoiser,
    x: Float[Tensor, "b c h w"],
    sigmas: Float[Tensor, " n"],
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    solver_type: Literal["midpoint", "heun"] = "midpoint",
    noise_sampler: NoiseSampler | None = None,
    generator: torch.Generator | int | None = None,
) -> Iterator[Step]:
    """DPM-Solver++(2M) SDE: multistep, one call per step. The second-order correction uses the slope
    ``(denoised - denoised_last) / r`` with ``r = h_last / h``, weighted by ``phi(h) / 2`` ("midpoint") or
    by ``phi_2`` of the exponential integrator ("heun"). The last step returns ``denoised``."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"dpmpp_2m_sde: solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    sig = read_sigmas(sigmas)
    noise = noise_source(x, noise_sampler, generator, "dpmpp_2m_sde") if eta else None
    old_denoised: Tensor | None = None
    h_last = 0.0
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(denoiser, x, sigma)
        h = 0.0
        if sigma_next == 0:
            x_next = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            eta_h = eta * h
            phi = -math.expm1(-h - eta_h)  # 1 - exp(-(1 + eta) h)
            x_next = (sigma_next / sigma) * math.exp(-eta_h) * x + phi * denoised
            if old_denoised is not None:
                slope = (denoised - old_denoised) * (h / h_last)  # (denoised - old) / r
                if solver_type == "heun":
                    x_next = x_next + (phi / (-h - eta_h) + 1) * slope
                else:
                    x_next = x_next + 0.5 * phi * slope
            if eta and noise is not None:
                std = sigma_next * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise
                x_next = x_next + noise(sigma_arg(sigmas, i), sigma_arg(sigmas, i + 1)) * std
        yield Step(i, sigma, sigma_next, x, denoised, x_next)
        old_denoised, h_last = denoised, h
        x = x_next


def dpmpp_2m_sde_heun(
    denoiser: Denoiser, x: Float[Tensor, "b c h w"], sigmas: Float[Tensor, " n"], **options: Any
) -> Iterator[Step]:
    """``dpmpp_2m_sde`` with ``solver_type="heun"`` under its own name, as A1111 ("DPM++ 2M SDE Heun") and
    ComfyUI (``dpmpp_2m_sde_heun``) list it; ``options`` are those of ``dpmpp_2m_sde`` (eta, s_noise,
    noise_sampler, generator)."""
    return dpmpp_2m_sde(denoiser, x, sigmas, solver_type="heun", **options)


def dpmpp_3m_sde(
    denoiser: Denoiser,
    x: Float[Tensor, "b c h w"],
    sigmas: Float[Tensor, " n"],
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    generator: torch.Generator | int | None = None,
) -> Iterator[Step]:
    """DPM-Solver++(3M) SDE: third-order multistep from the last three estimates. The first and second
    differences of ``denoised`` over the non-uniform lambda grid enter through the exponential
    integrator's ``phi_2(h) = expm1(-h)/h + 1`` and ``phi_3 = phi_2 / h - 1/2`` (with h scaled by 1 + eta)."""
    sig = read_sigmas(sigmas)
    noise = noise_source(x, noise_sampler, generator, "dpmpp_3m_sde") if eta else None
    denoised_1: Tensor | None = None  # the previous estimate
    denoised_2: Tensor | None = None  # the one before
    h_1, h_2 = 0.0, 0.0
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(denoiser, x, sigma)
        h = 0.0
        if sigma_next == 0:
            x_next = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            h_eta = h * (eta + 1)
            x_next = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if denoised_2 is not None and denoised_1 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x_next = x_next + phi_2 * d1 - phi_3 * d2
            elif denoised_1 is not None:
                x_next = x_next + phi_2 * (denoised - denoised_1) / (h_1 / h)
            if eta and noise is not None:
                std = sigma_next * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise
                x_next = x_next + noise(sigma_arg(sigmas, i), sigma_arg(sigmas, i + 1)) * std
        yield Step(i, sigma, sigma_next, x, denoised, x_next)
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
        x = x_next


# A1111's "brownian_noise" sampler option: runs through Kit and the recipes give these a Brownian tree per image
# (sdkit.brownian.uses_brownian_noise reads the mark; sdkit.brownian.BROWNIAN lists the same names).
for _sampler in (dpmpp_sde, dpmpp_2m_sde, dpmpp_2m_sde_heun, dpmpp_3m_sde):
    setattr(_sampler, "brownian_noise", True)  # noqa: B010 (a plain assignment trips mypy on a function)
