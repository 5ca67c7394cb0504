"""How many torch threads one image wants on a small machine: ``sdkit generate`` with 1, 2, ... threads.

    python bench/cli_threads.py [--threads 1 2] [--repeats 5] [--steps 20]

Two views, each interleaved (the thread counts alternate run by run, so drift on a shared machine hits all alike):

- the command a user types, ``sdkit generate "a red circle" --steps 20 --threads N`` on the embedded model, as
  fresh processes (interpreter, imports, loading, sampling, saving): the wall time a user waits;
- ``Kit.generate`` alone in one process (the model loaded once), after ``torch.set_num_threads(N)``: the part the
  thread count can change.

The CLI's default (``sdkit.limits.default_threads``: half the cores, 1 to 4) comes from these figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import interleaved

PROMPT = "a red circle"


def cli_times(threads: list[int], repeats: int, steps: int) -> dict[int, list[float]]:
    exe = shutil.which("sdkit")
    base = [exe] if exe else [sys.executable, "-m", "sdkit.cli"]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    times: dict[int, list[float]] = {n: [] for n in threads}
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "out.png")
        for r in range(repeats):
            for n in threads if r % 2 == 0 else threads[::-1]:
                argv = [*base, "generate", PROMPT, "--steps", str(steps), "--seed", "1", "--threads", str(n)]
                t = time.perf_counter()
                subprocess.run([*argv, "-o", out, "--overwrite"], env=env, capture_output=True, check=True)
                times[n].append(time.perf_counter() - t)
    return times


def generate_times(threads: list[int], repeats: int, steps: int) -> dict[str, float]:
    import torch

    import sdkit

    kit = sdkit.load("shapes")

    def run(n: int):
        def fn() -> None:
            torch.set_num_threads(n)
            kit.generate(PROMPT, seed=1, steps=steps)

        return fn

    return interleaved({str(n): run(n) for n in threads}, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--skip-cli", action="store_true", help="only time Kit.generate in-process")
    args = p.parse_args()
    print(f"{os.cpu_count()} CPUs, load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not args.skip_cli:
        t = cli_times(args.threads, args.repeats, args.steps)
        print(f'sdkit generate "{PROMPT}" --steps {args.steps} --threads N, median of {args.repeats} processes:')
        for n, ts in t.items():
            print(f"  {n} threads: {statistics.median(ts):6.2f} s  (min {min(ts):.2f}, max {max(ts):.2f})")
    g = generate_times(args.threads, args.repeats, args.steps)
    print(f"Kit.generate alone (model loaded), {args.steps} steps, median of {args.repeats}:")
    for n, s in g.items():
        print(f"  {n} threads: {s:6.3f} s")
    one = g[str(args.threads[0])]
    for n in args.threads[1:]:
        print(f"  {n} threads / {args.threads[0]} thread: {g[str(n)] / one:.2f}x the time")
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
