"""Sweeps: cells batched through the UNet (counted), each cell equal to its own Kit.generate."""

from __future__ import annotations

import matplotlib
import pytest
import torch

from sdkit.sweep import BatchCFG, batches, compare_samplers, plan, sweep
from sdkit.types import TextConditioning

matplotlib.use("Agg")

SMALL = dict(width=64, height=48)


class CountCalls:
    """Counts forward calls of a module and the batch size of each (a forward pre-hook)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.batches: list[int] = []
        self.handle = module.register_forward_pre_hook(lambda m, args: self.batches.append(int(args[0].shape[0])))

    def __enter__(self) -> CountCalls:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def test_cfg_by_seed_sweep_is_one_batched_run(tiny_sd1_kit):
    kit, steps = tiny_sd1_kit, 3
    cfgs, seeds = [1.0, 3.0, 7.5, 12.0], [1, 2, 3, 4]
    with CountCalls(kit.denoiser.model.unet) as calls:
        grid = sweep(kit, "a red circle", x=("cfg", cfgs), y=("seed", seeds), steps=steps, **SMALL)
    assert calls.batches == [32] * steps  # [uncond, cond] x 16 cells, once per step (not 16 * steps calls)
    assert grid.shape == (4, 4) and len(grid) == 16 and grid.batches == 1
    assert all(im.size == (64, 48) for row in grid.images for im in row)
    assert grid.x_labels == ["cfg=1.0", "cfg=3.0", "cfg=7.5", "cfg=12.0"] and grid.y_labels[2] == "seed=3"
    for r, seed in enumerate(seeds):
        for c, cfg in enumerate(cfgs):
            single = kit.generate("a red circle", seed=seed, cfg=cfg, steps=steps, **SMALL)
            cell = grid.latents[r][c].tensor
            assert torch.allclose(cell, single.latents.tensor, rtol=1e-4, atol=1e-4), (seed, cfg)
            assert grid.parameters[r][c].seed == seed and grid.parameters[r][c].cfg == cfg
    # different cells really differ
    assert not torch.allclose(grid.latents[0][0].tensor, grid.latents[0][3].tensor, atol=1e-3)
    assert not torch.allclose(grid.latents[0][0].tensor, grid.latents[1][0].tensor, atol=1e-3)


def test_max_batch_splits_runs(tiny_sd1_kit):
    with CountCalls(tiny_sd1_kit.denoiser.model.unet) as calls:
        grid = sweep(tiny_sd1_kit, "a cat", x=("seed", [1, 2, 3]), steps=2, max_batch=2, **SMALL)
    assert calls.batches == [4, 4, 2, 2] and grid.batches == 2 and grid.shape == (1, 3)


def test_prompts_batch_and_samplers_split(tiny_sd1_kit):
    kit = tiny_sd1_kit
    prompts = ["a red circle", "a blue square on a green background"]
    with CountCalls(kit.denoiser.model.unet) as calls:
        grid = sweep(kit, "", x=("prompt", prompts), y=("sampler", ["euler", "heun", "euler_ancestral"]), steps=2,
                     seed=5, lockstep=False, **SMALL)  # fmt: skip
    # one run per sampler (heun: 2 model calls per step but the last), each with both prompts in the batch
    assert calls.batches == [4, 4] + [4, 4, 4] + [4, 4]
    assert grid.batches == 3
    for r, sampler in enumerate(["euler", "heun", "euler_ancestral"]):
        for c, prompt in enumerate(prompts):
            single = kit.generate(prompt, seed=5, sampler=sampler, steps=2, **SMALL).latents.tensor
            # the random model's latents reach |x| ~ 40 and Heun's second evaluation amplifies rounding:
            # compare relative to the magnitude
            assert (grid.latents[r][c].tensor - single).abs().max() <= 1e-4 * single.abs().max(), (sampler, c)


def test_long_and_short_prompts_run_in_separate_groups(tiny_sd1_kit):
    long = ", ".join(["a red circle"] * 30)
    cells, _ = plan(tiny_sd1_kit, "", ("prompt", ["a cat", long, "a dog"]), None, {"steps": 2})
    groups = batches(cells, 16)
    assert sorted(len(g) for g in groups) == [1, 2] and {c.chunks for c in groups[0]} != {c.chunks for c in groups[1]}


def test_batch_cfg_applies_one_scale_per_image():
    def model(x, sigma, cond):  # x0 estimate: cond embeds' mean, per image
        return torch.zeros_like(x) + cond.embeds.mean(dim=(1, 2)).view(-1, 1, 1, 1)

    cond = TextConditioning(torch.ones(2, 3, 4))
    uncond = TextConditioning(torch.zeros(2, 3, 4))
    guided = BatchCFG(model, cond, uncond, torch.tensor([2.0, 5.0]).view(-1, 1, 1, 1))
    out = guided(torch.zeros(2, 4, 2, 2), torch.tensor(1.0))
    assert torch.equal(out[0], torch.full((4, 2, 2), 2.0)) and torch.equal(out[1], torch.full((4, 2, 2), 5.0))
    with pytest.raises(ValueError, match="same batch"):
        BatchCFG(model, cond, uncond, torch.ones(3, 1, 1, 1))


def test_compare_samplers_grid_and_labels(tiny_sd1_kit):
    with CountCalls(tiny_sd1_kit.denoiser.model.unet) as calls:
        grid = compare_samplers(
            tiny_sd1_kit, "a cat", ["euler", "dpmpp_2m"], [1, 2], seed=[3, 4], lockstep=False, **SMALL
        )
    assert grid.shape == (2, 4) and grid.y_labels == ["sampler=euler", "sampler=dpmpp_2m"]
    assert grid.x_labels[:2] == ["steps=1, seed=3", "steps=1, seed=4"]
    assert grid.batches == 4 and sorted(calls.batches) == [4] * 6  # seeds batched: 1 + 2 + 1 + 2 calls
    fig = grid.plot()
    assert len(fig.axes) == 8 and fig.axes[0].get_title() == "steps=1, seed=3"
    png = grid._repr_png_()
    assert png[:4] == b"\x89PNG"


def test_bad_axes_are_refused(tiny_sd1_kit):
    with pytest.raises(ValueError, match="cannot sweep"):
        sweep(tiny_sd1_kit, "a", x=("batch_size", [1, 2]))
    with pytest.raises(ValueError, match="given twice"):
        sweep(tiny_sd1_kit, "a", x=("cfg", [1, 2]), cfg=3)


def test_sweep_widget_runs_headless(tiny_sd1_kit):
    from sdkit.viz.widgets import sweep_widget

    sw = sweep_widget(tiny_sd1_kit, "a cat", steps=2, width=32, height=32)
    progress = []
    grid = sw.run([1.0, 5.0], [1, 2, 3], progress=lambda done, total: progress.append((done, total)))
    assert grid.shape == (3, 2) and progress == [(1, 1)]
    assert len(sw.widget.children) == 4
