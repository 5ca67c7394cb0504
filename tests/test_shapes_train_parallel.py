"""The embedded model's trainer under torch.distributed: 2 processes (torchrun, gloo) x batch 16 take the same steps as
1 process x batch 32 and as 1 process x 2 accumulated micro-batches of 16; a run stopped part-way and resumed
continues the same curve.

The runs fine-tune the shipped weights (UNet stage, 20 steps, lr 3e-4), so the losses are those of a real model on
real batches. Tolerance: the losses differ only by the float rounding of other batch shapes, measured at 1.0e-6
relative at most (here, 2 cores, torch 2.14 CPU); the tests allow 1e-5. A resume from the full checkpoint gave
identical losses (difference 0.0); the tests allow 1e-6.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from distributed_fixtures import torchrun
from hypothesis import given, settings
from hypothesis import strategies as st

from sdkit.models.shapes.parallel import Split, take
from sdkit.models.shapes.train import main as train_main

pytestmark = pytest.mark.usefixtures("one_thread")

WEIGHTS = Path(__file__).resolve().parents[1] / "sdkit" / "models" / "shapes" / "weights"
FINE_TUNE = ["--device", "cpu", "--init-from", str(WEIGHTS), "--init-stage", "unet", "--skip-controlnet",
             "--unet-steps", "20", "--batch", "32", "--pool", "256", "--eval-n", "1", "--log-every", "5",
             "--warmup", "5", "--unet-lr", "3e-4"]  # fmt: skip
REL_TOL = 1e-5


def torchrun_ok(cwd: Path, *argv: str) -> None:
    proc = torchrun(cwd, *argv)
    assert proc.returncode == 0, proc.stderr[-4000:]


def train_2(out: Path, *extra: str) -> None:
    torchrun_ok(out.parent, "-m", "sdkit.models.shapes.train", "--out", str(out), *FINE_TUNE, *extra)


def losses(out: Path, stage: str = "unet") -> np.ndarray:
    rows = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    return np.array([r["loss"] for r in rows if r["stage"] == stage])


def rel(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b) / np.abs(a)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("parallel")
    one, two = root / "one", root / "two"
    train_main(["--out", str(one), *FINE_TUNE])
    train_2(two)
    return {"one": one, "two": two, "root": root}


def test_two_processes_of_16_take_the_steps_of_one_process_of_32(runs: dict[str, Path]) -> None:
    one, two = losses(runs["one"]), losses(runs["two"])
    assert len(one) == 20 and np.all(np.isfinite(one))
    assert rel(one, two) <= REL_TOL
    log = (runs["two"] / "train.log").read_text()
    assert "batch 32 = 2 process(es) x 1 micro-batch(es)" in log
    a = torch.load(runs["one"] / "checkpoint.pt", weights_only=True)["unet"]
    b = torch.load(runs["two"] / "checkpoint.pt", weights_only=True)["unet"]
    moved = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert moved <= 1e-5, moved  # the same weights, not only the same losses
    start = torch.load(runs["one"] / "checkpoint.pt", weights_only=True)
    assert start["samples"]["unet"] == 20 * 32


def test_accumulating_two_micro_batches_of_16_equals_one_batch_of_32(runs: dict[str, Path]) -> None:
    out = runs["root"] / "accumulate"
    train_main(["--out", str(out), *FINE_TUNE, "--accumulate", "2"])
    assert rel(losses(runs["one"]), losses(out)) <= REL_TOL


def test_a_stopped_run_resumes_on_the_same_curve(runs: dict[str, Path]) -> None:
    out = runs["root"] / "stopped"
    train_2(out, "--run-steps", "10")
    assert len(losses(out)) == 10 and (out / "checkpoint.pt").exists()
    info = json.loads((out / "model" / "sdkit.json").read_text())
    assert info["training"] == {"stage": "unet", "step": 10, "samples": {"unet": 320}}
    train_2(out, "--resume")
    assert rel(losses(runs["two"]), losses(out)) <= 1e-6


def test_resuming_from_the_fp16_ema_weights_alone_continues_the_curve(runs: dict[str, Path]) -> None:
    """What outlives a lent GPU is the exported folder (fp16 EMA weights and the step): a resume from it re-warms a
    fresh optimizer and goes on from step 10, close to the uninterrupted run, far from a fresh start."""
    out = runs["root"] / "weights-only"
    train_main(["--out", str(out), *FINE_TUNE, "--run-steps", "10"])
    (out / "checkpoint.pt").unlink()
    with open(out / "losses.jsonl", "a") as f:  # a row written after the export, by a run killed later
        f.write(json.dumps({"stage": "unet", "step": 11, "samples": 352, "loss": 9.0, "lr_factor": 1.0}) + "\n")
    train_main(["--out", str(out), *FINE_TUNE, "--resume"])
    steps = [json.loads(line)["step"] for line in (out / "losses.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 21))  # one curve: the stale row is gone
    straight, resumed = losses(runs["one"])[10:], losses(out)[10:]
    assert abs(resumed.mean() / straight.mean() - 1) <= 0.10, (resumed.mean(), straight.mean())
    assert "optimizer re-warmed" in (out / "train.log").read_text()


def test_every_stage_trains_data_parallel(tmp_path: Path) -> None:
    """VAE, UNet and ControlNet stages from scratch (the ControlNet stage alternates its two networks: DDP must allow
    unused parameters): 2 processes x batch 2 give 1 process x batch 4's losses."""
    args = ["--device", "cpu", "--vae-steps", "2", "--unet-steps", "2", "--controlnet-steps", "2", "--batch", "4",
            "--pool", "32", "--eval-n", "1", "--log-every", "1"]  # fmt: skip
    train_main(["--out", str(tmp_path / "one"), *args])
    torchrun_ok(tmp_path, "-m", "sdkit.models.shapes.train", "--out", str(tmp_path / "two"), *args)
    for stage in ("vae", "unet", "controlnet"):
        one, two = losses(tmp_path / "one", stage), losses(tmp_path / "two", stage)
        assert len(one) == 2
        assert rel(one, two) <= REL_TOL, stage


def test_a_batch_that_does_not_split_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="divisible by 3"):
        train_main(["--out", str(tmp_path), *FINE_TUNE, "--batch", "32", "--accumulate", "3", "--unet-steps", "1"])


@given(world=st.integers(1, 8), accumulate=st.integers(1, 4), per_part=st.integers(1, 6))
@settings(max_examples=200, deadline=None)
def test_any_split_partitions_the_batch_into_equal_shares(world: int, accumulate: int, per_part: int) -> None:
    batch = world * accumulate * per_part
    Split(0, world, accumulate).check(batch, "unet")
    shares = [Split(rank, world, accumulate).micro_slices(batch) for rank in range(world)]
    flat = [i for parts in shares for part in parts for i in range(part.start, part.stop)]
    assert flat == list(range(batch))  # every sample once, rank by rank, in order
    assert {part.stop - part.start for parts in shares for part in parts} == {per_part}
    if world * accumulate > 1:  # one sample more no longer splits
        with pytest.raises(ValueError, match="divisible"):
            Split(0, world, accumulate).check(batch + 1, "unet")


def test_micro_batches_partition_the_global_batch() -> None:
    seen = []
    for rank in range(4):
        parts = Split(rank, 4, 2).micro_slices(32)
        assert [p.stop - p.start for p in parts] == [4, 4]
        seen += [i for p in parts for i in range(p.start, p.stop)]
    assert sorted(seen) == list(range(32))
    batch = {"x": torch.arange(8), "scenes": {"y": torch.arange(8) * 2}, "pose": True}
    part = take(batch, slice(2, 4))
    assert part["x"].tolist() == [2, 3] and part["scenes"]["y"].tolist() == [4, 6] and part["pose"] is True


def test_bf16_autocast_takes_the_fp32_steps_up_to_rounding(runs: dict[str, Path], tmp_path: Path) -> None:
    """Mixed precision (bf16 autocast, as on GPUs; here on the CPU): the first step, taken from the same weights on the
    same batch, has the fp32 loss within bf16's rounding."""
    train_main(["--out", str(tmp_path), *FINE_TUNE, "--unet-steps", "2", "--precision", "bf16"])
    assert "bf16" in (tmp_path / "train.log").read_text()
    mixed, full = losses(tmp_path)[0], losses(runs["one"])[0]
    assert mixed != full and abs(mixed / full - 1) <= 0.02, (mixed, full)


def test_a_time_budget_can_pause_a_stage_for_the_next_window(tmp_path: Path) -> None:
    """``--pause-at-budget``: a GPU window that ends mid-stage stops with the checkpoint and a resumable export (not a
    finished stage), and the next window goes on from that step to the stage's end."""
    args = [*FINE_TUNE, "--unet-steps", "100000", "--batch", "8", "--pool", "64"]
    train_main(["--out", str(tmp_path), *args, "--time-budget-s", "40", "--pause-at-budget"])
    record = json.loads((tmp_path / "model" / "sdkit.json").read_text())["training"]
    paused = record["step"]
    assert record["stage"] == "unet" and 1 <= paused < 100000 and record["samples"]["unet"] == 8 * paused
    assert "paused at stage unet" in (tmp_path / "train.log").read_text()
    train_main(["--out", str(tmp_path), *FINE_TUNE, "--unet-steps", str(paused + 2), "--batch", "8", "--pool", "64",
                "--resume"])  # fmt: skip
    steps = [json.loads(line)["step"] for line in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert steps == list(range(1, paused + 3))
    assert "training" not in json.loads((tmp_path / "model" / "sdkit.json").read_text())  # the stage finished
