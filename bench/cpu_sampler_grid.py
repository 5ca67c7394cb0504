"""A samplers x step counts grid (same seed and prompt): lockstep-batched vs one generation per cell, same run.

    python bench/cpu_sampler_grid.py [--model shapes]

Cells with different samplers or step counts cannot share a batch, but with ``sdkit.lockstep`` they share every
model call; this reports both timings, the UNet call counts and their ratio.
"""

from __future__ import annotations

import argparse
import time

SAMPLERS = ["euler", "euler_ancestral", "heun", "dpmpp_2m"]
STEPS = [5, 10, 15, 20]


def main() -> None:
    import sdkit
    from sdkit.sweep import compare_samplers

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="shapes")
    args = p.parse_args()
    kit = sdkit.load(args.model)
    prompt = "a large red circle on the left, yellow background"
    calls: list[int] = []
    kit.denoiser.model.unet.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    compare_samplers(kit, prompt, SAMPLERS[:1], STEPS[:1], seed=1)  # warm-up

    calls.clear()
    t = time.perf_counter()
    compare_samplers(kit, prompt, SAMPLERS, STEPS, seed=1)
    t_lockstep, n_lockstep = time.perf_counter() - t, len(calls)

    calls.clear()
    t = time.perf_counter()
    for sampler in SAMPLERS:
        for n in STEPS:
            kit.generate(prompt, seed=1, sampler=sampler, steps=n)
    t_separate, n_separate = time.perf_counter() - t, len(calls)

    print(f"{len(SAMPLERS)}x{len(STEPS)} grid ({', '.join(SAMPLERS)} x {STEPS} steps), model {args.model}")
    print(f"lockstep   {t_lockstep:.2f} s, {n_lockstep} UNet calls")
    print(f"separate   {t_separate:.2f} s, {n_separate} UNet calls")
    print(f"speed-up   {t_separate / t_lockstep:.2f}x")


if __name__ == "__main__":
    main()
