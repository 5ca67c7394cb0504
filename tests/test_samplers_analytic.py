"""Samplers against closed-form answers: on Gaussian data the ideal denoiser and the exact probability-flow
ODE solution are known, so convergence orders and output distributions can be measured without weights.
Also the sampler contract: steps, branching, traces, edge cases and errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from sampler_fixtures import GaussianDenoiser, latents

from sdkit import samplers, schedules
from sdkit.types import Step

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny float64 models run fastest on one thread

MU, S = 0.3, 0.5
SIGMA_MIN, SIGMA_MAX = 0.03, 14.6

# (sampler, options) -> allowed range of the fitted order over N = 16, 32, 64 steps. Measured (float64):
# euler/ddim 1.00; heun 2.10; dpm_2 2.10; lms(4) 3.57; lms(3) 2.77; lms(2) 1.91; dpmpp_2m 2.10;
# dpmpp_2s_a / dpmpp_sde (eta 0) 2.03; dpmpp_2m_sde midpoint 2.10, heun 2.18; dpmpp_3m_sde 1.91 (its
# first-order warm-up step caps the global order at 2); unipc(2) 3.26 (UniC lifts the order by one);
# unipc(3) 2.8; unipc without corrector 1.97.
ORDERS: list[tuple[str, dict[str, Any], float, float]] = [
    ("euler", {}, 0.95, 1.05),
    ("ddim", {}, 0.95, 1.05),
    ("euler_ancestral", {"eta": 0.0}, 0.95, 1.05),
    ("heun", {}, 1.95, 2.3),
    ("dpm_2", {}, 1.95, 2.3),
    ("dpm_2_ancestral", {"eta": 0.0}, 1.95, 2.3),
    ("lms", {}, 3.3, 3.9),
    ("lms", {"order": 3}, 2.55, 3.0),
    ("lms", {"order": 2}, 1.8, 2.1),
    ("dpmpp_2m", {}, 1.95, 2.3),
    ("dpmpp_2s_ancestral", {"eta": 0.0}, 1.95, 2.15),
    ("dpmpp_sde", {"eta": 0.0}, 1.95, 2.15),
    ("dpmpp_2m_sde", {"eta": 0.0}, 1.95, 2.3),
    ("dpmpp_2m_sde", {"eta": 0.0, "solver_type": "heun"}, 1.95, 2.35),
    ("dpmpp_3m_sde", {"eta": 0.0}, 1.7, 2.2),
    ("unipc", {}, 3.0, 3.5),
    ("unipc", {"order": 3}, 2.5, 3.3),
    ("unipc", {"corrector": False}, 1.85, 2.15),
]


def _order(name: str, options: dict[str, Any]) -> tuple[float, list[float]]:
    """Fitted slope of log(error) vs log(steps); the run stops at sigma_min so every step shrinks with N."""
    denoiser = GaussianDenoiser(MU, S)
    x = torch.linspace(-3, 3, 7, dtype=torch.float64).view(1, 1, 1, 7) * math.hypot(S, SIGMA_MAX) + MU
    exact = denoiser.ode_solution(x, SIGMA_MAX, SIGMA_MIN)
    steps = [16, 32, 64]
    errors = []
    for n in steps:
        sigmas = schedules.karras(n, SIGMA_MIN, SIGMA_MAX).double()[:-1]
        errors.append((samplers.sample(name, denoiser, x, sigmas, **options) - exact).abs().max().item())
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    return float(slope), errors


@pytest.mark.parametrize(("name", "options", "lo", "hi"), ORDERS, ids=[f"{n}-{i}" for i, (n, *_) in enumerate(ORDERS)])
def test_deterministic_samplers_converge_at_their_order(name: str, options: dict, lo: float, hi: float) -> None:
    slope, errors = _order(name, options)
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.05, errors
    assert lo <= slope <= hi, (slope, errors)


def _gaussian_start(n: int = 20000) -> torch.Tensor:
    """Start samples exactly standardised so sample error in x does not blur the check."""
    x = torch.randn(1, 1, 100, n // 100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (x - x.mean()) / x.std() * math.hypot(S, SIGMA_MAX) + MU


STOCHASTIC = [
    "euler_ancestral",
    "dpm_2_ancestral",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_2m_sde",
    "dpmpp_3m_sde",
    "ddpm",
]


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_reach_the_data_distribution(name: str) -> None:
    """Mean and std of 20000 samples of N(0.3, 0.5^2) after 200 steps: within 1% / 3% (measured: mean
    within 0.002, std within 2.1%, the first-order ancestral ones being the least accurate); and the std
    error of 200 steps is at most half that of 50 steps (measured ratios 0.3 to 0.5)."""
    denoiser, x = GaussianDenoiser(MU, S), _gaussian_start()
    errs = []
    for n in (50, 200):
        out = samplers.sample(name, denoiser, x, schedules.karras(n, SIGMA_MIN, SIGMA_MAX).double(), generator=1)
        errs.append(abs(out.std().item() / S - 1))
    assert abs(out.mean().item() - MU) < 0.01
    assert errs[1] < 0.03
    assert errs[1] <= 0.5 * errs[0] + 0.004  # + the statistical error of a 20000-sample std (0.5%)


def test_lcm_follows_its_variance_recursion() -> None:
    """LCM on a plain (non-consistency) denoiser: x_next - mu = c (x - mu) + sigma_next z with
    c = s^2/(s^2+sigma^2), so Var' = c^2 Var + sigma_next^2 exactly; the output is the last x0 estimate."""
    denoiser, x = GaussianDenoiser(MU, S), _gaussian_start()
    sigmas = schedules.karras(6, SIGMA_MIN, SIGMA_MAX).double()
    out = samplers.sample("lcm", denoiser, x, sigmas, generator=2)
    var = S**2 + SIGMA_MAX**2
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        var = (S**2 / (S**2 + sigma**2)) ** 2 * var + sigma_next**2
    assert out.std().item() == pytest.approx(math.sqrt(var), rel=0.02)
    assert out.mean().item() == pytest.approx(MU, abs=0.01)


# ------------------------------------------------------------------------------------- the contract
def test_steps_chain_and_match_sample() -> None:
    denoiser = GaussianDenoiser(MU, S)
    sigmas = schedules.karras(7, SIGMA_MIN, SIGMA_MAX).double()
    x = latents(1) * SIGMA_MAX
    trace = list(samplers.steps("dpmpp_2m", denoiser, x, sigmas))
    assert [s.i for s in trace] == list(range(7))
    assert [s.sigma for s in trace] == sigmas[:-1].tolist()
    assert [s.sigma_next for s in trace] == sigmas[1:].tolist()
    assert trace[0].x is x
    for a, b in zip(trace[:-1], trace[1:], strict=True):
        assert b.x is a.x_next
    assert torch.equal(trace[-1].x_next, samplers.sample("dpmpp_2m", denoiser, x, sigmas))
    assert torch.equal(trace[-1].x_next, trace[-1].denoised)  # the last step to sigma 0 lands on x0


def test_branching_from_a_step() -> None:
    denoiser = GaussianDenoiser(MU, S)
    sigmas = schedules.karras(10, SIGMA_MIN, SIGMA_MAX).double()
    x = latents(2) * SIGMA_MAX
    trace = list(samplers.steps("euler", denoiser, x, sigmas))
    step = trace[3]
    tail = samplers.remaining(sigmas, step)
    assert tail[0].item() == step.sigma_next and len(tail) == 7
    # a one-step method continued from a saved step reproduces the full run exactly
    assert torch.equal(samplers.sample("euler", denoiser, step.x_next, tail), trace[-1].x_next)
    # branching into another sampler is just another call; it lands near the data
    branch = samplers.sample("heun", denoiser, step.x_next, tail)
    exact = denoiser.ode_solution(x, SIGMA_MAX, 0.0)
    assert (branch - exact).abs().max() < (trace[-1].x_next - exact).abs().max()


def test_trace_tensors_round_trip() -> None:
    denoiser = GaussianDenoiser(MU, S)
    sigmas = schedules.karras(4, SIGMA_MIN, SIGMA_MAX).double()
    trace = list(samplers.steps("euler_ancestral", denoiser, latents(3) * SIGMA_MAX, sigmas, generator=9))
    tensors = samplers.steps_to_tensors(trace)
    assert tensors["x"].shape == (4, 2, 4, 8, 8) and tensors["sigma"].dtype == torch.float64
    assert all(t.is_contiguous() for t in tensors.values())
    back = samplers.steps_from_tensors(tensors)
    assert all(isinstance(s, Step) for s in back)
    for a, b in zip(trace, back, strict=True):
        assert (a.i, a.sigma, a.sigma_next) == (b.i, b.sigma, b.sigma_next)
        assert torch.equal(a.x, b.x) and torch.equal(a.denoised, b.denoised) and torch.equal(a.x_next, b.x_next)
    assert samplers.steps_from_tensors(samplers.steps_to_tensors([])) == []
    with pytest.raises(ValueError, match="missing"):
        samplers.steps_from_tensors({"x": tensors["x"]})


@pytest.mark.parametrize("name", list(samplers.SAMPLERS))
@pytest.mark.parametrize("n", [1, 2, 3])
def test_short_schedules_are_finite(name: str, n: int) -> None:
    denoiser = GaussianDenoiser(MU, S)
    sigmas = schedules.karras(n, SIGMA_MIN, SIGMA_MAX)  # float32, as the Kit passes them
    x = latents(4).float() * SIGMA_MAX
    out = samplers.sample(name, denoiser, x, sigmas, generator=5)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    if n == 1:  # one step from sigma_max to 0 lands on the x0 estimate for every sampler
        torch.testing.assert_close(out, denoiser(x, torch.full((2,), SIGMA_MAX)), rtol=1e-5, atol=1e-5)


def test_no_steps_returns_the_input() -> None:
    x = latents(5)
    for sigmas in (torch.zeros(0), torch.tensor([0.0]), torch.tensor([2.0])):
        assert samplers.sample("dpmpp_2m", GaussianDenoiser(MU, S), x, sigmas) is x


def test_generators_are_reproducible() -> None:
    denoiser = GaussianDenoiser(MU, S)
    sigmas = schedules.karras(5, SIGMA_MIN, SIGMA_MAX).double()
    x = latents(6) * SIGMA_MAX
    a = samplers.sample("euler_ancestral", denoiser, x, sigmas, generator=42)
    assert torch.equal(a, samplers.sample("euler_ancestral", denoiser, x, sigmas, generator=42))
    assert not torch.equal(a, samplers.sample("euler_ancestral", denoiser, x, sigmas, generator=43))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    b = samplers.sample("dpmpp_2m_sde", denoiser, x, sigmas, generator=g1)
    assert torch.equal(b, samplers.sample("dpmpp_2m_sde", denoiser, x, sigmas, generator=g2))
    # image i of a seeded batch equals a single image with seed + i (sdkit.noise's per-image generators)
    single = samplers.sample("euler_ancestral", denoiser, x[1:], sigmas, generator=43)
    assert torch.equal(a[1:], single)
    # churn draws noise only when asked to
    c = samplers.sample("heun", denoiser, x, sigmas, s_churn=2.0, generator=3)
    assert not torch.equal(c, samplers.sample("heun", denoiser, x, sigmas))


@pytest.mark.parametrize("name", sorted(samplers.STOCHASTIC))
def test_stochastic_samplers_need_explicit_randomness(name: str) -> None:
    sigmas = schedules.karras(3, SIGMA_MIN, SIGMA_MAX)
    with pytest.raises(ValueError, match="generator="):
        samplers.sample(name, GaussianDenoiser(MU, S), latents(7), sigmas)


def test_errors() -> None:
    denoiser, x = GaussianDenoiser(MU, S), latents(8)
    with pytest.raises(ValueError, match="valid names: euler, euler_ancestral"):
        samplers.sample("euler_b", denoiser, x, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="1-D"):
        samplers.sample("euler", denoiser, x, torch.ones(2, 2))
    with pytest.raises(ValueError, match="strictly decreasing"):
        samplers.sample("euler", denoiser, x, torch.tensor([1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="strictly decreasing"):
        samplers.sample("euler", denoiser, x, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="finite"):
        samplers.sample("euler", denoiser, x, torch.tensor([float("nan"), 0.0]))
    with pytest.raises(ValueError, match="solver_type"):
        samplers.sample("dpmpp_2m_sde", denoiser, x, torch.tensor([1.0, 0.0]), solver_type="rk4", generator=0)
    with pytest.raises(ValueError, match="not both"):
        samplers.sample("ddpm", denoiser, x, torch.tensor([1.0, 0.0]), generator=0, noise_sampler=lambda a, b: x)
    with pytest.raises(ValueError, match="order"):
        samplers.sample("lms", denoiser, x, torch.tensor([1.0, 0.0]), order=0)


def test_custom_sampler_functions_are_accepted() -> None:
    def one_jump(denoiser, x, sigmas, **options):
        denoised = denoiser(x, torch.full((x.shape[0],), float(sigmas[0]), dtype=x.dtype))
        yield Step(0, float(sigmas[0]), 0.0, x, denoised, denoised)

    x = latents(9) * 3
    out = samplers.sample(one_jump, GaussianDenoiser(MU, S), x, torch.tensor([3.0, 0.0]))
    torch.testing.assert_close(out, GaussianDenoiser(MU, S)(x, torch.full((2,), 3.0)))
