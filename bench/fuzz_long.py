"""The long fuzz run: ``tests/test_fuzz_entry_points.py`` with ``--scale`` times its examples (fresh random examples,
not the derandomized CI set), then the outcome classes per entry point, the cases and the wall time.

    python bench/fuzz_long.py --scale 10

Every case either works or raises a clear one-line error within the test's memory budget and hang guard; any other
outcome fails the run (pytest's exit status is this script's).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=int, default=10, help="times the CI examples of each fuzz test")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "outcomes.json"
        env = {**os.environ, "FUZZ_SCALE": str(args.scale), "FUZZ_REPORT": str(report), "OMP_NUM_THREADS": "1"}
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "pytest", "tests/test_fuzz_entry_points.py", "-q", "-p", "no:cacheprovider"]
        code = subprocess.call(cmd, cwd=ROOT, env=env)
        seconds = time.perf_counter() - start
        rows = json.loads(report.read_text()) if report.exists() else []
    table: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for row in rows:
        table[row["entry"]][row["outcome"]] += row["cases"]
    total = sum(sum(c.values()) for c in table.values())
    print(f"\n{'entry point':26s} {'cases':>6s}  outcomes")
    for entry, outcomes in sorted(table.items()):
        parts = ", ".join(f"{k} {v}" for k, v in outcomes.most_common())
        print(f"{entry:26s} {sum(outcomes.values()):6d}  {parts}")
    print(f"{total} cases in {seconds:.0f} s, pytest exit status {code} (0: no raw exception, hang or budget breach)")
    return code


if __name__ == "__main__":
    sys.exit(main())
