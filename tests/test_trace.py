"""Trace: what Kit.generate(trace=...) records, derived eps, CFG parts, fp16 storage, save/load round trip."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

from sdkit.loading import load_tensors, save_tensors
from sdkit.trace import Trace
from sdkit.viz.steps import cfg_norms, step_previews

matplotlib.use("Agg")

SMALL = dict(width=64, height=48, steps=4, seed=7)


@pytest.fixture(scope="module")
def traced(tiny_sd1_kit):
    return tiny_sd1_kit.generate("a red circle", cfg=5.0, trace=True, **SMALL)


def test_trace_records_every_step_on_cpu(traced, tiny_sd1_kit):
    trace = traced.trace
    assert len(trace) == 4 and [s.i for s in trace.steps] == [0, 1, 2, 3]
    assert trace.x.shape == (4, 1, 4, 6, 8) and trace.x.device.type == "cpu"
    assert trace.space == tiny_sd1_kit.vae.space
    # the sigmas are decreasing and chain: each step ends where the next one starts
    assert torch.all(trace.sigmas[1:] < trace.sigmas[:-1])
    for a, b in zip(trace.steps, trace.steps[1:], strict=False):
        assert a.sigma_next == b.sigma and torch.equal(a.x_next, b.x)
    # the last x0 estimate is what generate returned (Euler's last step lands on sigma 0)
    assert torch.equal(trace[-1].x_next, traced.latents.tensor)
    assert torch.equal(trace[-1].denoised, traced.latents.tensor)


def test_eps_is_derived_from_x_and_denoised(traced):
    trace = traced.trace
    s = trace[1]
    eps = (s.x - s.denoised) / s.sigma
    assert torch.allclose(trace.eps_at(1), eps) and torch.allclose(trace.eps[1], eps)
    # x = x0 + sigma * eps reconstructs the noisy input
    assert torch.allclose(s.denoised + s.sigma * trace.eps_at(1), s.x, atol=1e-5)


def test_cfg_parts_reproduce_the_guided_estimate(traced):
    trace = traced.trace
    assert len(trace.cfg_parts) == len(trace)
    for part, step in zip(trace.cfg_parts, trace.steps, strict=True):
        assert float(part.sigma[0]) == pytest.approx(step.sigma, rel=1e-6)
        assert torch.allclose(part.guided(5.0), step.denoised, atol=1e-5)
        assert not torch.allclose(part.denoised_cond, part.denoised_uncond)
    norms = cfg_norms(trace)
    assert norms["cond - uncond"].shape == (4,) and (norms["cond - uncond"] > 0).all()


def test_fp16_trace_halves_memory(tiny_sd1_kit, traced):
    half = tiny_sd1_kit.generate("a red circle", cfg=5.0, trace=Trace(dtype=torch.float16), **SMALL)
    assert half.trace.x.dtype == torch.float16 and half.trace.cfg_cond.dtype == torch.float16
    assert torch.allclose(half.trace.x.float(), traced.trace.x, atol=1e-2, rtol=1e-3)


def test_to_tensors_round_trips_through_safetensors(traced, tmp_path):
    trace = traced.trace
    path = save_tensors(trace.to_tensors(), tmp_path / "trace.safetensors")
    back = Trace.from_tensors(load_tensors(path), space=trace.space)
    assert len(back) == len(trace) and torch.equal(back.x, trace.x) and torch.equal(back.denoised, trace.denoised)
    assert [s.sigma for s in back.steps] == [s.sigma for s in trace.steps]
    assert torch.equal(back.cfg_cond, trace.cfg_cond) and torch.equal(back.cfg_uncond, trace.cfg_uncond)


def test_plot_shows_one_preview_per_step_and_row(traced, tiny_sd1_kit):
    trace = traced.trace
    fig = trace.plot("linear", rows=("x", "denoised", "eps"))
    assert len(fig.axes) == 3 * 4
    cols, previews = step_previews(trace, tiny_sd1_kit.vae, ("denoised",))
    assert cols == [0, 1, 2, 3] and previews["denoised"][0].shape == (48, 64, 3)
    # the VAE preview of the last x0 estimate is the generated image
    final = torch.from_numpy(previews["denoised"][-1]).permute(2, 0, 1)
    generated = torch.from_numpy(np.array(traced.images[0])).permute(2, 0, 1).float() / 255
    assert (final - generated).abs().max() <= 1 / 255 + 1e-6
    assert len(trace.plot(tiny_sd1_kit.vae, max_columns=2).axes) == 2 * 2


def test_explorer_logic_and_headless_widget(tiny_sd1_kit):
    from sdkit.viz.widgets import explorer

    ex = explorer(tiny_sd1_kit, prompt="a red circle", steps=3, seed=7, cfg=5.0, width=64, height=64)
    seen = []
    gen = ex.run(progress=seen.append)
    assert seen == [1, 2, 3] and len(gen.trace) == 3
    single = tiny_sd1_kit.generate("a red circle", seed=7, steps=3, cfg=5.0, width=64, height=64)
    assert torch.equal(gen.latents.tensor, single.latents.tensor)
    assert ex.frame(None) is gen.images[0] and ex.frame(1).size == gen.images[0].size
    widget = ex.widget  # built without a frontend: harmless
    assert len(widget.children) == 4
    with pytest.raises(TypeError, match="unknown setting"):
        ex.run(guidance=3)
