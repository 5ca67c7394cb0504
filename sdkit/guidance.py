"""Guidance as ``ConditionalDenoiser -> Denoiser`` wrappers: binding a prompt and classifier-free guidance.

CFG (Ho & Salimans 2022): ``denoised = uncond + scale * (cond - uncond)``. It is written on x0 estimates; for an
eps model this equals diffusers' eps-space formula, since x0 = x - sigma * eps is affine in eps.

With a ``Composed`` conditioning (a prompt's ``AND`` parts, ``sdkit.text.composable``) it is composable diffusion
as A1111 computes it (``CFGDenoiser.combine_denoised``): ``uncond + sum_k (cond_k - uncond) * (weight_k * scale)``,
all parts and the uncond in one batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit.types import ConditionalDenoiser, Denoiser, TextConditioning

PartsHook = Callable[[Tensor, Tensor, Tensor], None]
"""Called with ``(sigma, denoised_uncond, denoised_cond)`` at each CFG evaluation (tracing)."""


def check_cfg_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"cfg must be a finite number, got {scale!r}")
    return float(scale)


class Bound:
    """A conditional denoiser with its conditioning (and extra model inputs) fixed."""

    def __init__(self, model: ConditionalDenoiser, cond: TextConditioning, **extra: Any) -> None:
        self.model, self.cond, self.extra = model, cond, extra

    def __call__(self, x: Float[Tensor, "b c h w"], sigma: Float[Tensor, " b"]) -> Float[Tensor, "b c h w"]:
        return self.model(x, sigma, self.cond, **self.extra)


def bind(model: ConditionalDenoiser, cond: TextConditioning, **extra: Any) -> Denoiser:
    return Bound(model, cond, **extra)


@dataclass(frozen=True)
class Composed:
    """The conditionings of a prompt's ``AND`` parts and their weights (A1111's composable diffusion), batched
    like a ``TextConditioning`` so recipes can ``repeat`` and move it. Every part has the same token length."""

    parts: tuple[TextConditioning, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.parts or len(self.parts) != len(self.weights):
            raise ValueError(f"Composed needs one weight per part, got {len(self.parts)} and {len(self.weights)}")
        if any(not math.isfinite(w) for w in self.weights):
            raise ValueError(f"Composed weights must be finite, got {self.weights}")

    @classmethod
    def of(cls, parts: Sequence[TextConditioning], weights: Sequence[float]) -> Composed:
        return cls(tuple(parts), tuple(float(w) for w in weights))

    @property
    def batch(self) -> int:
        return self.parts[0].batch

    def repeat(self, n: int) -> Composed:
        return Composed(tuple(p.repeat(n) for p in self.parts), self.weights)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Composed:
        return Composed(tuple(p.to(device, dtype) for p in self.parts), self.weights)


Cond = TextConditioning | Composed
"""What CFG guides with: one prompt's conditioning, or the parts of an ``AND`` prompt."""


class CFG:
    """Classifier-free guidance; cond and uncond go through the model as one batch ``[uncond, cond]`` (with a
    ``Composed`` cond: ``[uncond, cond_1, ..., cond_k]``).

    ``extra`` tensors (e.g. ``concat`` channels) are batched the same way; a scale of 1 skips the uncond pass of a
    plain cond.
    """

    def __init__(
        self,
        model: ConditionalDenoiser,
        cond: Cond,
        uncond: TextConditioning,
        scale: float,
        on_parts: PartsHook | None = None,
        **extra: Any,
    ) -> None:
        self.model, self.cond, self.uncond = model, cond, uncond
        self.scale = check_cfg_scale(scale)
        self.on_parts = on_parts
        self.extra = extra
        self._batched: tuple[Any, ...] = ()

    def _both(self) -> tuple[TextConditioning, dict[str, Any]]:
        """``[uncond, cond...]`` and the repeated extras, built once per (uncond, cond, extra), not at every step."""
        key = (self.uncond, self.cond, self.extra)
        if not self._batched or any(a is not b for a, b in zip(self._batched[:3], key, strict=True)):
            conds = list(self.cond.parts) if isinstance(self.cond, Composed) else [self.cond]
            both = TextConditioning.cat([self.uncond, *conds])
            n = 1 + len(conds)
            extra = {k: torch.cat([v] * n) if isinstance(v, Tensor) else v for k, v in self.extra.items()}
            self._batched = (*key, both, extra)
        return self._batched[3], self._batched[4]

    def __call__(self, x: Float[Tensor, "b c h w"], sigma: Float[Tensor, " b"]) -> Float[Tensor, "b c h w"]:
        sigma = sigma.reshape(-1).expand(x.shape[0]) if sigma.numel() == 1 else sigma
        if isinstance(self.cond, Composed):
            return self._composed(self.cond, x, sigma)
        if self.scale == 1.0 and self.on_parts is None:
            return self.model(x, sigma, self.cond, **self.extra)
        both, extra = self._both()
        d_uncond, d_cond = self.model(torch.cat([x, x]), torch.cat([sigma, sigma]), both, **extra).chunk(2)
        if self.on_parts is not None:
            self.on_parts(sigma, d_uncond, d_cond)
        return d_uncond + (d_cond - d_uncond) * self.scale

    def _composed(self, cond: Composed, x: Tensor, sigma: Tensor) -> Tensor:
        """A1111's combine_denoised: ``uncond + sum_k (cond_k - uncond) * (weight_k * scale)``, in that order."""
        both, extra = self._both()
        n = 1 + len(cond.parts)
        d_uncond, *d_parts = self.model(torch.cat([x] * n), torch.cat([sigma] * n), both, **extra).chunk(n)
        denoised = d_uncond.clone()
        for d, weight in zip(d_parts, cond.weights, strict=True):
            denoised += (d - d_uncond) * (weight * self.scale)
        if self.on_parts is not None:  # the cond estimate that plain CFG at this scale would turn into `denoised`
            pull = [(d - d_uncond) * w for d, w in zip(d_parts, cond.weights, strict=True)]
            self.on_parts(sigma, d_uncond, d_uncond + torch.stack(pull).sum(0))
        return denoised


def cfg(
    model: ConditionalDenoiser,
    cond: TextConditioning,
    uncond: TextConditioning,
    scale: float,
    **extra: Any,
) -> Denoiser:
    return CFG(model, cond, uncond, scale, **extra)


class ScheduledCFG(CFG):
    """CFG whose conditioning changes during sampling (prompt editing, ``[a:b:0.5]``).

    ``schedule`` is ``[(end_step, cond), ...]`` as ``PromptEncoder.encode_schedule`` gives it (A1111's semantics,
    see ``sdkit.text.prompt_syntax``); the recipe calls ``advance(step.i + 1)`` after each step, so every model
    call of step ``i`` uses the entry for ``i``.
    """

    def __init__(
        self,
        model: ConditionalDenoiser,
        schedule: list[tuple[int, TextConditioning]],
        uncond: TextConditioning,
        scale: float,
        on_parts: PartsHook | None = None,
        **extra: Any,
    ) -> None:
        if not schedule:
            raise ValueError("schedule must hold at least one (end_step, cond) entry")
        super().__init__(model, schedule[0][1], uncond, scale, on_parts, **extra)
        self.schedule = schedule
        self.step = 0
        self.entry = 0
        self.advance(0)

    def advance(self, step: int) -> None:
        """Use the schedule's entry for ``step`` (A1111's rule: the first entry whose end step >= step)."""
        self.step = step
        self.entry = next((k for k, (end, _) in enumerate(self.schedule) if end >= step), len(self.schedule) - 1)
        self.cond = self.schedule[self.entry][1]
