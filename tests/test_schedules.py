"""Noise schedules: exact equality with k-diffusion's continuous ramps, the discrete spacings against
diffusers' schedulers and k-diffusion's ``get_sigmas``, the AYS tables, validation and the registry."""

from __future__ import annotations

import math

import k_diffusion.sampling as K
import numpy as np
import pytest
import torch

from sdkit import schedules
from sdkit.denoisers import DiscreteSchedule, alphas_cumprod_from_betas

SD = DiscreteSchedule(alphas_cumprod_from_betas())
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


@pytest.mark.parametrize("n", [1, 2, 7, 25, 50])
@pytest.mark.parametrize(("lo", "hi"), [(0.0291675, 14.614642), (0.002, 80.0)])
def test_continuous_ramps_equal_k_diffusion(n: int, lo: float, hi: float) -> None:
    for rho in (7.0, 3.0):
        assert torch.equal(schedules.karras(n, lo, hi, rho), K.get_sigmas_karras(n, lo, hi, rho))
    assert torch.equal(schedules.exponential(n, lo, hi), K.get_sigmas_exponential(n, lo, hi))
    for rho in (1.0, 0.5, 2.0):
        assert torch.equal(schedules.polyexponential(n, lo, hi, rho), K.get_sigmas_polyexponential(n, lo, hi, rho))
    assert schedules.karras(n, lo, hi).dtype == torch.float32
    assert schedules.karras(n, lo, hi).shape == (n + 1,)


def test_karras_endpoints() -> None:
    sigmas = schedules.karras(10, SD.sigma_min, SD.sigma_max)
    assert sigmas[0].item() == pytest.approx(14.614642, rel=1e-6)
    assert sigmas[-2].item() == pytest.approx(0.0291672, rel=1e-5)
    assert sigmas[-1].item() == 0.0


def test_normal_equals_k_diffusion_get_sigmas() -> None:
    from k_diffusion.external import CompVisDenoiser

    class Model(torch.nn.Module):
        alphas_cumprod = SD.alphas_cumprod

    ref = CompVisDenoiser(Model(), quantize=False)
    for n in (1, 10, 25):
        # k-diffusion spaces t in float32 (fraction errors ~1e-5 in t): agreement to 1e-6 relative
        torch.testing.assert_close(schedules.normal(n, SD), ref.get_sigmas(n).double(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("n", [1, 4, 10, 30])
def test_diffusers_spacings_equal_euler_discrete_sigmas(spacing: str, n: int) -> None:
    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler(**SD_BETAS, timestep_spacing=spacing, steps_offset=1)
    sched.set_timesteps(n)
    model = DiscreteSchedule(sched.alphas_cumprod.double())
    ours = getattr(schedules, spacing)(n, model)
    # diffusers stores sigmas in float32
    torch.testing.assert_close(ours.float(), sched.sigmas, rtol=2e-7, atol=0)
    # diffusers' quirk: with "leading" the initial noise is scaled by sqrt(sigma_0^2 + 1), not sigma_0
    expected_init = math.sqrt(float(ours[0]) ** 2 + 1) if spacing == "leading" else float(ours[0])
    assert float(sched.init_noise_sigma) == pytest.approx(expected_init, rel=1e-6)


def test_discrete_spacings() -> None:
    table = SD.sigmas
    # simple: every T/n-th table entry from the top
    assert torch.equal(
        schedules.simple(4, SD), torch.cat([table[[999, 749, 499, 249]], torch.zeros(1, dtype=torch.float64)])
    )
    # ddim_uniform: t = 1 + k * (T // n), like DDIM's leading spacing with steps_offset 1
    assert torch.equal(schedules.ddim_uniform(10, SD)[:-1], table[torch.arange(901, 0, -100)])
    assert len(schedules.ddim_uniform(30, SD)) == 32  # 999 // 33 + 1 timesteps: ComfyUI's quirk, kept
    # sgm_uniform: n + 1 points of the normal spacing, dropping t = 0
    assert torch.equal(schedules.sgm_uniform(8, SD)[:-1], schedules.normal(9, SD)[:-2])
    # beta: both ends dense; timesteps at Beta(0.6, 0.6) quantiles
    beta = schedules.beta(10, SD)
    from scipy.stats import beta as dist

    t = np.rint(dist.ppf(1 - np.linspace(0, 1, 10, endpoint=False), 0.6, 0.6) * 999).astype(int)
    assert torch.equal(beta[:-1], table[torch.from_numpy(t)]) and t[0] == 999
    # lcm: 4 steps of the 50-step distillation grid
    assert torch.equal(schedules.lcm(4, SD)[:-1], table[[999, 759, 499, 259]])
    with pytest.raises(ValueError, match="original_steps"):
        schedules.lcm(51, SD)


def test_kl_optimal_is_uniform_in_arctan() -> None:
    sigmas = schedules.kl_optimal(6, 0.03, 14.6)
    angles = torch.atan(sigmas[:-1].double())
    step = (math.atan(0.03) - math.atan(14.6)) / 5  # float32 result: 1e-6 relative
    torch.testing.assert_close(angles.diff(), torch.full((5,), step, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(schedules.kl_optimal(1, 0.03, 14.6), torch.tensor([14.6, 0.0]), rtol=1e-6, atol=0)


def test_align_your_steps_tables() -> None:
    for family, table in (("sd1", schedules.AYS_TABLES["sd1"]), ("sdxl", schedules.AYS_TABLES["sdxl"])):
        ten = schedules.align_your_steps(10, family)
        assert ten[:-1].tolist() == list(table[:-1]) and ten[-1].item() == 0.0
        # 20 steps interpolate log-linearly: every other entry is a table value
        twenty = schedules.align_your_steps(20, family)
        torch.testing.assert_close(twenty[:-1:2], torch.tensor(table[:-1], dtype=torch.float64), rtol=1e-12, atol=0)
        mid = math.sqrt(table[0] * table[1])
        assert twenty[1].item() == pytest.approx(mid, rel=1e-12)
    assert schedules.align_your_steps(10, "sd2")[1].item() == schedules.AYS_TABLES["sd1"][1]
    assert schedules.align_your_steps(1, "sd1").tolist() == [14.6146412293, 0.0]


@pytest.mark.parametrize("name", list(schedules.SCHEDULES))
@pytest.mark.parametrize("steps", [1, 2, 10, 50])
def test_every_registered_schedule_is_a_valid_schedule(name: str, steps: int) -> None:
    sigmas = schedules.make_sigmas(name, steps, SD, family="sdxl")
    assert sigmas.dtype == torch.float32 and sigmas.ndim == 1
    assert sigmas[-1].item() == 0.0 and torch.isfinite(sigmas).all()
    assert (sigmas.diff() < 0).all(), sigmas
    assert sigmas[0].item() <= SD.sigma_max * (1 + 1e-6)
    if name not in ("ddim_uniform", "beta"):  # these two may return a few steps more / fewer, as in ComfyUI
        assert len(sigmas) == steps + 1
    schedules.validate_sigmas(sigmas)


def test_make_sigmas_names_and_tensors() -> None:
    assert torch.equal(schedules.make_sigmas("Karras", 5, SD), schedules.karras(5, SD.sigma_min, SD.sigma_max))
    assert torch.equal(schedules.make_sigmas("align your steps", 10, SD), schedules.align_your_steps(10).float())
    custom = torch.tensor([10.0, 2.0, 0.5, 0.0], dtype=torch.float64)
    out = schedules.make_sigmas(custom, 25, SD)
    assert out.dtype == torch.float32 and out.tolist() == [10.0, 2.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="valid names: normal, karras"):
        schedules.make_sigmas("karas", 5, SD)
    with pytest.raises(ValueError, match="steps"):
        schedules.make_sigmas("karras", 0, SD)


@pytest.mark.parametrize(
    ("sigmas", "message"),
    [
        (torch.ones(2, 2), "1-D"),
        (torch.tensor([0.0]), "at least 2"),
        (torch.tensor([3, 0]), "floating point"),
        (torch.tensor([3.0, float("inf"), 0.0]), "finite"),
        (torch.tensor([3.0, -1.0, 0.0]), ">= 0"),
        (torch.tensor([3.0, 4.0, 0.0]), r"sigmas\[0\] = 3.0 is followed by 4.0"),
        (torch.tensor([3.0, 1.0, 1.0, 0.0]), "strictly decreasing"),
        (torch.tensor([3.0, 1.0]), "end in 0"),
    ],
)
def test_custom_schedules_are_validated(sigmas: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        schedules.make_sigmas(sigmas, 10, SD)


def test_ramps_reject_bad_ranges() -> None:
    with pytest.raises(ValueError, match="sigma_min"):
        schedules.karras(5, 0.0, 14.6)
    with pytest.raises(ValueError, match="sigma_min"):
        schedules.exponential(5, 20.0, 14.6)
    with pytest.raises(ValueError, match="steps"):
        schedules.karras(0, 0.1, 14.6)


def test_plot_schedules() -> None:
    from sdkit.viz import plot_schedules, schedule_stats

    sigmas = {"karras": schedules.make_sigmas("karras", 8, SD), "normal": schedules.make_sigmas("normal", 12, SD)}
    fig = plot_schedules(sigmas)
    assert len(fig.axes) == 3
    assert [len(line.get_xdata()) for line in fig.axes[2].get_lines()] == [8, 12]
    stats = schedule_stats(sigmas["karras"])
    assert stats["noise_removed"][-1].item() == 1.0 and len(stats["log_snr"]) == 8
    torch.testing.assert_close(stats["log_snr"], -2 * sigmas["karras"][:-1].double().log())
    assert len(plot_schedules(sigmas["karras"], what=("noise_removed",)).axes) == 1
    with pytest.raises(ValueError, match="subset"):
        plot_schedules(sigmas, what=("snr",))  # type: ignore[arg-type]
