"""The distributed sweep: every process plans the whole grid, renders its share, and rank 0 gathers the results.

    result = distributed_sweep(kit, "a red circle", x=("cfg", [1, 3, 7.5, 12]), y=("seed", [1, 2, 3, 4]),
                               out="sweeps/cfg-seed", steps=20)      # under torchrun: on every rank

1. Each process plans all cells (``sdkit.sweep.plan``, the same as the single-process sweep) and the processes check
   that their plans agree (the same model, no random seed).
2. The cells already on disk are left out; the rest is cut into work items (``sdkit.distributed.plan``: the
   single-process sweep's own batches) and dealt to the processes.
3. Each process renders each of its items with ``sdkit.sweep.sweep`` over exactly that item's cells, and writes
   every cell as soon as its item is done (``sdkit.distributed.cells``); a shared counter drives rank 0's progress
   bar.
4. When all cells are done, cells that rank 0 cannot see (machines without a shared file system) are sent to it,
   and rank 0 builds the grid and the table from the files (``sdkit.distributed.table``).

A stopped sweep is resumed by running the same command again: only the missing cells are rendered.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdkit.distributed.cells import CellFolder
from sdkit.distributed.config import SweepConfig
from sdkit.distributed.group import Group, join
from sdkit.distributed.plan import auto_max_batch, cost, work_items
from sdkit.distributed.scores import SCORERS, Scorer
from sdkit.distributed.share import Rendered, render_share
from sdkit.limits import show
from sdkit.sweep import Axis, Cell, plan, sweep
from sdkit.viz.grid import Grid

RECORDABLE = (str, int, float, bool, type(None))


@dataclass
class SweepResult:
    """What rank 0 gets back (the other ranks get None)."""

    grid: Grid
    table: list[dict[str, Any]]  # one row per cell: row, col, axis values, file, infotext, scores
    folder: Path
    rendered: int  # cells rendered by this run, over all processes
    skipped: int  # cells found done on disk and not rendered again
    max_batch: int
    world_size: int
    seconds: float  # rendering, from the plan until every process was done


def distributed_sweep(
    kit: Any,
    prompt: str,
    x: Axis | None = ("cfg", [1.0, 3.0, 7.5, 12.0]),
    y: Axis | None = None,
    *,
    out: str | Path,
    max_batch: int | None = None,
    lockstep: bool = True,
    latents: bool = False,
    scorers: Sequence[str | Scorer] = (),
    progress: bool = False,
    on_cell: Callable[[int, int], None] | None = None,
    group: Group | None = None,
    **fixed: Any,
) -> SweepResult | None:
    """``sdkit.sweep.sweep`` over all processes of a torchrun job (or this process alone), into the folder ``out``.

    Call it on every rank with the same arguments. Each cell is bit-identical to the one ``sweep(kit, prompt, x, y,
    max_batch=result.max_batch, lockstep=lockstep, **fixed)`` makes. ``max_batch``: cells per batch; default the
    grid split evenly over the processes (at most 16), or the value of the sweep being resumed. ``latents``: keep
    each cell's latents beside its PNG. ``scorers``: names from ``sdkit.distributed.scores.SCORERS`` or callables
    ``(image, parameters) -> {name: number}``. ``on_cell(row, col)`` is called after each cell this process writes.
    Parameters must be recordable (names and numbers, not functions or tensors) and seeds explicit, since a resumed
    sweep must plan the same cells.
    """
    if group is None:
        with join() as joined:
            return distributed_sweep(kit, prompt, x, y, out=out, max_batch=max_batch, lockstep=lockstep,
                                     latents=latents, scorers=scorers, progress=progress, on_cell=on_cell,
                                     group=joined, **fixed)  # fmt: skip
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
        raise ValueError(f"max_batch must be an integer >= 1 or None, got {show(max_batch)}")
    score_fns = [_scorer(s) for s in scorers]
    _check_recordable(x, y, fixed)
    cells, axes = plan(kit, prompt, x, y, fixed)
    (xn, xv), (yn, yv) = axes
    folder = CellFolder(out, len(yv), len(xv))
    # rank 0 settles what may differ between runs: max_batch (auto, or the one of the sweep being resumed)
    first = None
    if group.is_main:
        first = {"max_batch": max_batch or _recorded_max_batch(folder) or auto_max_batch(len(cells), group.world_size),
                 "run": uuid.uuid4().hex[:12]}  # fmt: skip
    settled = group.broadcast(first)
    max_batch = settled["max_batch"]
    definition = {
        "sdkit_sweep": 1,
        "model": kit.name,
        "prompt": prompt,
        "x": [list(xn), [list(v) for v in xv]],
        "y": [list(yn), [list(v) for v in yv]],
        "fixed": fixed,
        "max_batch": max_batch,
        "lockstep": lockstep,
        "latents": latents,
    }
    folder.prepare(definition)
    fingerprint = hashlib.sha256("\n".join(c.params.infotext() for c in cells).encode()).hexdigest()
    views = group.all_gather((fingerprint, folder.done()))
    for rank, (theirs, _) in enumerate(views):
        if theirs != fingerprint:
            raise ValueError(
                f"rank {rank} planned another sweep than rank {group.rank} (another model or model file?); every "
                "process must load the same model with the same arguments"
            )
    done: set[tuple[int, int]] = set().union(*(seen for _, seen in views))
    items = work_items(cells, max_batch, lockstep, done)

    def render(item: list[Cell]) -> Iterator[Rendered]:
        grid = sweep(kit, prompt, *_axis_of(item, axes), max_batch=max_batch, lockstep=lockstep, **fixed)
        for j, cell in enumerate(item):
            yield cell.row, cell.col, _generation(cell, grid, j), _latents(grid, j) if latents else None

    total = sum(len(item) for item in items)
    seconds = render_share(group, folder, items, [cost(item) for item in items], render, run=settled["run"],
                           already_done=len(done), desc="sweep", progress=progress, on_cell=on_cell)  # fmt: skip
    if not group.is_main:
        return None
    parameters: list[list[Any]] = [[None] * len(xv) for _ in yv]
    for cell in cells:
        parameters[cell.row][cell.col] = cell.params
    space = getattr(kit, "latent_space", None) or kit.vae.space  # the UNet's latents (as sdkit.sweep.run_batch)
    grid, table = _build_table(folder, prompt, axes, parameters, score_fns, space)
    grid.batches = len(items)
    grid.notes.update(folder=str(folder.path), max_batch=max_batch, world_size=group.world_size, rendered=total)
    return SweepResult(grid, table, folder.path, total, len(done), max_batch, group.world_size, seconds)


def run_config(config: SweepConfig, *, out: str | Path | None = None, progress: bool = True) -> SweepResult | None:
    """Load ``config.model`` on this process's device and run its sweep (what ``sdkit sweep FILE`` does)."""
    import sdkit

    folder = out if out is not None else config.out
    if folder is None:
        raise ValueError("out: no output folder given (config key out, or --output)")
    with join() as group:
        kit = sdkit.load(config.model, device=group.device)
        return distributed_sweep(
            kit,
            config.prompt,
            config.x,
            config.y,
            out=folder,
            max_batch=config.max_batch,
            lockstep=config.lockstep,
            latents=config.latents,
            scorers=config.scores,
            progress=progress,
            group=group,
            **config.fixed,
        )


def _build_table(
    folder: CellFolder, prompt: str, axes: Any, parameters: Any, scorers: list[Scorer], space: Any
) -> tuple[Grid, list[dict[str, Any]]]:
    from sdkit.distributed.table import build

    return build(folder, prompt, axes, parameters, scorers, space)


def _axis_of(item: list[Cell], axes: Any) -> tuple[Axis | None, None]:
    """The cells of one item as a single axis that varies all of the sweep's parameters together, in the item's
    order: ``sweep`` over it plans and batches exactly these cells as the whole sweep did."""
    (xn, xv), (yn, yv) = axes
    names = (*xn, *yn)
    values = [(*xv[c.col], *yv[c.row]) for c in item]
    if not names:
        return None, None
    if len(names) == 1:
        return (names[0], [v[0] for v in values]), None
    return (names, values), None


def _generation(cell: Cell, grid: Grid, j: int) -> Any:
    from sdkit import Generation  # the facade: wherever the class lives

    p = cell.params
    return Generation(images=[grid.images[0][j]], seed=p.seed, infotext=p.infotext(), parameters=p)


def _latents(grid: Grid, j: int) -> Any:
    return None if grid.latents is None else grid.latents[0][j].tensor.detach().cpu()


def _recorded_max_batch(folder: CellFolder) -> int | None:
    import json

    manifest = folder.path / "sweep.json"
    try:
        value = json.loads(manifest.read_text(encoding="utf-8")).get("max_batch")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value >= 1 else None


def _scorer(s: str | Scorer) -> Scorer:
    if isinstance(s, str):
        if s not in SCORERS:
            raise ValueError(f"scorers: unknown scorer {s!r}; known: {', '.join(SCORERS)} (or pass a callable)")
        return SCORERS[s]
    if not callable(s):
        raise TypeError(f"scorers: each must be a name or a callable (image, parameters) -> dict, got {show(s)}")
    return s


def _check_recordable(x: Axis | None, y: Axis | None, fixed: dict[str, Any]) -> None:
    """The sweep is written down (sweep.json) and replanned on resume: values must be plain data, seeds fixed."""
    given: dict[str, list[Any]] = {k: [v] for k, v in fixed.items()}
    for axis in (x, y):
        if axis is None:
            continue
        name, values = axis
        names = (name,) if isinstance(name, str) else tuple(name)
        for v in values:
            row = (v,) if len(names) == 1 else tuple(v)
            for n, value in zip(names, row, strict=False):
                given.setdefault(n, []).append(value)
    for name, values in given.items():
        for value in values:
            if not _plain(value):
                raise TypeError(
                    f"{name}: a distributed sweep records its parameters in sweep.json, so they must be names and "
                    f"numbers, got {type(value).__name__} {show(value)}"
                )
    for name in ("seed", "subseed"):
        if name == "subseed" and not fixed.get("subseed_strength"):
            continue
        seeds = given.get(name, [])
        if not seeds or any(s is None or (isinstance(s, int) and s < 0) for s in seeds):
            raise ValueError(
                f"{name}: a resumable sweep needs explicit seeds (>= 0, fixed or on an axis), got {show(seeds or -1)}"
            )


def _plain(value: Any) -> bool:
    if isinstance(value, RECORDABLE):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False
