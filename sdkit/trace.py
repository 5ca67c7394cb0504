"""Per-step records of a generation: what the sampler saw and produced at each step, kept on the CPU.

``Kit.generate(..., trace=True)`` (or ``trace=Trace(dtype=torch.float16)``) fills a ``Trace``:

- one ``Step`` per sampler step: ``x`` at ``sigma``, the x0 estimate ``denoised``, and ``x_next``;
- the noise prediction ``eps = (x - denoised) / sigma`` (Karras et al. 2022, eq. 3 read backwards), derived
  on demand rather than stored a second time;
- when guidance ran, the uncond/cond x0 estimates of each model evaluation (``cfg_parts``);
- optionally, cross-attention maps (``trace.attention``, see ``sdkit.attention.capture_attention``).

A ``Trace`` holds one run: passed to a second ``generate``, it is cleared when that run starts (``start``).

``trace.plot(kit.vae)`` or ``trace.plot("linear")`` draws previews of every step in one figure;
``to_tensors``/``from_tensors`` give a flat dict for ``sdkit.loading.save_tensors``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit.latents import Latents, LatentSpace
from sdkit.types import Step

if TYPE_CHECKING:
    from sdkit.attention import AttentionMaps


@dataclass
class CFGParts:
    """One guided model evaluation: its sigma ``[b]`` and the uncond/cond x0 estimates ``[b, c, h, w]``."""

    sigma: Tensor
    denoised_uncond: Tensor
    denoised_cond: Tensor

    def guided(self, scale: float) -> Tensor:
        """What CFG returned for this evaluation: ``uncond + scale * (cond - uncond)``."""
        return self.denoised_uncond + (self.denoised_cond - self.denoised_uncond) * scale


@dataclass
class Trace:
    """Steps and CFG parts of one generation. ``dtype=torch.float16`` halves the memory it keeps.

    ``space`` is the latent space of the traced latents (``Kit.generate`` sets it), used by previews.

    One trace records one run. Reusing it (``generate(..., trace=t)`` twice, e.g. a re-run notebook cell) starts
    over: each run calls ``start()``, which drops the previous run's steps, CFG parts and prompt entries, so
    ``t`` then holds the latest run only, and so does every earlier ``Generation.trace`` that is this same
    object (pass a fresh ``Trace()`` per run to keep both). ``attention`` is dropped too, unless its
    ``capture_attention`` block is still open: the maps of a live capture cover every UNet call of its block.
    """

    dtype: torch.dtype = torch.float32
    steps: list[Step] = field(default_factory=list)
    cfg_parts: list[CFGParts] = field(default_factory=list)
    prompt_entries: list[int] = field(default_factory=list)  # prompt editing: schedule entry used per step
    space: LatentSpace | None = None
    attention: AttentionMaps | None = None

    def _keep(self, t: Tensor) -> Tensor:
        return t.detach().to("cpu", self.dtype)

    # ----------------------------------------------------------------------------------- recording
    def start(self) -> Trace:
        """Begin a run: forget what an earlier run recorded (see the class docstring); returns self."""
        self.steps, self.cfg_parts, self.prompt_entries = [], [], []
        if self.attention is not None and not self.attention.capturing:
            self.attention = None
        return self

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

    def on_prompt(self, step: int, entry: int) -> None:
        """Prompt editing: step ``step`` used entry ``entry`` of the prompt schedule."""
        self.prompt_entries.append(entry)

    # ----------------------------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> Step:
        return self.steps[i]

    def __repr__(self) -> str:
        shape = list(self.steps[0].x.shape) if self.steps else []
        return f"Trace({len(self)} steps of {shape}, {len(self.cfg_parts)} CFG evaluations, {self.dtype})"

    def _stack(self, name: str) -> Tensor:
        if not self.steps:
            raise ValueError("empty trace: nothing was recorded")
        return torch.stack([getattr(s, name) for s in self.steps])

    @property
    def sigmas(self) -> Float[Tensor, " n"]:
        """The sigma of each step (float64), as the sampler saw it."""
        return torch.tensor([s.sigma for s in self.steps], dtype=torch.float64)

    @property
    def x(self) -> Float[Tensor, "n b c h w"]:
        return self._stack("x")

    @property
    def denoised(self) -> Float[Tensor, "n b c h w"]:
        return self._stack("denoised")

    @property
    def x_next(self) -> Float[Tensor, "n b c h w"]:
        return self._stack("x_next")

    def eps_at(self, i: int) -> Float[Tensor, "b c h w"]:
        """The noise prediction of step ``i``: ``(x - denoised) / sigma`` (computed in float32)."""
        s = self.steps[i]
        return (s.x.float() - s.denoised.float()) / s.sigma

    @property
    def eps(self) -> Float[Tensor, "n b c h w"]:
        """The noise predictions of all steps, ``[n, b, c, h, w]`` in float32."""
        return torch.stack([self.eps_at(i) for i in range(len(self))])

    @property
    def cfg_cond(self) -> Float[Tensor, "k b c h w"]:
        return torch.stack([p.denoised_cond for p in self.cfg_parts])

    @property
    def cfg_uncond(self) -> Float[Tensor, "k b c h w"]:
        return torch.stack([p.denoised_uncond for p in self.cfg_parts])

    def latents(self, i: int, which: str = "denoised") -> Latents:
        """Step ``i``'s ``x``, ``denoised``, ``x_next`` or ``eps`` as ``Latents`` (needs ``space``)."""
        if self.space is None:
            raise ValueError("this trace does not know its latent space; set trace.space = kit.vae.space")
        s = self.steps[i]
        if which == "eps":
            return Latents(self.eps_at(i), self.space)
        sigma = {"x": s.sigma, "x_next": s.sigma_next, "denoised": None}[which]
        return Latents(getattr(s, which).float(), self.space, sigma or None)

    # ----------------------------------------------------------------------------------- showing
    def plot(
        self,
        decoder: Any = "linear",
        rows: tuple[str, ...] = ("x", "denoised"),
        *,
        index: int = 0,
        max_columns: int = 10,
    ) -> Any:
        """A matplotlib figure: one column per step (at most ``max_columns``, evenly picked), one row per
        quantity (``"x"``, ``"denoised"``, ``"eps"``, ``"x_next"``), each previewed with ``decoder``
        (``"linear"``, a ``VAE`` such as ``kit.vae``, a ``TinyDecoder`` or a callable)."""
        from sdkit.viz.steps import plot_steps

        return plot_steps(self, decoder, rows, index=index, max_columns=max_columns)

    # ----------------------------------------------------------------------------------- saving
    def to_tensors(self) -> dict[str, Tensor]:
        """A flat dict of CPU tensors for ``sdkit.loading.save_tensors`` (steps as in
        ``sdkit.samplers.steps_to_tensors``; CFG parts under ``cfg.*``; attention under ``attn*``)."""
        from sdkit.samplers.trace_io import steps_to_tensors

        out = steps_to_tensors(self.steps)
        if self.cfg_parts:
            out["cfg.sigma"] = torch.stack([p.sigma for p in self.cfg_parts])
            out["cfg.uncond"] = self.cfg_uncond.contiguous()
            out["cfg.cond"] = self.cfg_cond.contiguous()
        if self.attention is not None:
            out.update(self.attention.to_tensors())
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], space: LatentSpace | None = None) -> Trace:
        """The inverse of ``to_tensors`` (the dtype is that of the saved latents)."""
        from sdkit.samplers.trace_io import steps_from_tensors

        steps = steps_from_tensors(tensors)
        dtype = steps[0].x.dtype if steps else torch.float32
        trace = cls(dtype=dtype, steps=steps, space=space)
        if "cfg.sigma" in tensors:
            trace.cfg_parts = [
                CFGParts(s, u, c)
                for s, u, c in zip(tensors["cfg.sigma"], tensors["cfg.uncond"], tensors["cfg.cond"], strict=True)
            ]
        if any(k.startswith("attn.") for k in tensors):
            from sdkit.attention import AttentionMaps

            trace.attention = AttentionMaps.from_tensors(tensors)
        return trace
