"""The A1111 name registry and img2img strength semantics."""

from __future__ import annotations

import pytest
import torch

from sdkit import samplers, schedules
from sdkit.denoisers import DiscreteSchedule, alphas_cumprod_from_betas
from sdkit.samplers.names import AUTOMATIC, SAMPLER_DISPLAY, SCHEDULE_DISPLAY, display_name, resolve
from sdkit.strength import strength_sigmas, strength_steps


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("DPM++ 2M Karras", ("dpmpp_2m", "karras")),
        ("dpm++ 2m karras", ("dpmpp_2m", "karras")),
        ("  DPM++   2M  Karras ", ("dpmpp_2m", "karras")),
        ("DPM++ 2M", ("dpmpp_2m", "karras")),  # A1111 >= 1.9 "Automatic"
        ("DPM++ 2M SDE Exponential", ("dpmpp_2m_sde", "exponential")),
        ("DPM++ 2M SDE Karras", ("dpmpp_2m_sde", "karras")),
        ("DPM++ 2M SDE", ("dpmpp_2m_sde", "exponential")),
        ("DPM++ 2M SDE Heun", ("dpmpp_2m_sde_heun", "exponential")),
        ("DPM++ 2M SDE Heun Karras", ("dpmpp_2m_sde_heun", "karras")),
        ("DPM++ 3M SDE", ("dpmpp_3m_sde", "exponential")),
        ("DPM++ SDE Karras", ("dpmpp_sde", "karras")),
        ("DPM++ 2S a Karras", ("dpmpp_2s_ancestral", "karras")),
        ("Euler a", ("euler_ancestral", "normal")),
        ("Euler", ("euler", "normal")),
        ("Euler Automatic", ("euler", "normal")),
        ("Euler Uniform", ("euler", "normal")),
        ("Euler SGM Uniform", ("euler", "sgm_uniform")),
        ("Euler a Align Your Steps", ("euler_ancestral", "align_your_steps")),
        ("Heun Beta", ("heun", "beta")),
        ("DPM2", ("dpm_2", "karras")),
        ("DPM2 a Karras", ("dpm_2_ancestral", "karras")),
        ("LMS Karras", ("lms", "karras")),
        ("LMS KL Optimal", ("lms", "kl_optimal")),
        ("DDIM", ("ddim", "ddim_uniform")),
        ("DDPM", ("ddpm", "leading")),
        ("UniPC", ("unipc", "normal")),
        ("LCM", ("lcm", "lcm")),
        ("Euler Custom", ("euler", "custom")),
        ("dpmpp_2m", ("dpmpp_2m", "karras")),
        ("dpmpp_2m_karras", ("dpmpp_2m", "karras")),
        ("dpmpp_2m_sde_sgm_uniform", ("dpmpp_2m_sde", "sgm_uniform")),
        ("euler_ancestral", ("euler_ancestral", "normal")),
        ("k_euler_a", ("euler_ancestral", "normal")),
        ("k_dpmpp_2m", ("dpmpp_2m", "karras")),
    ],
)
def test_resolve(name: str, expected: tuple[str, str]) -> None:
    assert resolve(name) == expected


def test_resolve_with_a_separate_schedule_type() -> None:
    assert resolve("DPM++ 2M", "Exponential") == ("dpmpp_2m", "exponential")
    assert resolve("DPM++ 2M", "Automatic") == ("dpmpp_2m", "karras")
    assert resolve("Euler a", "SGM Uniform") == ("euler_ancestral", "sgm_uniform")
    assert resolve("Euler a", "") == ("euler_ancestral", "normal")


def test_every_display_name_round_trips() -> None:
    for sampler in samplers.SAMPLERS:
        assert sampler in SAMPLER_DISPLAY and sampler in AUTOMATIC
        assert AUTOMATIC[sampler] in schedules.SCHEDULES
        for schedule in SCHEDULE_DISPLAY:
            shown = display_name(sampler, schedule)
            assert resolve(shown.sampler, shown.schedule) == (sampler, schedule)
            assert resolve(str(shown)) == (sampler, schedule)
            assert resolve(f"{sampler}_{schedule}") == (sampler, schedule)
    for schedule in schedules.SCHEDULES:
        assert schedule in SCHEDULE_DISPLAY


def test_dpmpp_2m_sde_heun_is_the_heun_solver_of_dpmpp_2m_sde() -> None:
    """A1111's "DPM++ 2M SDE Heun": the registry entry runs dpmpp_2m_sde with solver_type="heun", to the bit;
    that solver's k-diffusion parity is in tests/test_samplers_parity.py."""
    from sdkit.noise import noise_sampler_for

    x, sigmas = torch.randn(1, 4, 8, 8, dtype=torch.float64), schedules.exponential(8, 0.03, 14.6).double()

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x / (1 + sigma.view(-1, 1, 1, 1) ** 2)

    named = samplers.sample("dpmpp_2m_sde_heun", denoiser, x, sigmas, noise_sampler=noise_sampler_for(3, x))
    heun = samplers.sample("dpmpp_2m_sde", denoiser, x, sigmas, solver_type="heun",
                           noise_sampler=noise_sampler_for(3, x))  # fmt: skip
    midpoint = samplers.sample("dpmpp_2m_sde", denoiser, x, sigmas, noise_sampler=noise_sampler_for(3, x))
    assert torch.equal(named, heun) and not torch.allclose(named, midpoint)
    assert "dpmpp_2m_sde_heun" in samplers.STOCHASTIC


def test_display_name() -> None:
    assert display_name("dpmpp_2m", "karras") == ("DPM++ 2M", "Karras")
    assert str(display_name("dpmpp_2m", "karras")) == "DPM++ 2M Karras"
    sampler, schedule = display_name("euler_ancestral", "sgm_uniform")
    assert (sampler, schedule) == ("Euler a", "SGM Uniform")
    assert display_name("my_sampler", "custom") == ("my_sampler", "Custom")


@pytest.mark.parametrize("bad", ["Euler b", "DPM++ 4M", "", "Karras", "DPM++ 2M Karrass"])
def test_unknown_names_list_the_valid_ones(bad: str) -> None:
    with pytest.raises(ValueError, match=r"valid|DPM\+\+ 2M"):
        resolve(bad)
    with pytest.raises(ValueError, match="Euler a"):
        resolve("Euler b")
    with pytest.raises(ValueError, match="Karras"):
        resolve("Euler", "Karass")


# -------------------------------------------------------------------------------- img2img strength
SIGMAS = schedules.karras(20, 0.03, 14.6)


def test_strength_sdkit() -> None:
    assert strength_sigmas(SIGMAS, 0.0).numel() == 0
    assert torch.equal(strength_sigmas(SIGMAS, 1.0), SIGMAS)
    half = strength_sigmas(SIGMAS, 0.5)
    assert torch.equal(half, SIGMAS[10:]) and len(half) == 11
    assert torch.equal(strength_sigmas(SIGMAS, 0.33), SIGMAS[-8:])  # round(6.6) = 7 steps
    assert len(strength_sigmas(SIGMAS, 0.001)) == 2  # any strength > 0 runs at least one step
    assert strength_steps(20, 0.75) == 15


def test_strength_diffusers_floors() -> None:
    assert torch.equal(strength_sigmas(SIGMAS, 0.33, "diffusers"), SIGMAS[-7:])  # int(6.6) = 6 steps
    assert strength_sigmas(SIGMAS, 0.04, "diffusers").numel() == 0  # int(0.8) = 0 steps
    assert torch.equal(strength_sigmas(SIGMAS, 1.0, "diffusers"), SIGMAS)
    assert strength_steps(25, 0.5, "diffusers") == 12


def test_strength_a1111() -> None:
    assert torch.equal(strength_sigmas(SIGMAS, 0.5, "a1111"), SIGMAS[9:])  # t_enc = 10, runs 11 steps
    assert torch.equal(strength_sigmas(SIGMAS, 1.0, "a1111"), SIGMAS)
    assert strength_sigmas(SIGMAS, 0.0, "a1111").numel() == 0


def test_strength_comfy_rebuilds_a_longer_schedule() -> None:
    model = DiscreteSchedule(alphas_cumprod_from_betas())
    calls = []

    def rebuild(n: int) -> torch.Tensor:
        calls.append(n)
        return schedules.make_sigmas("karras", n, model)

    sigmas = schedules.make_sigmas("karras", 20, model)
    tail = strength_sigmas(sigmas, 0.5, "comfy", rebuild=rebuild)
    assert calls == [40] and len(tail) == 21  # the number of steps stays 20
    assert torch.equal(tail, rebuild(40)[-21:])
    assert tail[0] < sigmas[0]
    assert torch.equal(strength_sigmas(sigmas, 1.0, "comfy", rebuild=rebuild), sigmas)
    assert strength_sigmas(sigmas, 0.0, "comfy", rebuild=rebuild).numel() == 0
    with pytest.raises(ValueError, match="rebuild"):
        strength_sigmas(sigmas, 0.5, "comfy")


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf")])
def test_strength_out_of_range(bad: object) -> None:
    with pytest.raises(ValueError, match="strength"):
        strength_sigmas(SIGMAS, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["0.5", True, None])
def test_strength_of_another_type(bad: object) -> None:
    with pytest.raises(TypeError, match="strength"):
        strength_sigmas(SIGMAS, bad)  # type: ignore[arg-type]


def test_strength_mode_must_be_known() -> None:
    with pytest.raises(ValueError, match="mode"):
        strength_sigmas(SIGMAS, 0.5, "webui")  # type: ignore[arg-type]


def test_zero_strength_runs_nothing() -> None:
    x = torch.randn(1, 4, 8, 8)
    tail = strength_sigmas(SIGMAS, 0.0)
    assert samplers.sample("dpmpp_2m", lambda x, s: x * 0, x, tail) is x
