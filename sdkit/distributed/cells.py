"""A sweep's output folder: one PNG per cell, written whole as soon as the cell is rendered.

    out/sweep.json            the sweep's definition (a rerun with another definition is refused)
    out/cells/r0-c3.png       cell (row 0, column 3) with its infotext; the cell is done iff this file exists
    out/cells/r0-c3.safetensors   its latents, when the sweep keeps them (written before the PNG)
    out/renders.log           one JSON line per rendered cell: which cell, which rank and process
    out/table.csv, table.json, grid.png   rank 0's results, once every cell is done

Files appear whole or not at all (``sdkit.image_files.write_file``: a temporary file beside the target, then a
link or rename), so a process killed at any moment leaves only complete cells and stray temporary files, which the
next run deletes before anyone writes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sdkit.image_files import write_file

SUFFIXES = (".safetensors", ".png")  # in writing order: the PNG last, since it marks the cell done


class CellFolder:
    """The files of a ``rows`` x ``cols`` sweep under ``path``."""

    def __init__(self, path: str | Path, rows: int, cols: int) -> None:
        self.path = Path(path)
        self.cells = self.path / "cells"
        self.rows, self.cols = rows, cols
        self._width = (len(str(rows - 1)), len(str(cols - 1)))

    def name(self, row: int, col: int) -> str:
        """``"r03-c1"``: zero-padded, so that the files sort in grid order."""
        return f"r{row:0{self._width[0]}d}-c{col:0{self._width[1]}d}"

    def file(self, row: int, col: int, suffix: str = ".png") -> Path:
        return self.cells / f"{self.name(row, col)}{suffix}"

    def prepare(self, definition: dict[str, Any]) -> None:
        """Create the folder, or check that it holds this same sweep; then delete temporary files that killed
        processes left. Every process calls it (each sees its own file system) before any of them writes a cell."""
        manifest = self.path / "sweep.json"
        wanted = json.loads(json.dumps(definition))  # tuples as lists, as the file holds them
        if manifest.exists():
            try:
                found = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise ValueError(f"out: {manifest} is not a sweep definition ({e}); use another folder") from None
            differs = [k for k in [*wanted, *found] if wanted.get(k) != found.get(k)]
            if differs:
                k = differs[0]
                raise ValueError(
                    f"out: {self.path} holds another sweep ({k}: {found.get(k)!r} there, {wanted.get(k)!r} here); "
                    "use another folder, or the same definition to resume it"
                )
        self.cells.mkdir(parents=True, exist_ok=True)
        if not manifest.exists():
            lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in definition.items()]  # a line per key
            data = ("{\n" + ",\n".join(lines) + "\n}\n").encode()
            try:
                write_file(manifest, data, overwrite=False)
            except FileExistsError:  # another process of this job wrote it meanwhile
                pass
        for stray in self.cells.glob(".*.tmp"):
            stray.unlink(missing_ok=True)

    def done(self) -> set[tuple[int, int]]:
        """The cells whose PNG exists."""
        return {(r, c) for r in range(self.rows) for c in range(self.cols) if self.file(r, c).exists()}

    def write(self, row: int, col: int, generation: Any, latents: Any = None) -> bool:
        """Write one cell: ``generation`` (a ``Kit.Generation`` of one image) as a PNG with its infotext, after its
        latents (a tensor) when given. False if the cell was already there (another process of a duplicate job)."""
        if latents is not None:
            from safetensors.torch import save

            write_file(self.file(row, col, ".safetensors"), save({"latents": latents.contiguous()}), overwrite=True)
        try:
            generation.save(str(self.file(row, col)), overwrite=False)
        except FileExistsError:
            return False
        return True

    def read(self, row: int, col: int) -> tuple[Any, str, Any]:
        """A done cell: its PIL image, its infotext and its latents (None unless the sweep kept them)."""
        from sdkit.image_files import open_image

        image = open_image(self.file(row, col))
        latents = None
        if self.file(row, col, ".safetensors").exists():
            from safetensors.torch import load_file

            latents = load_file(str(self.file(row, col, ".safetensors")))["latents"]
        return image, str(image.info.get("parameters", "")), latents

    def read_bytes(self, row: int, col: int) -> dict[str, bytes]:
        """A done cell's files as bytes, by suffix (to send them to a process that cannot see them)."""
        return {s: self.file(row, col, s).read_bytes() for s in SUFFIXES if self.file(row, col, s).exists()}

    def write_bytes(self, row: int, col: int, files: dict[str, bytes]) -> None:
        for suffix in SUFFIXES:
            if suffix in files and not self.file(row, col, suffix).exists():
                write_file(self.file(row, col, suffix), files[suffix], overwrite=False)

    def log(self, row: int, col: int, rank: int) -> None:
        """Append one line to ``renders.log`` (one ``write`` of a short line in append mode: whole lines, even
        from several processes at once)."""
        line = json.dumps({"cell": self.name(row, col), "row": row, "col": col, "rank": rank, "pid": os.getpid()})
        with open(self.path / "renders.log", "a", encoding="utf-8") as f:
            f.write(line + "\n")


def collect(group: Any, folder: CellFolder) -> None:
    """Send rank 0 the cells it cannot see (each machine writes to its own disk unless the folder is shared)."""
    everything = {(r, c) for r in range(folder.rows) for c in range(folder.cols)}
    lacking = group.broadcast(sorted(everything - folder.done()) if group.is_main else None)
    if not lacking or group.world_size == 1:
        return
    mine = {} if group.is_main else {rc: folder.read_bytes(*rc) for rc in lacking if folder.file(*rc).exists()}
    received = group.gather(mine)
    for part in received or []:
        for (r, c), files in part.items():
            folder.write_bytes(r, c, files)
    if group.is_main and (missing := everything - folder.done()):
        raise RuntimeError(f"cells {sorted(missing)[:5]} are on no process's disk after the sweep")
