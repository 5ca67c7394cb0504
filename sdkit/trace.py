"""Per-step records of a generation: what the sampler saw and produced at each step, kept on the CPU.

``Kit.generate(..., trace=True)`` fills a ``Trace``: one ``Step`` per sampler step (x, the x0 estimate
``denoised``, x_next) and, when guidance ran, the uncond/cond x0 estimates of each model call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from sdkit.types import Step


@dataclass
class CFGParts:
    sigma: Tensor
    denoised_uncond: Tensor
    denoised_cond: Tensor


@dataclass
class Trace:
    """Steps and CFG parts of one generation. ``dtype=torch.float16`` halves the memory it keeps."""

    dtype: torch.dtype = torch.float32
    steps: list[Step] = field(default_factory=list)
    cfg_parts: list[CFGParts] = field(default_factory=list)

    def _keep(self, t: Tensor) -> Tensor:
        return t.detach().to("cpu", self.dtype)

    def on_step(self, step: Step) -> None:
        self.steps.append(
            Step(
                step.i,
                step.sigma,
                step.sigma_next,
                self._keep(step.x),
                self._keep(step.denoised),
                self._keep(step.x_next),
            )
        )

    def on_cfg_parts(self, sigma: Tensor, denoised_uncond: Tensor, denoised_cond: Tensor) -> None:
        self.cfg_parts.append(CFGParts(sigma.detach().cpu(), self._keep(denoised_uncond), self._keep(denoised_cond)))

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> Step:
        return self.steps[i]
