"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
Models"), data-prediction form, in sigma space.

Each step evaluates the denoiser once. That evaluation first *corrects* the point it was taken at (UniC,
using the new estimate as an extra node, Algorithm 1), then *predicts* the next point (UniP, Algorithm 2),
both in ``lambda = -log sigma`` with ``h = lambda_next - lambda``. In the VP form the updates carry
``alpha_t``; with sigma-space latents (``x = x_vp / alpha_t``) those factors cancel and leave
``x_next = (sigma_next / sigma) x - expm1(-h) D0 - B(h) sum_k rho_k D1_k``, where ``D1_k`` are scaled
differences of older estimates and the ``rho`` solve the order conditions ``R rho = b`` (eq. 8-9, with
``B(h) = -h`` for "bh1" and ``expm1(-h)`` for "bh2").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from sdkit.samplers.base import denoise, read_sigmas
from sdkit.types import Denoiser, NoiseSampler, Step


def _order_conditions(rks: list[float], hh: float, b_h: float) -> tuple[np.ndarray, np.ndarray]:
    """``R[j, k] = rks[k]^j`` and ``b[j] = (j+1)! phi_{j+2}(hh) / B(h)`` for the UniPC order conditions,
    with ``phi_k`` built by the recursion ``phi_{k+1} = (phi_k - 1/k!) / hh`` from ``phi_1 = expm1(hh)/hh``."""
    p = len(rks)
    phi_k = math.expm1(hh) / hh - 1
    factorial = 1
    matrix, b = [], []
    for j in range(1, p + 1):
        matrix.append([r ** (j - 1) for r in rks])
        b.append(phi_k * factorial / b_h)
        factorial *= j + 1
        phi_k = phi_k / hh - 1 / factorial
    return np.array(matrix), np.array(b)


def _update(
    x: Tensor,
    sigma: float,
    sigma_to: float,
    history: list[tuple[float, Tensor]],
    variant: str,
    new: Tensor | None,
) -> Tensor:
    """One UniP (``new`` is None) or UniC (``new`` = estimate at ``sigma_to``) update from ``x`` at
    ``sigma``; ``history`` holds ``(lambda, denoised)`` pairs, newest (at ``sigma``) last."""
    lam0, m0 = history[-1]
    h = -math.log(sigma_to) - lam0
    hh = -h  # data prediction integrates in -h
    h_phi_1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else math.expm1(hh)
    older = history[-2::-1]  # newest first, excluding m0
    rks = [(lam_k - lam0) / h for lam_k, _ in older]
    d1s = [(m_k - m0) / rk for rk, (_, m_k) in zip(rks, older, strict=True)]
    matrix, b = _order_conditions([*rks, 1.0], hh, b_h)
    x_next = (sigma_to / sigma) * x - h_phi_1 * m0
    if new is None:  # predictor: order len(history), uses the older estimates only
        if d1s:
            rhos = [0.5] if len(d1s) == 1 else list(np.linalg.solve(matrix[:-1, :-1], b[:-1]))
            x_next = x_next - b_h * sum(float(r) * d for r, d in zip(rhos, d1s, strict=True))
        return x_next
    # corrector: one order higher, the new estimate is the last node (rk = 1)
    rhos_c = [0.5] if not d1s else list(np.linalg.solve(matrix, b))
    correction = float(rhos_c[-1]) * (new - m0)
    for r, d in zip(rhos_c[:-1], d1s, strict=True):
        correction = correction + float(r) * d
    return x_next - b_h * correction


def unipc(
    denoiser: Denoiser,
    x: Float[Tensor, "b c h w"],
    sigmas: Float[Tensor, " n"],
    *,
    order: int = 2,
    variant: Literal["bh1", "bh2"] = "bh2",
    corrector: bool = True,
    lower_order_final: bool = True,
    noise_sampler: NoiseSampler | None = None,
    generator: torch.Generator | int | None = None,
) -> Iterator[Step]:
    """UniPC-p with ``order`` p (diffusers' defaults: 2, "bh2"; A1111 uses 3, "bh1"). Orders warm up
    over the first steps; ``lower_order_final`` lowers them again near the end (needed below ~15 steps).
    The step to sigma 0 returns the last estimate: its ``h`` is infinite, the first-order limit.
    Deterministic: ``noise_sampler``/``generator`` are accepted and unused.

    A step's ``Step.x`` is the point after UniC corrected it; ``Step.denoised`` was evaluated before the
    correction (the corrector reuses that evaluation, which is what makes UniC free).
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"unipc order must be a positive int, got {order!r}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"unipc variant must be 'bh1' or 'bh2', got {variant!r}")
    sig = read_sigmas(sigmas)
    n = len(sig) - 1
    history: list[tuple[float, Tensor]] = []  # (lambda_k, denoised_k), newest last
    x_last: Tensor | None = None
    last_order = 1
    for i in range(n):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(denoiser, x, sigma)
        if corrector and x_last is not None:
            x = _update(x_last, sig[i - 1], sigma, history[-last_order:], variant, new=denoised)
        history = [*history, (-math.log(sigma), denoised)][-order:]
        this_order = min(order, n - i) if lower_order_final else order
        this_order = min(this_order, i + 1)
        if sigma_next == 0:
            x_next = denoised
        else:
            x_next = _update(x, sigma, sigma_next, history[-this_order:], variant, new=None)
        yield Step(i, sigma, sigma_next, x, denoised, x_next)
        x_last, last_order = x, this_order
        x = x_next
