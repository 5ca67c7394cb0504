"""What the tests of distributed jobs share: launching 2 CPU processes with torchrun, and reading a job's render log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def torchrun(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run`` with 2 processes on this machine (standalone rendezvous on a free local
    port), one thread each; the completed process, whatever its exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *argv]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def renders(out: Path) -> list[tuple[int, int, int]]:
    """(row, col, rank) of every cell a job wrote, from its folder's render log."""
    lines = (out / "renders.log").read_text().splitlines()
    return [(d["row"], d["col"], d["rank"]) for d in map(json.loads, lines)]
