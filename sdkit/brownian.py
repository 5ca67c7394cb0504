"""Brownian-tree step noise for the DPM++ SDE samplers, seeded per image as AUTOMATIC1111 seeds it.

The DPM++ SDE, 2M SDE (and its Heun variant) and 3M SDE samplers of A1111, k-diffusion and ComfyUI take their
step noise from one Brownian motion ``W`` over sigma per image: the noise between ``sigma`` and ``sigma_next`` is
``(W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|)``. The noise of an interval depends on where it lies, not
on how many steps came before, so the same seed gives similar images at different step counts, and an image's
noise does not depend on its batch (the reason A1111 gives: "deterministic results across different batch sizes").

A1111 (``KDiffusionSampler.create_noise_sampler``, stable-diffusion-webui 1.6+) builds one ``torchsde.BrownianTree``
per image, with entropy the image's seed (``p.all_seeds``: ``seed + i``; a variation seed does not enter) over the
positive range of the run's *whole* schedule (``sigmas[sigmas > 0].min()`` to ``sigmas.max()``; for img2img the
schedule before strength cuts it). With its CPU RNG source torchsde's draws come from CPU generators (A1111
replaces ``torchsde._brownian.brownian_interval._randn`` with ``randn_local``). sdkit builds the same trees with
torchsde on the CPU in float32, where torchsde's own draws already are those, and moves the noise to the latents'
device: the same seed gives the same noise on any device.

``ImageNoise.for_sampler`` picks this source for the samplers in ``BROWNIAN`` and the image generators for the
others, so ``Kit.generate``, img2img, inpainting, hires fix, sweeps and the SDXL refiner all follow A1111.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor

BROWNIAN: frozenset[str] = frozenset({"dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde"})
"""The samplers A1111 runs with a Brownian tree (its ``brownian_noise`` option), by sdkit name; their functions
carry ``brownian_noise = True`` (``sdkit.samplers.dpmpp_sde``)."""


def uses_brownian_noise(sampler: Any) -> bool:
    """Whether ``sampler`` (a name, or a sampler function possibly under ``functools.partial``) is one of the DPM++
    SDE family that A1111 feeds from a Brownian tree. A user's own sampler function is not, unless it says so with
    a ``brownian_noise = True`` attribute."""
    while isinstance(sampler, partial):
        sampler = sampler.func
    if isinstance(sampler, str):
        return sampler.strip().lower() in BROWNIAN
    return getattr(sampler, "brownian_noise", False) is True


def sigma_range(sigmas: Tensor) -> tuple[float, float] | None:
    """``(smallest positive sigma, largest sigma)`` of a schedule: the span A1111 gives its trees; None when no
    sigma is positive (no step there draws noise)."""
    positive = sigmas[sigmas > 0]
    if positive.numel() == 0:
        return None
    return float(positive.min()), float(sigmas.max())


class BrownianNoise:
    """Per-image Brownian trees: a k-diffusion-style ``noise_sampler(sigma, sigma_next)`` giving standard normal
    noise ``[b, *shape]`` on ``device`` in ``dtype``.

    ``seeds``: one per image (entropy of its tree); ``shape``: one image's latent shape; ``sigma_min``/``sigma_max``:
    the span of the trees (queries must stay inside it).
    """

    def __init__(
        self,
        seeds: Sequence[int],
        shape: Sequence[int],
        sigma_min: float,
        sigma_max: float,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not 0 < sigma_min <= sigma_max:
            raise ValueError(f"BrownianNoise: need 0 < sigma_min <= sigma_max, got {sigma_min} and {sigma_max}")
        self.seeds = [int(s) for s in seeds]
        self.shape = tuple(int(v) for v in shape)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.device, self.dtype = device, dtype
        # the span as k-diffusion's BrownianTreeNoiseSampler passes it to torchsde: 0-d float32 times
        self.t0 = torch.as_tensor(sigma_min, dtype=torch.float32)
        self.t1 = torch.as_tensor(sigma_max, dtype=torch.float32)
        self._trees: list[Any] | None = None
        self._span = (float(self.t0), float(self.t1))

    @property
    def trees(self) -> list[Any]:
        """One ``torchsde.BrownianTree`` per image, built on first use (a one-step run to sigma 0 draws no noise,
        and its span is a single point)."""
        if self._trees is None:
            import torchsde  # imported here: it brings scipy along

            if self.sigma_min == self.sigma_max:
                raise ValueError(f"BrownianNoise spans the single sigma {self.sigma_min:.6g}: no noise lies there")
            w0 = torch.zeros(self.shape, dtype=torch.float32)  # a zero start of one image's shape, as k-diffusion's
            self._trees = [torchsde.BrownianTree(self.t0, w0, self.t1, entropy=s) for s in self.seeds]
            # torchsde keeps the span rounded to 6 decimals and, asked a rounding error beyond it (every schedule's
            # end points are), warns and answers at the end: clamping to its span first gives the same answer, quietly.
            interval = getattr(self._trees[0], "_interval", None)
            self._span = (getattr(interval, "_start", float(self.t0)), getattr(interval, "_end", float(self.t1)))
        return self._trees

    def to(self, device: torch.device | str | None, dtype: torch.dtype) -> BrownianNoise:
        """Deliver later noise on ``device`` in ``dtype`` (the trees stay on the CPU); returns self."""
        self.device, self.dtype = device, dtype
        return self

    def __call__(self, sigma: Tensor | float, sigma_next: Tensor | float) -> Tensor:
        a = torch.as_tensor(sigma, dtype=torch.float32).detach().cpu()
        b = torch.as_tensor(sigma_next, dtype=torch.float32).detach().cpu()
        lo, hi, sign = (a, b, 1.0) if a < b else (b, a, -1.0)
        if float(lo) < self.sigma_min * (1 - 1e-4) or float(hi) > self.sigma_max * (1 + 1e-4):
            raise ValueError(
                f"BrownianNoise spans sigmas [{self.sigma_min:.6g}, {self.sigma_max:.6g}] but was asked for "
                f"[{float(lo):.6g}, {float(hi):.6g}]: build it over the run's whole schedule"
            )
        trees = self.trees
        start, end = self._span
        lo_at, hi_at = min(max(float(lo), start), end), max(min(float(hi), end), start)  # torchsde reads floats too
        increments = torch.stack([tree(lo_at, hi_at) for tree in trees]) * sign
        return (increments / (b - a).abs().sqrt()).to(device=self.device, dtype=self.dtype)
