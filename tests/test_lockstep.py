"""Lockstep batching: runs with different samplers and step counts share every model call."""

from __future__ import annotations

import torch

from sdkit.sweep import compare_samplers


def count_unet_calls(kit):
    calls = []
    handle = kit.denoiser.model.unet.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    return calls, handle


def test_sampler_grid_costs_its_longest_run(tiny_sd1_kit):
    kit = tiny_sd1_kit
    samplers, steps = ["euler", "heun", "dpmpp_2m"], [2, 3]
    calls, handle = count_unet_calls(kit)
    try:
        grid = compare_samplers(kit, "a red circle", samplers=samplers, steps=steps, seed=5, width=64, height=64)
    finally:
        handle.remove()
    # Separately: euler 2+3, heun (2*2-1)+(2*3-1), dpmpp_2m 2+3 = 18 calls; in lockstep: the longest run, heun
    # with 3 steps, makes 5 calls, and the first 2 of them carry all 6 runs ([uncond, cond] -> 12 images).
    assert len(calls) == 5
    assert calls[:2] == [12, 12]
    for r, sampler in enumerate(samplers):
        for c, n in enumerate(steps):
            alone = kit.generate("a red circle", seed=5, sampler=sampler, steps=n, width=64, height=64)
            ours, single = grid.latents[r][c].tensor, alone.latents.tensor
            # batched float32 rounds differently from a single image, and on this random model Heun amplifies it:
            # heun with 2 steps already moves by 1.9e-4 of max|x| when merely generated with batch_size=2.
            bound = 1e-3 if sampler == "heun" else 1e-5
            assert (ours - single).abs().max() <= bound * single.abs().max(), (sampler, n)


def test_lockstep_propagates_errors(tiny_sd1_kit):
    from sdkit.lockstep import run_in_lockstep

    def bad(model):
        raise RuntimeError("boom")

    def good(model):
        x = torch.zeros(1, 4, 8, 8)
        return model(x, torch.ones(1), tiny_sd1_kit.prompts.encode("a"))

    try:
        run_in_lockstep(tiny_sd1_kit.denoiser, [good, bad, good])
    except RuntimeError as e:
        assert "boom" in str(e)
    else:
        raise AssertionError("the job's error was swallowed")
    out = run_in_lockstep(tiny_sd1_kit.denoiser, [good, good])
    assert torch.equal(out[0], out[1])  # same request, same batch -> same answer
