"""Which cells are rendered together, and by which process.

A work item is what the single-process sweep renders as one piece: one lockstep group of batched runs
(``sdkit.sweep.batches`` then ``sdkit.sweep.lockstep_groups``), or one batched run without lockstep. Each item goes
to one process, which renders it with ``sdkit.sweep.sweep`` over exactly its cells, in the same order: the model
sees the same batches as in the single-process sweep, so every cell comes out bit-identical to it (batching does
change float rounding, so any other split would not be).

Items are dealt to processes by longest-processing-time-first: by cost (cells x steps) from the largest, each to the
least loaded process. On a resumed sweep an item whose cells are partly written shrinks to the missing cells, which
are then batched among themselves (equal to the single-process sweep up to float rounding; the untouched items stay
bit-identical).
"""

from __future__ import annotations

import math
from typing import Any

from sdkit.sweep import Cell, batches, lockstep_groups

MAX_AUTO_BATCH = 16  # sdkit.sweep.sweep's default max_batch


def auto_max_batch(cells: int, world_size: int) -> int:
    """Cells per batch when none is given: the grid split evenly over the processes, at most 16 (``sweep``'s
    default, so a group of one batches as ``sweep`` does)."""
    return max(1, min(MAX_AUTO_BATCH, math.ceil(cells / world_size)))


def work_items(
    cells: list[Cell], max_batch: int, lockstep: bool = True, done: set[tuple[int, int]] | frozenset = frozenset()
) -> list[list[Cell]]:
    """The pieces of a sweep, each a list of cells in the order the single-process sweep batches them; cells whose
    ``(row, col)`` is in ``done`` are left out (an item left empty disappears)."""
    runs = batches(cells, max_batch)
    groups = lockstep_groups(runs, max_batch) if lockstep else [[k] for k in range(len(runs))]
    items = [[c for k in group for c in runs[k] if (c.row, c.col) not in done] for group in groups]
    return [item for item in items if item]


def cost(item: list[Cell]) -> int:
    """Model work of an item, roughly: image-steps."""
    return sum(c.params.steps for c in item)


def assign(items: list[list[Any]], world_size: int, costs: list[int] | None = None) -> list[int]:
    """The rank that renders each item: largest cost first (``costs``, default ``cost`` of each item of cells), each
    to the least loaded rank (lowest rank on ties). Deterministic, so every process computes the same assignment
    from the same items."""
    costs = [cost(item) for item in items] if costs is None else costs
    load = [0] * world_size
    owner = [0] * len(items)
    for i in sorted(range(len(items)), key=lambda i: (-costs[i], i)):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        owner[i] = rank
        load[rank] += costs[i]
    return owner
