"""Where sampling turns non-finite: a step hook that finds the first step whose latents hold NaN/inf and names it
(and whether the step's input, the denoiser's estimate or the sampler's update went first), so a broken run fails
with a message instead of a black image. ``Kit.generate`` watches every step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sdkit.types import Step


def _finite_flags(step: Step) -> Tensor:
    """``[x, denoised, x_next]`` all finite, as a device tensor (reading it is what syncs)."""
    return torch.stack([torch.isfinite(t).all() for t in (step.x, step.denoised, step.x_next)])


def _non_finite_error(step: Step | tuple[int, float, float], flags: Tensor) -> FloatingPointError:
    i, sigma, sigma_next = (step.i, step.sigma, step.sigma_next) if isinstance(step, Step) else step
    x_ok, denoised_ok, _ = (bool(f) for f in flags)
    where = "the step's input" if not x_ok else "the denoiser's estimate" if not denoised_ok else "the sampler's update"
    return FloatingPointError(
        f"sampling produced non-finite latents (NaN/inf) at step {i} (sigma {sigma:.4g} -> {sigma_next:.4g}), "
        f"first in {where}; check the model weights, cfg and dtype (fp16 overflow?)"
    )


def check_finite_step(step: Step) -> None:
    """Raise ``FloatingPointError`` naming the step (and whether the denoiser or the update) where NaN/inf appear."""
    flags = _finite_flags(step)
    if not bool(flags[2]):
        raise _non_finite_error(step, flags)


class FiniteWatch:
    """Finds the step where latents first turn non-finite. On the CPU every step is checked at once (fail fast,
    free); on an accelerator the flags stay on the device and are read once, in ``finish``, so the sampling loop
    never waits for the device."""

    def __init__(self, device: torch.device) -> None:
        self.eager = device.type == "cpu"
        self.flags: list[Tensor] = []
        self.steps: list[tuple[int, float, float]] = []

    def __call__(self, step: Step) -> None:
        if self.eager:
            check_finite_step(step)
            return
        self.flags.append(_finite_flags(step))
        self.steps.append((step.i, step.sigma, step.sigma_next))

    def finish(self) -> None:
        if self.eager or not self.flags:
            return
        flags = torch.stack(self.flags).cpu()  # the one sync
        bad = (~flags[:, 2]).nonzero()
        if len(bad):
            k = int(bad[0])
            raise _non_finite_error(self.steps[k], flags[k])
