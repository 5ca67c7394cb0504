"""Data-parallel training of the embedded model: 2 CPU processes (torchrun, gloo) vs 1 process, same run.

    python bench/distributed_training.py [--repeats 3] [--steps 30] [--batch 32]

Each round fine-tunes the shipped weights for ``--steps`` UNet steps of the same global batch, in alternating order:
1 process with 1 thread, 2 processes with 1 thread each (half the batch each, gradients averaged by DDP), and 1
process with 2 threads (the same cores as the two processes). The figure is the trainer's own seconds per step
(``unet_s_per_step`` in metrics.json: steps only, without starting Python, loading weights or caching latents);
throughput ratios are against 1 process with 1 thread, medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parents[1] / "sdkit" / "models" / "shapes" / "weights"
CONTESTANTS = {"1 process": (1, 1), "2 processes": (2, 1), "1 process, 2 threads": (1, 2)}  # (processes, threads)


def launch(processes: int, threads: int, steps: int, batch: int, folder: Path) -> float:
    """One training job; its seconds per step."""
    out = tempfile.mkdtemp(dir=folder)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
           "-m", "sdkit.models.shapes.train", "--out", out, "--device", "cpu", "--init-from", str(WEIGHTS),
           "--init-stage", "unet", "--skip-controlnet", "--unet-steps", str(steps), "--batch", str(batch),
           "--pool", "512", "--eval-n", "1", "--log-every", str(steps)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return float(json.loads((Path(out) / "metrics.json").read_text())["unet_s_per_step"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CONTESTANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            order = list(CONTESTANTS) if round_ % 2 == 0 else list(reversed(CONTESTANTS))
            for name in order:
                times[name].append(launch(*CONTESTANTS[name], args.steps, args.batch, Path(tmp)))
                print(f"round {round_ + 1} {name}: {times[name][-1]:.3f} s/step", flush=True)
    base = statistics.median(times["1 process"])
    print(f"\n{args.steps} UNet steps of batch {args.batch} (global), median of {args.repeats} rounds, os.cpu_count()="
          f"{os.cpu_count()}, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:22s} {median:.3f} s/step  throughput x{base / median:.2f}")


if __name__ == "__main__":
    main()
