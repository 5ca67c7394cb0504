"""How far image ``i`` of a batch is from the single image with seed ``seed + i``, and how far one image moves with
torch's thread count: the largest pixel difference (in 1/255 steps) over samplers x seeds on the embedded model.

The noise is bit-identical at every batch position (``tests/test_reproducibility.py``); what differs is float32
rounding in batched and multi-threaded convolutions, which ancestral and SDE samplers can amplify over the steps.
The README's reproducibility paragraph quotes these figures.

    python bench/batch_position.py                 # 16 samplers x 4 seeds, 6 and 20 steps, batch 3; threads 1 vs 2
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import sdkit
from sdkit.samplers import SAMPLERS


def worst_pixel_step(a: object, b: object) -> int:
    return int(np.abs(np.asarray(a).astype(np.int16) - np.asarray(b).astype(np.int16)).max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[400, 7, 123, 2024])
    p.add_argument("--steps", type=int, nargs="+", default=[6, 20])
    p.add_argument("--batch", type=int, default=3)
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    args = p.parse_args()
    torch.set_num_threads(1)
    kit = sdkit.load("shapes")
    prompt = "a large red circle on the left, yellow background"
    batch_worst: dict[str, int] = {}
    thread_worst: dict[str, int] = {}
    for sampler in args.samplers:
        for steps in args.steps:
            for seed in args.seeds:
                torch.set_num_threads(1)
                batch = kit.generate(prompt, seed=seed, steps=steps, sampler=sampler, batch_size=args.batch)
                singles = [kit.generate(prompt, seed=seed + i, steps=steps, sampler=sampler) for i in range(args.batch)]
                worst = max(worst_pixel_step(batch.images[i], singles[i].images[0]) for i in range(args.batch))
                batch_worst[sampler] = max(batch_worst.get(sampler, 0), worst)
                torch.set_num_threads(2)
                two = kit.generate(prompt, seed=seed, steps=steps, sampler=sampler)
                thread_worst[sampler] = max(
                    thread_worst.get(sampler, 0), worst_pixel_step(two.images[0], singles[0].images[0])
                )
        print(
            f"{sampler:20s} batch position: {batch_worst[sampler]:3d}/255   "
            f"threads 1 vs 2: {thread_worst[sampler]:3d}/255"
        )
    cases = len(args.samplers) * len(args.steps) * len(args.seeds)
    print(
        f"worst over {cases} cases: batch position {max(batch_worst.values())}/255, "
        f"threads {max(thread_worst.values())}/255"
    )


if __name__ == "__main__":
    main()
