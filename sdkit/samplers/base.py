"""What every sampler shares: reading the sigmas, calling the denoiser, the ODE derivative, the ancestral
split of a step, and where step noise comes from.

Notation (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"):
``x`` is the noisy latent at noise level ``sigma`` (variance-exploding form, ``x = x0 + sigma * eps``),
``denoised = D(x; sigma)`` the denoiser's estimate of ``x0`` and ``d = (x - denoised) / sigma`` the
derivative ``dx/dsigma`` of the probability-flow ODE (eq. 3 with sigma(t) = t; Algorithm 1, line 4).
The DPM-Solver family works in ``lambda = -log(sigma)`` (half the log-SNR, Lu et al. 2022) and steps
``h = lambda_next - lambda``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit.noise import noise_sampler_for
from sdkit.types import Denoiser, NoiseSampler


def read_sigmas(sigmas: Tensor | Sequence[float]) -> list[float]:
    """Validate a schedule handed to a sampler and return it as Python floats (double precision).

    Any 1-D tensor of finite, non-negative, strictly decreasing sigmas is accepted, including tails that
    stop before 0 (for stepping part of a run); so a 0 can only be the last entry (a step that starts at
    sigma 0 is undefined: the derivative divides by sigma). A step from a sigma to itself would divide by
    a zero step length in the multistep solvers, hence "strictly". Fewer than two sigmas means no steps.
    """
    t = torch.as_tensor(sigmas)
    if t.ndim != 1:
        raise ValueError(f"sigmas must be a 1-D tensor, got shape {tuple(t.shape)}")
    values = [float(s) for s in t.detach().cpu().double()]
    for k, s in enumerate(values):
        if not math.isfinite(s) or s < 0:
            raise ValueError(f"sigmas must be finite and >= 0, got sigmas[{k}] = {s}")
        if k and s >= values[k - 1]:
            raise ValueError(
                f"sigmas must be strictly decreasing, got sigmas[{k - 1}] = {values[k - 1]} and sigmas[{k}] = {s}"
            )
    return values


RANDOMNESS_OPTIONS = ("noise_sampler", "generator")
"""Options sdkit offers every sampler: recipes pass a seeded ``noise_sampler`` whatever the sampler is."""


def accepted_options(sampler: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` less the randomness options (``noise_sampler``, ``generator``) that ``sampler`` cannot take.

    A sampler function that declares neither them nor ``**options`` draws no noise, so it runs without them,
    as sdkit's deterministic samplers ignore them; any other option is passed unchanged (a misspelt one still
    raises ``TypeError``).
    """
    try:
        params = inspect.signature(sampler).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature: pass everything
        return options
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return options
    return {k: v for k, v in options.items() if k in params or k not in RANDOMNESS_OPTIONS}


def sigma_arg(sigmas: Tensor | Sequence[float], i: int) -> Tensor:
    """``sigmas[i]`` as a 0-d tensor, for noise samplers (a Brownian tree is queried at exact sigmas)."""
    return torch.as_tensor(sigmas)[i]


def sigma_like(sigmas: Tensor | Sequence[float], value: float) -> Tensor:
    """An intermediate sigma (midpoint, sigma_down) as a 0-d tensor with the schedule's dtype and device."""
    t = torch.as_tensor(sigmas)
    return torch.tensor(value, dtype=t.dtype if t.is_floating_point() else torch.float64, device=t.device)


def denoise(denoiser: Denoiser, x: Float[Tensor, "b c h w"], sigma: float) -> Float[Tensor, "b c h w"]:
    """Call the denoiser at one noise level, broadcast to ``sigma[b]`` (k-diffusion's model convention).

    sigma travels at least in float32, even for half-precision latents, so the timestep map stays exact.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    return denoiser(x, torch.full((x.shape[0],), sigma, dtype=dtype, device=x.device))


def to_d(x: Tensor, sigma: float, denoised: Tensor) -> Tensor:
    """dx/dsigma of the probability-flow ODE: ``(x - D(x; sigma)) / sigma`` (Karras et al. 2022, eq. 3)."""
    return (x - denoised) / sigma


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step ``sigma -> sigma_next`` into a deterministic step down to ``sigma_down`` and fresh noise
    of std ``sigma_up``, with ``sigma_down^2 + sigma_up^2 = sigma_next^2``.

    ``eta = 1`` is the DDPM posterior (Ho et al. 2020, eq. 7: ``sigma_up^2 = sigma_next^2 (sigma^2 -
    sigma_next^2) / sigma^2``, the same as DDIM's eta-noise, Song et al. 2021 eq. 16); ``eta = 0`` is
    deterministic. ``sigma_up`` is capped at ``sigma_next`` so ``sigma_down`` stays real for eta > 1.
    """
    if not eta or sigma <= 0:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * math.sqrt(max(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2, 0.0)))
    sigma_down = math.sqrt(max(sigma_next**2 - sigma_up**2, 0.0))
    return sigma_down, sigma_up


def churn_gamma(s_churn: float, n_steps: int, sigma: float, s_tmin: float, s_tmax: float) -> float:
    """Karras et al. 2022, Algorithm 2, line 5: ``gamma_i = min(S_churn / N, sqrt(2) - 1)`` inside
    ``[S_tmin, S_tmax]``, else 0. The step first raises the noise level to ``sigma_hat = sigma (1 + gamma)``."""
    if s_churn <= 0 or not s_tmin <= sigma <= s_tmax:
        return 0.0
    return min(s_churn / n_steps, 2**0.5 - 1)


def noise_source(
    x: Tensor,
    noise_sampler: NoiseSampler | None,
    generator: torch.Generator | int | None,
    sampler: str,
) -> NoiseSampler:
    """Where a stochastic sampler draws its step noise from.

    - ``noise_sampler``: any k-diffusion-style ``(sigma, sigma_next) -> noise like x`` (e.g.
      ``sdkit.noise.noise_sampler_for(seed, x)`` or k-diffusion's ``BrownianTreeNoiseSampler``);
    - ``generator=int``: ``sdkit.noise.noise_sampler_for(seed, x)``, one CPU generator per image (the same
      seed gives the same image on any device and at any batch position);
    - ``generator=torch.Generator``: draws ``randn`` of x's shape from it.

    Randomness is explicit in sdkit: with neither, this raises instead of silently using global RNG state.
    """
    if noise_sampler is not None and generator is not None:
        raise ValueError(f"{sampler}: pass noise_sampler= or generator=, not both")
    if noise_sampler is not None:
        return noise_sampler
    if isinstance(generator, torch.Generator):
        g = generator

        def from_generator(sigma: Tensor | float | None = None, sigma_next: Tensor | float | None = None) -> Tensor:
            noise = torch.randn(x.shape, generator=g, device=g.device, dtype=torch.float32)
            return noise.to(device=x.device, dtype=x.dtype)

        return from_generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return noise_sampler_for(generator, x)
    if generator is None:
        raise ValueError(
            f"{sampler} adds fresh noise at each step: pass generator=<int seed or torch.Generator> "
            "or noise_sampler=<callable (sigma, sigma_next) -> noise>"
        )
    raise TypeError(f"{sampler}: generator must be an int seed or a torch.Generator, got {type(generator).__name__}")


def lazy_noise(
    x: Tensor, noise_sampler: NoiseSampler | None, generator: torch.Generator | int | None, sampler: str
) -> NoiseSampler:
    """A noise source resolved on first use: samplers whose noise is optional (``s_churn`` of Euler/Heun)
    only require a seed when they actually draw noise."""
    resolved: list[NoiseSampler] = []

    def draw(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        if not resolved:
            resolved.append(noise_source(x, noise_sampler, generator, sampler))
        return resolved[0](sigma, sigma_next)

    return draw
