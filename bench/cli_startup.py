"""How fast the CLI answers ``--help`` and a bad argument: the median wall time of fresh ``sdkit`` processes.

    python bench/cli_startup.py [--repeats 5]

Each command runs as its own process (interpreter start, argument parsing, the checks, the one-line error), as a
user would type it; the commands alternate round by round so drift on a shared machine hits them alike. These
answer before torch is imported (tests/test_cli_startup.py asserts that); the import time of torch itself is shown
alongside for scale.
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

COMMANDS = {
    "sdkit --help": ["--help"],
    "sdkit generate x --sampler bogus": ["generate", "x", "--sampler", "bogus"],
    "sdkit generate x --steps 0": ["generate", "x", "--steps", "0"],
    "python -c 'import torch' (for scale)": None,
}


def command(argv: list[str] | None) -> list[str]:
    if argv is None:
        return [sys.executable, "-c", "import torch"]
    exe = shutil.which("sdkit")
    return [exe, *argv] if exe else [sys.executable, "-m", "sdkit.cli", *argv]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    names = list(COMMANDS)
    with tempfile.TemporaryDirectory() as cwd:  # a stray out.png would change what "generate" answers
        for r in range(args.repeats):
            for name in names if r % 2 == 0 else names[::-1]:
                t = time.perf_counter()
                subprocess.run(command(COMMANDS[name]), cwd=cwd, capture_output=True, check=False)
                times[name].append(time.perf_counter() - t)
    print(f"median of {args.repeats} (interleaved), wall seconds per process:")
    for name, ts in times.items():
        print(f"  {statistics.median(ts):6.2f} s  (min {min(ts):.2f}, max {max(ts):.2f})  {name}")


if __name__ == "__main__":
    main()
