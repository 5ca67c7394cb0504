"""Sweeps over several processes, GPUs or machines, with plain ``torch.distributed`` launched by ``torchrun``.

    torchrun --nproc_per_node 2 -m sdkit.cli sweep sweep.toml          # 2 processes on this machine

A grid (the axes ``sdkit.sweep.sweep`` takes) is cut along the batches the single-process sweep would make
(``sdkit.sweep.batches`` and ``lockstep_groups``), the pieces are dealt to the processes, each process renders its
pieces with ``sdkit.sweep.sweep`` itself, and rank 0 gathers one labelled grid and a table. Every cell is a PNG
written atomically (temporary file, then rename) as soon as it is rendered, so a sweep that stops part-way resumes
and renders only the cells whose files are missing.

Modules, read in this order: ``config`` (the sweep file, checked without torch), ``group`` (joining the process
group torchrun describes), ``plan`` (work items and who renders them), ``cells`` (the output folder: one file per
cell), ``scores`` and ``table`` (rank 0's table), ``sweep`` (the driver, ``distributed_sweep`` and ``run_config``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdkit.distributed.config import SweepConfig, load_config
    from sdkit.distributed.sweep import SweepResult, distributed_sweep, run_config

__all__ = ["distributed_sweep", "run_config", "load_config", "SweepResult", "SweepConfig"]


def __getattr__(name: str) -> Any:  # importing the package loads nothing heavy (the CLI checks configs without torch)
    if name in ("distributed_sweep", "run_config", "SweepResult"):
        from sdkit.distributed import sweep

        return getattr(sweep, name)
    if name in ("load_config", "SweepConfig"):
        from sdkit.distributed import config

        return getattr(config, name)
    raise AttributeError(f"module 'sdkit.distributed' has no attribute {name!r}")
