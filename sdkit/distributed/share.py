"""Rendering a job's share: the loop every distributed job (sweeps, scorecards) runs on each process.

Work items are dealt to the processes (``sdkit.distributed.plan.assign``); each process renders its own items, writes
each cell to the shared ``CellFolder`` as soon as it exists, and counts it on the rendezvous store, so rank 0 draws
one progress bar for all processes. Everyone then waits until every cell is counted, and rank 0 receives the cells
it cannot see on its own disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sdkit.distributed.cells import CellFolder, collect
from sdkit.distributed.group import Group
from sdkit.distributed.plan import assign

# what rendering one item yields, cell by cell: (row, col, a Generation of one image, latents to keep or None)
Rendered = tuple[int, int, Any, Any]


def render_share(
    group: Group,
    folder: CellFolder,
    items: Sequence[Any],
    costs: list[int],
    render: Callable[[Any], Iterable[Rendered]],
    *,
    run: str,
    already_done: int,
    desc: str,
    progress: bool = False,
    on_cell: Callable[[int, int], None] | None = None,
) -> float:
    """Render this process's items with ``render(item)``, writing every cell it yields; wait for all processes and
    gather the cells on rank 0. ``run`` names this run's shared counter, ``already_done`` the cells found on disk
    (the progress bar starts there). Returns the seconds from the start until every process was done."""
    owners = assign(list(items), group.world_size, costs)
    total = sum(len(item) for item in items)
    counter = f"cells-{run}"
    bar = None
    if progress and group.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=already_done + total, initial=already_done, desc=desc, unit="cell")

    def show(value: int) -> None:
        if bar is not None:
            bar.n = already_done + value
            bar.refresh()

    start = time.perf_counter()
    for item, owner in zip(items, owners, strict=True):
        if owner != group.rank:
            continue
        for row, col, generation, latents in render(item):
            folder.write(row, col, generation, latents)
            folder.log(row, col, group.rank)
            show(group.add(counter, 1))
            if on_cell is not None:
                on_cell(row, col)
    group.wait_for(counter, total, on_change=show)
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    collect(group, folder)
    return seconds
