"""A 4 x 4 seed x CFG sweep of the embedded model over 2 CPU processes (torchrun, gloo) vs 1 process, same run.

    python bench/distributed_sweep.py [--repeats 3] [--steps 20]

Every round launches ``python -m torch.distributed.run --standalone --nproc_per_node N`` on this script's worker mode
for each contestant, in alternating order, each into a fresh output folder (nothing is resumed): 1 process with 1
thread, 2 processes with 1 thread each, and 1 process with 2 threads (the same cores as the two processes). The
worker reports the sweep's own time (``SweepResult.seconds``: rendering and writing the 16 cells, from the plan
until every process is done), which excludes starting Python, importing torch and loading the model; the launch's
wall time, which includes them, is printed too. ``max_batch`` is the default: the 16 cells split over the processes
(one batch of 16 for 1 process, 8 per process for 2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "a large red circle on the left, yellow background"
SEEDS = [1, 2, 3, 4]
CFGS = [1.0, 3.0, 7.5, 12.0]
CONTESTANTS = {"1 process": (1, 1), "2 processes": (2, 1), "1 process, 2 threads": (1, 2)}  # (processes, threads)


def worker(out: str, steps: int) -> None:
    """Under torchrun: the sweep on every rank; rank 0 prints its timing as one JSON line."""
    import sdkit
    from sdkit.distributed.group import join
    from sdkit.distributed.sweep import distributed_sweep

    with join() as group:
        kit = sdkit.load("shapes", device=group.device)
        result = distributed_sweep(kit, PROMPT, x=("cfg", CFGS), y=("seed", SEEDS), out=out, steps=steps,
                                   sampler="euler", group=group)  # fmt: skip
    if result is not None:
        print(json.dumps({"seconds": result.seconds, "max_batch": result.max_batch, "world": result.world_size}))


def launch(processes: int, threads: int, steps: int, folder: Path) -> tuple[float, float, dict]:
    """One torchrun job; (sweep seconds, wall seconds, the worker's report)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    out = tempfile.mkdtemp(dir=folder)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
           __file__, "--worker", out, "--steps", str(steps)]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    report = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("{")))
    return report["seconds"], wall, report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:
        worker(args.worker, args.steps)
        return
    import torch

    print(f"CPU: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}")
    sweep_s: dict[str, list[float]] = {name: [] for name in CONTESTANTS}
    wall_s: dict[str, list[float]] = {name: [] for name in CONTESTANTS}
    names = list(CONTESTANTS)
    with tempfile.TemporaryDirectory() as folder:
        launch(1, 1, 1, Path(folder))  # warm-up: file caches, the embedded model's weights
        for r in range(args.repeats):
            for name in names if r % 2 == 0 else names[::-1]:
                s, w, report = launch(*CONTESTANTS[name], args.steps, Path(folder))
                sweep_s[name].append(s)
                wall_s[name].append(w)
                print(f"  round {r}: {name}: sweep {s:.2f} s, launch {w:.1f} s (max_batch {report['max_batch']})")
    med = {name: statistics.median(v) for name, v in sweep_s.items()}
    wall = {name: statistics.median(v) for name, v in wall_s.items()}
    print(f"4x4 seed x CFG grid, shapes 64x64, {args.steps} Euler steps, median of {args.repeats}:")
    for name in names:
        print(f"  {name:22s} sweep {med[name]:6.2f} s   launch (with startup) {wall[name]:6.1f} s")
    ratio = med["1 process"] / med["2 processes"]
    fair = med["1 process, 2 threads"] / med["2 processes"]
    print(f"2 processes vs 1 process (1 thread each): {ratio:.2f}x the throughput")
    print(f"2 processes vs 1 process with 2 threads (the same cores): {fair:.2f}x")


if __name__ == "__main__":
    main()
