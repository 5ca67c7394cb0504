"""Every notebook in notebooks/ runs top to bottom, headless, without errors (their assert cells check what they
show), and every cell that plots shows its figure as an image. The kernel is ``python3``: in CI that is the
activated virtualenv's ipykernel. Under ``MPLBACKEND=Agg`` nothing draws a figure at the end of a cell, so an image
appears only where the cell's value shows itself (``sdkit.viz`` figures, ``Image``, ``Grid``...), as in a docs
build; in JupyterLab the same cells show the same single image.

A notebook that passes is saved with its outputs to ``build/executed/notebooks/NAME.ipynb`` (gitignored): the docs
site (``mkdocs build``, see ``docs/build.py``) renders those copies instead of running the notebooks again."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
EXECUTED = Path(__file__).resolve().parent.parent / "build" / "executed" / "notebooks"

# a cell plots when it calls an sdkit.viz plot (``plot_*``, ``.plot(``, the explorer's ``.static(``), builds a
# ``Grid``, or draws with matplotlib itself (pyplot, a ``Figure``, an Axes drawing method)
PLOTTING = re.compile(
    r"\bplot_\w+\(|\.plot\(|\.static\(|\bGrid\(|\bplt\.|\bFigure\("
    r"|\.(imshow|scatter|bar|barh|hist|semilogy|semilogx|loglog|pcolormesh|contourf?)\("
)
# how matplotlib objects print when nothing showed them as an image
UNSHOWN = ("<Figure size", "<Axes:")


def plotting_cells(book) -> list[int]:
    return [k for k, c in enumerate(book.cells) if c.cell_type == "code" and PLOTTING.search(c.source)]


def images(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def unshown(cell) -> list[str]:
    """Outputs that are only the text of a figure (every output also carries text/plain next to its image)."""
    data = [o.get("data", {}) for o in cell.get("outputs", [])]
    return [d["text/plain"] for d in data if "image/png" not in d and d.get("text/plain", "").startswith(UNSHOWN)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    # committed notebooks carry no outputs (they are stripped before committing)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in book.cells if c.cell_type == "code")
    assert 'MODEL = "shapes"' in book.cells[next(i for i, c in enumerate(book.cells) if c.cell_type == "code")].source
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    client = nbclient.NotebookClient(
        book,
        timeout=300,  # per cell
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        env=env,
    )
    client.execute()  # raises CellExecutionError (with the failing cell and traceback) on any error
    errors = [o for c in book.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    plotting = plotting_cells(book)
    shown = sum(images(book.cells[k]) for k in plotting)
    print(f"{path.stem}: {len(plotting)} plotting cells, {shown} images in them, {sum(map(images, book.cells))} in all")
    blank = {k: book.cells[k].source.splitlines()[-1] for k in plotting if not images(book.cells[k])}
    assert not blank, f"{path.name}: cells that plot but show no image (cell: last line): {blank}"
    text = {k: t for k, c in enumerate(book.cells) for t in unshown(c)}
    assert not text, f"{path.name}: figures shown as text: {text}"
    EXECUTED.mkdir(parents=True, exist_ok=True)
    partial = EXECUTED / f".{path.name}.partial"
    nbformat.write(book, partial)
    partial.replace(EXECUTED / path.name)  # whole or not at all: the docs build takes any copy it finds
