"""Rank 0's results: the labelled grid and a table with one row per cell, both read back from the cell files.

The files are the source of truth (a resumed sweep has cells from several runs), so the table is built from them:
each row holds the cell's position, its axis values, its file, the infotext stored in that file and its scores.
``table.csv`` has one column per axis parameter and one per score; ``table.json`` holds the same rows with the
scores as a mapping.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from sdkit.distributed.cells import CellFolder
from sdkit.distributed.scores import Scorer
from sdkit.image_files import write_file
from sdkit.viz.grid import Grid


def build(
    folder: CellFolder,
    prompt: str,
    axes: Any,
    parameters: list[list[Any]],
    scorers: Sequence[Scorer] = (),
    space: Any = None,
) -> tuple[Grid, list[dict[str, Any]]]:
    """The grid (images, and latents when kept, from the files) and the table rows; writes ``table.csv``,
    ``table.json`` and ``grid.png`` into the folder. ``axes`` is ``((x names, x values), (y names, y values))``
    as ``sdkit.sweep.plan`` gives it; ``parameters[row][col]`` the planned ``GenerationParameters``; ``space`` the
    ``LatentSpace`` of kept latents."""
    from sdkit.latents import Latents
    from sdkit.sweep import label

    (xn, xv), (yn, yv) = axes
    images: list[list[Any]] = [[None] * len(xv) for _ in yv]
    latents: list[list[Any]] = [[None] * len(xv) for _ in yv]
    rows: list[dict[str, Any]] = []
    for r, yvals in enumerate(yv):
        for c, xvals in enumerate(xv):
            image, infotext, lat = folder.read(r, c)
            images[r][c], latents[r][c] = image, None if lat is None else Latents(lat, space)
            scores: dict[str, float] = {}
            for scorer in scorers:
                scores.update(scorer(image, parameters[r][c]))
            rows.append(
                {
                    "row": r,
                    "col": c,
                    **dict(zip(yn, yvals, strict=True)),
                    **dict(zip(xn, xvals, strict=True)),
                    "file": str(folder.file(r, c).relative_to(folder.path)),
                    "infotext": infotext,
                    "scores": scores,
                }
            )
    grid = Grid(
        images=images,
        x_labels=[label(xn, v) for v in xv],
        y_labels=[label(yn, v) for v in yv] if yn else [""],
        x_name=", ".join(xn),
        y_name=", ".join(yn),
        latents=latents if all(lat is not None for row in latents for lat in row) else None,
        parameters=parameters,
        title=prompt,
    )
    # each file appears whole (a reader never sees half a table)
    write_file(folder.path / "table.csv", to_csv(rows, [*yn, *xn]).encode(), overwrite=True)
    write_file(folder.path / "table.json", json.dumps(rows, indent=1).encode(), overwrite=True)
    write_file(folder.path / "grid.png", grid._repr_png_(), overwrite=True)
    return grid, rows


def to_csv(rows: list[dict[str, Any]], names: list[str]) -> str:
    """The rows as CSV: position, axis values (``names``), file, infotext, then one column per score."""
    score_names = sorted({k for row in rows for k in row["scores"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "col", *names, "file", "infotext", *score_names])
    for row in rows:
        writer.writerow(
            [row["row"], row["col"], *(row[n] for n in names), row["file"], row["infotext"]]
            + [row["scores"].get(k, "") for k in score_names]
        )
    return buffer.getvalue()
