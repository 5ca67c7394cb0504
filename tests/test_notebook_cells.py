"""Every notebook's JSON, as committed, is valid nbformat 4.5+ with an id on every cell, unique in its notebook (the
nbformat schema; without ids nbformat warns ``MissingIDFieldWarning`` and fills in random ones on every read)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 12


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_cell_has_a_unique_id(path: Path) -> None:
    raw = json.loads(path.read_text(encoding="utf-8"))  # as committed: nbformat.read would fill missing ids in
    assert (raw["nbformat"], raw["nbformat_minor"]) >= (4, 5)
    ids = [cell.get("id") for cell in raw["cells"]]
    assert None not in ids, [k for k, i in enumerate(ids) if i is None]
    assert len(set(ids)) == len(ids)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MissingIDFieldWarning and the like fail the test
        nbformat.validate(nbformat.from_dict(raw))  # ids match the schema's pattern and length
