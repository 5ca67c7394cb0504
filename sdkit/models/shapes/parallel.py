"""Data-parallel training of the shapes model with plain ``torch.distributed`` (launched by ``torchrun``).

    torchrun --standalone --nproc_per_node gpu -m sdkit.models.shapes.train --out runs/shapes --device cuda

One optimizer step uses one global batch of ``--batch`` scenes. Every process draws the whole global batch from the
step's seed (scene indices, caption dropout, timesteps, noise: a few kilobytes), keeps its own contiguous share, and
cuts that into ``--accumulate`` micro-batches; gradients are summed over the micro-batches and averaged over the
processes by ``DistributedDataParallel``. So a step sees exactly the data a single process with the whole batch sees,
and 2 processes x batch 16, 1 process x 2 micro-batches of 16 and 1 process x batch 32 take the same steps, up to
the float rounding of different batch shapes (measured in ``tests/test_shapes_train_parallel.py``).

The modules a stage trains are wrapped together in one ``StageLoss`` module whose ``forward`` is the stage's loss,
so DDP sees every trained parameter in one forward (the VAE's ``encode`` and ``decode`` are not ``forward`` calls).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sdkit.distributed.group import Group


@dataclass(frozen=True)
class Split:
    """How one global batch is shared: ``world_size`` processes, ``accumulate`` micro-batches each."""

    rank: int = 0
    world_size: int = 1
    accumulate: int = 1

    def check(self, batch: int, stage: str) -> None:
        parts = self.world_size * self.accumulate
        if batch % parts:
            raise ValueError(
                f"batch: the {stage} stage's global batch {batch} does not split into {self.world_size} process(es) x "
                f"{self.accumulate} micro-batch(es); choose a batch divisible by {parts}"
            )

    def micro_slices(self, batch: int) -> list[slice]:
        """This process's micro-batches, as slices of the global batch (contiguous, equal sizes)."""
        share = batch // self.world_size
        micro = share // self.accumulate
        start = self.rank * share
        return [slice(start + k * micro, start + (k + 1) * micro) for k in range(self.accumulate)]


def take(batch: dict[str, Any], part: slice) -> dict[str, Any]:
    """The rows ``part`` of every tensor in ``batch`` (nested dicts too); other values as they are."""
    out: dict[str, Any] = {}
    for k, v in batch.items():
        out[k] = take(v, part) if isinstance(v, dict) else v[part] if isinstance(v, Tensor) else v
    return out


class StageLoss(torch.nn.Module):
    """The modules one stage trains, as one module whose ``forward(batch)`` returns the stage's loss."""

    def __init__(self, modules: list[torch.nn.Module], loss: Callable[[dict[str, Any]], Tensor]) -> None:
        super().__init__()
        self.trained = torch.nn.ModuleList(modules)
        self.loss = loss

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return self.loss(batch)


def wrap(module: StageLoss, group: Group, device: torch.device, find_unused: bool = False) -> torch.nn.Module:
    """``module`` (on ``device``) under ``DistributedDataParallel`` in a group of several processes, else as it is.
    ``find_unused``: some trained parameters get no gradient in some steps (the ControlNet stage alternates its two
    networks)."""
    if group.world_size == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" and device.index is not None else None
    return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused)


def accumulating(model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
    """For every micro-batch but the last: DDP's ``no_sync`` (gradients are averaged once per step)."""
    no_sync: Any = getattr(model, "no_sync", None)
    if last or no_sync is None:
        return contextlib.nullcontext()
    return no_sync()


class StepSync:
    """What every process must agree on after each step: the global mean loss, and rank 0's decisions (stop now, how
    far through the stage's time budget). One small all-reduce per step; a group of one needs none."""

    def __init__(self, group: Group, device: torch.device) -> None:
        self.group, self.device = group, device

    def __call__(self, local_loss: Tensor, stop: bool, progress: float) -> tuple[Tensor, bool, float]:
        if self.group.world_size == 1:
            return local_loss.detach(), stop, progress
        main = float(self.group.is_main)
        v = torch.stack(
            [
                local_loss.detach().float() / self.group.world_size,
                torch.tensor(main * stop, device=self.device),
                torch.tensor(main * progress, device=self.device),
            ]
        )
        self.group.all_reduce_sum(v)
        return v[0], bool(v[1] > 0), float(v[2])
