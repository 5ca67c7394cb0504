"""Every notebook in notebooks/ runs top to bottom, headless, without errors (their assert cells check what they
show). The kernel is ``python3``: in CI that is the activated virtualenv's ipykernel."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
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
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError (with the failing cell and traceback) on any error
    elapsed = time.perf_counter() - start
    errors = [o for c in book.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert elapsed < 120, f"{path.name} took {elapsed:.0f} s; notebooks must stay small"
