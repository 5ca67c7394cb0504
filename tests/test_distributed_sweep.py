"""Distributed sweeps: two CPU processes (torchrun, gloo) give the single-process sweep's cells bit for bit, render
each cell once, and a sweep whose worker is killed resumes by rendering only the missing cells.

The oracle is ``sdkit.sweep.sweep`` in this process over the same grid and the same ``max_batch``: batching changes
float rounding, so equality is only expected because each process batches exactly the cells the single-process
sweep batches together. Cells are compared as latents (saved beside each PNG) with ``torch.equal`` and as pixels.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from distributed_fixtures import renders, torchrun
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from sdkit.distributed.config import AXIS_PARAMS, load_config, parse_config
from sdkit.distributed.plan import assign, cost, work_items
from sdkit.distributed.sweep import distributed_sweep
from sdkit.sweep import SWEEPABLE, batches, lockstep_groups, plan, sweep

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "a red circle"
SMALL = {"steps": 3, "width": 32, "height": 32}
CFGS, SEEDS = [1.0, 3.0, 7.5, 12.0], [1, 2, 3, 4]
SAMPLERS, STEPS = ["euler", "heun", "dpmpp_2m"], [1, 2, 3]

# Launched by torchrun in the tests below: runs a sweep file with the Python API, optionally as if every process
# had its own disk (its own output folder), or with rank 1 killing itself (SIGKILL) after writing some cells.
WORKER = """
import os, signal, sys
import sdkit
from sdkit.distributed.config import load_config
from sdkit.distributed.group import join
from sdkit.distributed.sweep import distributed_sweep

config = load_config(sys.argv[1])
die_after = int(sys.argv[2])
own_disks = sys.argv[3] == "own-disks"
written = []
with join() as group:
    def on_cell(row, col):
        written.append((row, col))
        if group.rank == 1 and len(written) == die_after:
            os.kill(os.getpid(), signal.SIGKILL)  # as a preempted node: no cleanup, no goodbye
    out = config.out + (f"-rank{group.rank}" if own_disks else "")
    kit = sdkit.load(config.model, device=group.device)
    distributed_sweep(kit, config.prompt, config.x, config.y, out=out, max_batch=config.max_batch,
                      lockstep=config.lockstep, latents=config.latents, on_cell=on_cell, group=group, **config.fixed)
"""


def cell_latents(out: Path, row: int, col: int) -> torch.Tensor:
    return load_file(str(out / "cells" / f"r{row}-c{col}.safetensors"))["latents"]


def assert_cell_equals(out: Path, row: int, col: int, grid, r: int, c: int) -> None:
    """Cell (row, col) on disk is bit-identical to cell (r, c) of a single-process grid."""
    assert torch.equal(cell_latents(out, row, col), grid.latents[r][c].tensor), (row, col)
    from PIL import Image

    with Image.open(out / "cells" / f"r{row}-c{col}.png") as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(grid.images[r][c])), (row, col)


def write_config(tmp_path: Path, name: str, model: Path, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text.replace("MODEL", str(model)))
    return path


SEED_CFG_TOML = """
model = "MODEL"
prompt = "a red circle"
latents = true
max_batch = MAX
[fixed]
steps = 3
width = 32
height = 32
[x]
param = "cfg"
values = [1.0, 3.0, 7.5, 12.0]
[y]
param = "seed"
values = [1, 2, 3, 4]
"""


# ------------------------------------------------------------------ two processes against one


def test_two_processes_give_the_single_process_seed_cfg_grid(tmp_path, tiny_sd1_folder, tiny_sd1_kit):
    config = write_config(tmp_path, "grid.toml", tiny_sd1_folder, SEED_CFG_TOML.replace("max_batch = MAX\n", ""))
    proc = torchrun(tmp_path, "-m", "sdkit.cli", "sweep", str(config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "grid"
    # max_batch defaults to the 16 cells split over 2 processes: two batches of 8, one per process
    assert json.loads((out / "sweep.json").read_text())["max_batch"] == 8
    reference = sweep(tiny_sd1_kit, PROMPT, x=("cfg", CFGS), y=("seed", SEEDS), max_batch=8, **SMALL)
    for r in range(4):
        for c in range(4):
            assert_cell_equals(out, r, c, reference, r, c)
    log = renders(out)
    assert sorted((r, c) for r, c, _ in log) == [(r, c) for r in range(4) for c in range(4)]  # each cell once
    assert sorted({rank for *_, rank in log}) == [0, 1]  # and both processes worked (8 cells each)
    assert sum(rank == 1 for *_, rank in log) == 8
    table = json.loads((out / "table.json").read_text())
    assert len(table) == 16 and (out / "grid.png").exists()
    row = next(t for t in table if t["row"] == 2 and t["col"] == 3)
    assert row["seed"] == 3 and row["cfg"] == 12.0 and row["file"] == "cells/r2-c3.png"
    # A1111's infotext layout: prompt line, then "Steps: 3, Sampler: Euler, ... CFG scale: 12, Seed: 3, Size: 32x32"
    assert row["infotext"].splitlines()[0] == PROMPT
    assert "CFG scale: 12, Seed: 3, Size: 32x32" in row["infotext"] and "Steps: 3" in row["infotext"]
    assert str(out / "table.csv") in proc.stdout


def test_two_processes_give_the_single_process_sampler_grid_without_a_shared_disk(
    tmp_path, tiny_sd1_folder, tiny_sd1_kit
):
    """3 samplers x 3 step counts, lockstep-batched: 9 runs in two lockstep groups of 5 and 4 cells (max_batch 5),
    one per process. Each process writes to its own folder, as machines without a shared file system: rank 0 gets
    rank 1's cells sent over the process group."""
    config = write_config(
        tmp_path,
        "samplers.json",
        tiny_sd1_folder,
        json.dumps(
            {
                "model": "MODEL",
                "prompt": PROMPT,
                "latents": True,
                "fixed": {"seed": 7, "width": 32, "height": 32},
                "x": {"param": "steps", "values": STEPS},
                "y": {"param": "sampler", "values": SAMPLERS},
            }
        ),
    )
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    proc = torchrun(tmp_path, str(worker), str(config), "0", "own-disks")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = tmp_path / "samplers-rank0", tmp_path / "samplers-rank1"
    reference = sweep(tiny_sd1_kit, PROMPT, x=("steps", STEPS), y=("sampler", SAMPLERS), seed=7, max_batch=5,
                      width=32, height=32)  # fmt: skip
    assert reference.batches == 9
    for r in range(3):
        for c in range(3):
            assert_cell_equals(rank0, r, c, reference, r, c)
    log0, log1 = renders(rank0), renders(rank1)
    # row-major cells 0-4 (euler x 3, heun x 2) on rank 0, cells 5-8 on rank 1; each rendered once
    assert sorted(3 * r + c for r, c, _ in log0) == [0, 1, 2, 3, 4] and {k for *_, k in log0} == {0}
    assert sorted(3 * r + c for r, c, _ in log1) == [5, 6, 7, 8] and {k for *_, k in log1} == {1}
    assert len(list((rank1 / "cells").glob("*.png"))) == 4  # rank 1's disk holds only its own cells
    assert len(json.loads((rank0 / "table.json").read_text())) == 9 and not (rank1 / "table.json").exists()


def test_a_killed_worker_leaves_whole_cells_and_the_rerun_renders_only_the_missing(
    tmp_path, tiny_sd1_folder, tiny_sd1_kit
):
    """max_batch 2: 8 items of 2 cells, 4 per process. Rank 1 is SIGKILLed after writing 3 cells (in the middle of
    its second item); torchrun then stops rank 0 wherever it is. The rerun (the CLI, same file) renders exactly the
    cells without a file."""
    config = write_config(tmp_path, "resume.toml", tiny_sd1_folder, SEED_CFG_TOML.replace("MAX", "2"))
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    killed = torchrun(tmp_path, str(worker), str(config), "3", "shared")
    assert killed.returncode != 0
    out = tmp_path / "resume"
    before = {p.name: p.read_bytes() for p in (out / "cells").glob("*.png")}
    first = renders(out)
    assert sum(rank == 1 for *_, rank in first) == 3
    assert len(before) == len(first) < 16
    missing = {(r, c) for r in range(4) for c in range(4)} - {(r, c) for r, c, _ in first}

    proc = torchrun(tmp_path, "-m", "sdkit.cli", "sweep", str(config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    second = renders(out)[len(first) :]
    assert sorted((r, c) for r, c, _ in second) == sorted(missing)  # only the missing cells, each once
    assert {p.name: p.read_bytes() for p in (out / "cells").glob("*.png") if p.name in before} == before
    assert not list((out / "cells").glob(".*"))  # no temporary files left
    reference = sweep(tiny_sd1_kit, PROMPT, x=("cfg", CFGS), y=("seed", SEEDS), max_batch=2, **SMALL)
    for r in range(4):
        for c in range(4):
            partner = (r, c ^ 1)  # the cell that shares its batch of 2 (row-major pairs)
            if (r, c) in missing and partner not in missing:
                # its item was half written: rendered alone now, as the single-process sweep of that one cell does
                alone = sweep(tiny_sd1_kit, PROMPT, x=("cfg", [CFGS[c]]), y=("seed", [SEEDS[r]]), **SMALL)
                assert_cell_equals(out, r, c, alone, 0, 0)
            else:
                assert_cell_equals(out, r, c, reference, r, c)
    assert len(json.loads((out / "table.json").read_text())) == 16


# ------------------------------------------------------------------ one process: the same code path, in-process


def test_in_process_sweep_equals_sweep_and_resumes_only_missing_cells(tmp_path, tiny_sd1_kit):
    kit, out = tiny_sd1_kit, tmp_path / "out"
    axes = {"x": ("cfg", CFGS[:3]), "y": ("seed", SEEDS[:2])}
    result = distributed_sweep(kit, PROMPT, **axes, out=out, latents=True, scorers=["prompt_following"], **SMALL)
    assert result is not None and result.max_batch == 6 and (result.rendered, result.skipped) == (6, 0)
    reference = sweep(kit, PROMPT, **axes, **SMALL)
    for r in range(2):
        for c in range(3):
            assert_cell_equals(out, r, c, reference, r, c)
            assert torch.equal(result.grid.latents[r][c].tensor, reference.latents[r][c].tensor)
    assert result.grid.x_labels == reference.x_labels and result.grid.y_labels == reference.y_labels
    assert all(set(row["scores"]) == {"color", "shape", "all"} for row in result.table)  # "a red circle" asks both
    kept = (out / "cells" / "r0-c0.png").stat().st_mtime_ns
    for name in ("r0-c1.png", "r1-c2.png"):
        (out / "cells" / name).unlink()
    (out / "cells" / ".r0-c1.png.0123abcd.tmp").write_bytes(b"half a file")  # a killed process's leftover
    again = distributed_sweep(kit, PROMPT, **axes, out=out, latents=True, **SMALL)
    assert again is not None and (again.rendered, again.skipped) == (2, 4)
    assert [(r, c) for r, c, _ in renders(out)[6:]] == [(0, 1), (1, 2)]
    assert (out / "cells" / "r0-c0.png").stat().st_mtime_ns == kept
    assert not (out / "cells" / ".r0-c1.png.0123abcd.tmp").exists()
    # the two missing cells were one batch of 2 now: equal to the single-process sweep of those two cells
    pair = sweep(kit, PROMPT, x=(("cfg", "seed"), [(CFGS[1], SEEDS[0]), (CFGS[2], SEEDS[1])]), y=None, **SMALL)
    assert_cell_equals(out, 0, 1, pair, 0, 0)
    assert_cell_equals(out, 1, 2, pair, 0, 1)


def test_another_sweep_in_the_same_folder_is_refused(tmp_path, tiny_sd1_kit):
    out = tmp_path / "out"
    distributed_sweep(tiny_sd1_kit, PROMPT, x=("cfg", [1.0]), out=out, seed=1, **SMALL)
    with pytest.raises(ValueError, match=r"holds another sweep \(x: "):
        distributed_sweep(tiny_sd1_kit, PROMPT, x=("cfg", [2.0]), out=out, seed=1, **SMALL)
    with pytest.raises(ValueError, match="seed: a resumable sweep needs explicit seeds"):
        distributed_sweep(tiny_sd1_kit, PROMPT, x=("cfg", [1.0]), out=tmp_path / "b", **SMALL)
    with pytest.raises(TypeError, match="sampler: a distributed sweep records"):
        distributed_sweep(tiny_sd1_kit, PROMPT, x=("sampler", [lambda *a, **k: None]), out=tmp_path / "c", seed=1)


# ------------------------------------------------------------------ the split itself


def test_work_items_are_the_single_process_batches(tiny_sd1_kit):
    cells, _ = plan(tiny_sd1_kit, PROMPT, ("steps", STEPS), ("sampler", SAMPLERS), {"seed": 1})
    runs = batches(cells, 5)
    items = work_items(cells, 5)
    assert [[(c.row, c.col) for c in item] for item in items] == [
        [(c.row, c.col) for k in group for c in runs[k]] for group in lockstep_groups(runs, 5)
    ]
    assert [len(i) for i in items] == [5, 4] and [len(i) for i in work_items(cells, 5, lockstep=False)] == [1] * 9
    done = {(0, 0), (2, 2)}
    assert sorted((c.row, c.col) for i in work_items(cells, 5, done=done) for c in i) == sorted(
        (c.row, c.col) for c in cells if (c.row, c.col) not in done
    )


class FakeCell:
    def __init__(self, steps: int) -> None:
        self.params = type("P", (), {"steps": steps})()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(1, 50), min_size=1, max_size=4), max_size=30), st.integers(1, 8))
def test_assign_is_list_scheduling(item_steps, world_size):
    """Every item goes to one rank; the busiest rank carries at most the average load plus one item (Graham 1969,
    the bound of list scheduling), and the assignment is a function of the items alone."""
    items = [[FakeCell(s) for s in steps] for steps in item_steps]
    owners = assign(items, world_size)
    assert len(owners) == len(items) and all(0 <= o < world_size for o in owners)
    loads = [sum(cost(i) for i, o in zip(items, owners, strict=True) if o == r) for r in range(world_size)]
    if items:
        assert max(loads) <= sum(loads) / world_size + max(cost(i) for i in items)
    assert assign(items, world_size) == owners


# ------------------------------------------------------------------ the sweep file


def test_toml_and_json_files_give_the_same_sweep(tmp_path):
    toml = write_config(tmp_path, "a.toml", Path("m"), SEED_CFG_TOML.replace("MAX", "4"))
    data = {
        "model": "MODEL",
        "prompt": PROMPT,
        "latents": True,
        "max_batch": 4,
        "fixed": {"steps": 3, "width": 32, "height": 32},
        "x": {"param": "cfg", "values": CFGS},
        "y": {"param": "seed", "values": SEEDS},
    }
    js = write_config(tmp_path, "a.json", Path("m"), json.dumps(data))
    a, b = load_config(toml), load_config(js)
    assert a == b and a.x == ("cfg", CFGS) and a.y == ("seed", SEEDS) and a.out == str(tmp_path / "a")
    paired = parse_config(
        {**data, "fixed": {}, "x": {"param": ["steps", "seed"], "values": [[5, 1], [10, 2]]}, "y": None}
    )
    assert paired.x == (("steps", "seed"), [(5, 1), (10, 2)])
    assert set(AXIS_PARAMS) == SWEEPABLE


BASE = {"model": "shapes", "prompt": PROMPT, "fixed": {"seed": 1}, "x": {"param": "cfg", "values": [1, 2]}}


@pytest.mark.parametrize(
    "change,match",
    [
        ({"colour": 1}, "unknown key 'colour'"),
        ({"prompt": 3}, "prompt must be a string"),
        ({"fixed": {"seed": 1, "batch_size": 2}}, "fixed.batch_size is not a parameter"),
        ({"fixed": {"seed": -1}}, r"fixed.seed \(seed\) must be in \[0, 2\^64\)"),
        ({"fixed": {}}, "seed is missing"),
        ({"fixed": {"seed": 1, "steps": 0}}, r"fixed.steps \(steps\) must be an integer in \[1, 10000\]"),
        ({"x": {"param": "batch_size", "values": [1]}}, "cannot sweep over 'batch_size'"),
        ({"x": {"param": "cfg", "values": []}}, "x.values must be a non-empty list"),
        ({"x": {"param": "sampler", "values": ["euler", "bogus"]}}, r"x.values\[1\]: unknown sampler"),
        ({"x": {"param": ["cfg", "steps"], "values": [[1, 2], [3]]}}, r"x.values\[1\] must be a list of 2"),
        ({"x": {"param": "seed", "values": [1, 2]}}, "seed is given twice"),
        ({"scores": ["beauty"]}, "scores must be a list of prompt_following"),
        ({"max_batch": 0}, "max_batch must be an integer >= 1"),
    ],
)
def test_bad_sweep_files_name_the_key(change, match):
    with pytest.raises((ValueError, TypeError), match=match):
        parse_config({**BASE, **change})


PROBE = """
import json, sys
from sdkit.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "torch": "torch" in sys.modules}))
"""


@pytest.mark.parametrize(
    "text,suffix,match",
    [
        (None, ".toml", "no such file"),
        ("model = 'shapes'\nprompt = [", ".toml", "is not valid TOML"),
        ('{"model": "shapes", "prompt": "a"}', ".json", "seed is missing"),
        ("", ".yaml", "must be a .json or .toml file"),
    ],
)
def test_cli_reports_a_bad_sweep_file_before_importing_torch(tmp_path, text, suffix, match):
    path = tmp_path / f"sweep{suffix}"
    if text is not None:
        path.write_text(text)
    proc = subprocess.run([sys.executable, "-c", PROBE, "sweep", str(path)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"rc": 2, "torch": False}
    assert proc.stderr.startswith("sdkit sweep: error: config") and match in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_scorer_reads_the_shapes_world():
    """The prompt-following scorer on images with a known answer: a rendered scene of the world scores 1 on every
    attribute its caption asks for; a blank image scores 0; a prompt outside the world's grammar scores nothing."""
    from PIL import Image

    from sdkit.distributed.scores import prompt_following
    from sdkit.models.shapes import world

    def params(prompt: str) -> object:
        return type("P", (), {"prompt": prompt})()

    scene = world.sample_scenes(1, 3, person_fraction=0.0, two_fraction=0.0, full_caption=True)[0]
    pixels = (world.render([scene])[0].permute(1, 2, 0) * 255).round().byte().numpy()
    scores = prompt_following(Image.fromarray(pixels), params(world.caption(scene)))
    assert {"color", "shape", "all"} <= set(scores) and all(v == 1.0 for v in scores.values())
    assert prompt_following(Image.new("RGB", (64, 64), "white"), params(PROMPT))["all"] == 0.0
    assert prompt_following(Image.new("RGB", (64, 64)), params("a photo of a cat")) == {}
