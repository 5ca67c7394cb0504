"""A 4 x 4 seed x CFG grid: ``sdkit.sweep.sweep`` (16 cells in one batched sampler run) vs 16 ``kit.generate`` calls.

    python bench/cpu_sweep.py [--repeats 5] [--threads N] [--steps 20]

Both make the same 16 images of the embedded model (64x64, 20 Euler steps, seeds 1-4, CFG 1 / 3 / 7.5 / 12), with
the prompt encodings cached on both sides; the two alternate round by round. Prints medians, the speed-up
and the largest pixel difference between the grid and the sequential images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from common import cpu_parser, interleaved, markdown_row, parse_cpu_args

import sdkit
from sdkit.sweep import sweep

PROMPT = "a large red circle on the left, yellow background"
SEEDS = [1, 2, 3, 4]
CFGS = [1.0, 3.0, 7.5, 12.0]


def main() -> None:
    args = parse_cpu_args(cpu_parser(__doc__, repeats=5))
    kit = sdkit.load("shapes")
    out: dict[str, Any] = {}

    def grid() -> None:
        out["grid"] = sweep(kit, PROMPT, x=("cfg", CFGS), y=("seed", SEEDS), steps=args.steps, sampler="euler")

    def sequential() -> None:
        out["seq"] = [
            [kit.generate(PROMPT, seed=s, cfg=c, steps=args.steps, sampler="euler").images[0] for c in CFGS]
            for s in SEEDS
        ]

    t = interleaved({"sweep": grid, "sequential": sequential}, args.repeats)
    speedup = t["sequential"] / t["sweep"]
    diff = max(
        int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())
        for row_a, row_b in zip(out["grid"].images, out["seq"], strict=True)
        for a, b in zip(row_a, row_b, strict=True)
    )
    print(
        f"4x4 seed x CFG grid, shapes 64x64, {args.steps} Euler steps, median of {args.repeats}: sweep "
        f"{t['sweep']:.2f} s, 16 x generate {t['sequential']:.2f} s, speed-up {speedup:.2f}x, "
        f"max pixel difference {diff}/255"
    )
    print(
        markdown_row(
            f"4x4 seed x CFG sweep vs 16 generates (shapes 64px, {args.steps} steps)",
            f"python bench/cpu_sweep.py --threads {args.threads}",
            f"CPU, {args.threads} threads",
            f"{t['sweep']:.2f} s",
            f"{t['sequential']:.2f} s",
            t["sweep"] / t["sequential"],
        )
    )


if __name__ == "__main__":
    main()
