"""The shapes scorecard on the distributed sweep's mechanism: two CPU processes (torchrun, gloo) render every image of
the scorecard once, each bit-identical to the single-process scorecard's, and score the same; a run whose worker is
killed resumes by rendering only the missing images. The oracle is ``scorecard.scorecard`` in this process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from distributed_fixtures import renders, torchrun
from PIL import Image

import sdkit
from sdkit.models.shapes import scorecard as sc
from sdkit.models.shapes import world

pytestmark = pytest.mark.usefixtures("one_thread")

N = 5
ROWS = [("one", 7.5), ("short", 1.0)]

WORKER = """
import os, signal, sys
import sdkit
from sdkit.distributed.group import join
from sdkit.models.shapes.scorecard import distributed_scorecard

out, die_after = sys.argv[1], int(sys.argv[2])
written = []
with join() as group:
    def on_cell(row, col):
        written.append((row, col))
        if group.rank == 1 and len(written) == die_after:
            os.kill(os.getpid(), signal.SIGKILL)  # as a preempted node
    kit = sdkit.load("shapes", device=group.device)
    distributed_scorecard(kit, [("one", 7.5), ("short", 1.0)], out=out, n=5, on_cell=on_cell, group=group)
"""


@pytest.fixture(scope="module")
def kit() -> sdkit.Kit:
    return sdkit.load("shapes")


@pytest.fixture(scope="module")
def reference(kit: sdkit.Kit) -> dict[tuple[str, float], tuple[list, dict]]:
    """Each row in this process: its images and its scores (what ``python -m ...scorecard`` prints)."""
    out = {}
    for row, cfg in ROWS:
        scenes = sc.row_scenes(row, N, 0)
        images = sc.generate_scenes(kit, scenes, seed=0, desc=row, cfg=cfg, steps=20, sampler="euler")
        out[(row, cfg)] = (images, sc.scorecard(kit, n=N, row=row, cfg=cfg))
    return out


def test_short_rows_are_colour_and_shape_only() -> None:
    captions = [world.caption(s) for s in sc.row_scenes("short", 50, 0)]
    assert all(len(c.split()) == 3 and c.startswith(("a ", "an ")) for c in captions), captions[:3]
    assert [s.things for s in sc.row_scenes("short", 50, 0)] == [s.things for s in sc.row_scenes("one", 50, 0)]
    thing = sc.row_scenes("short", 1, 0)[0].things[0]
    assert captions[0] == f"a {thing.color} {thing.kind}"
    with pytest.raises(ValueError, match="row must be one of"):
        sc.row_scenes("three", 1, 0)


def test_two_processes_render_the_single_process_scorecard(tmp_path: Path, reference) -> None:
    out = tmp_path / "card"
    proc = torchrun(tmp_path, "-m", "sdkit.models.shapes.scorecard", "--out", str(out), "-n", str(N), "--threads",
                    "1", "--rows", "one", "short", "--cfg", "7.5")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # rows one and short, both at CFG 7.5: the "one" row is the reference's
    log = renders(out)
    assert sorted((r, c) for r, c, _ in log) == [(r, c) for r in range(2) for c in range(N)]  # each image once
    assert {rank for *_, rank in log} == {0, 1}
    images, scores = reference[("one", 7.5)]
    for i in range(N):
        with Image.open(out / "cells" / f"r0-c{i}.png") as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(images[i])), i
    results = json.loads((out / "scorecard.json").read_text())
    assert results[0] == {"row": "one", "cfg": 7.5, "n": N, **scores}
    assert json.loads(proc.stdout.splitlines()[0]) == results[0]


def test_a_killed_worker_is_resumed_by_rendering_only_the_missing_images(tmp_path: Path, reference) -> None:
    (tmp_path / "worker.py").write_text(WORKER)
    out = tmp_path / "card"
    first = torchrun(tmp_path, "worker.py", str(out), "2")
    assert first.returncode != 0  # rank 1 died: the job failed
    before = renders(out)
    assert 2 <= len(before) < 2 * N
    second = torchrun(tmp_path, "worker.py", str(out), "0")
    assert second.returncode == 0, second.stderr[-3000:]
    after = renders(out)[len(before) :]
    assert sorted((r, c) for r, c, _ in before + after) == [(r, c) for r in range(2) for c in range(N)]
    results = json.loads((out / "scorecard.json").read_text())
    for k, (row, cfg) in enumerate(ROWS):
        images, scores = reference[(row, cfg)]
        assert results[k] == {"row": row, "cfg": cfg, "n": N, **scores}
        for i in range(N):
            with Image.open(out / "cells" / f"r{k}-c{i}.png") as im:
                assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(images[i])), (row, i)
