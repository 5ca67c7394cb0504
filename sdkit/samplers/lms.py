"""LMS: the linear multistep (Adams-Bashforth) method on the probability-flow ODE in sigma.

The slope ``d(sigma)`` is interpolated by the Lagrange polynomial through the last ``order`` slopes and
integrated exactly over the next interval:
``x_next = x + sum_j c_j d_{i-j}``, ``c_j = integral_{sigma_i}^{sigma_{i+1}} l_j(s) ds``
(Karras et al. 2022 discuss it as "LMS"; the coefficients are those of Adams-Bashforth on a non-uniform
grid). The first steps warm up with the orders their history allows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from jaxtyping import Float
from numpy.polynomial import polynomial as P
from torch import Tensor

from sdkit.samplers.base import denoise, read_sigmas, to_d
from sdkit.types import Denoiser, NoiseSampler, Step


def lms_coefficients(nodes: list[float], a: float, b: float) -> list[float]:
    """``integral_a^b l_j(s) ds`` for the Lagrange basis ``l_j`` over ``nodes`` (exact polynomial integral)."""
    coeffs = []
    for j, node_j in enumerate(nodes):
        others = [n for k, n in enumerate(nodes) if k != j]
        basis = P.polyfromroots(others) if others else np.ones(1)
        basis = basis / np.prod([node_j - n for n in others]) if others else basis
        antiderivative = P.polyint(basis)
        coeffs.append(float(P.polyval(b, antiderivative) - P.polyval(a, antiderivative)))
    return coeffs


def lms(
    denoiser: Denoiser,
    x: Float[Tensor, "b c h w"],
    sigmas: Float[Tensor, " n"],
    *,
    order: int = 4,
    noise_sampler: NoiseSampler | None = None,
    generator: torch.Generator | int | None = None,
) -> Iterator[Step]:
    """Linear multistep of ``order`` (1 = Euler). One denoiser call per step. Deterministic:
    ``noise_sampler``/``generator`` are accepted (so callers can pass them to any sampler) and unused."""
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"lms order must be a positive int, got {order!r}")
    sig = read_sigmas(sigmas)
    ds: list[Tensor] = []  # the last `order` slopes, newest last
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(denoiser, x, sigma)
        ds = [*ds, to_d(x, sigma, denoised)][-order:]
        nodes = [sig[i - j] for j in range(len(ds))]  # sigma_i, sigma_{i-1}, ... (newest first)
        coeffs = lms_coefficients(nodes, sigma, sigma_next)
        x_next = x + sum(c * d for c, d in zip(coeffs, reversed(ds), strict=True))
        yield Step(i, sigma, sigma_next, x, denoised, x_next)
        x = x_next
