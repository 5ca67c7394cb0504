"""Parity of sdkit's samplers with k-diffusion (the oracle for the Karras/DPM family) and with diffusers'
schedulers (DDIM, DDPM, UniPC, LCM, and the ``from_diffusers`` adapter), on the same denoiser, sigmas and
noise, in float64."""

from __future__ import annotations

import math
from typing import Any

import k_diffusion.sampling as K
import pytest
import torch
from sampler_fixtures import (
    BROWNIAN,
    GaussianDenoiser,
    latents,
    text_conditioning,
    tiny_unet,
    unet_denoiser,
)

from sdkit import samplers, schedules
from sdkit.denoisers import DiscreteSchedule
from sdkit.noise import noise_sampler_for

pytestmark = [
    pytest.mark.filterwarnings("ignore:Should have t[ab]"),  # torchsde float32 edge noise
    pytest.mark.usefixtures("one_thread"),  # tiny float64 models run fastest on one thread
]

CHURN = {"s_churn": 1.0, "s_tmin": 0.1, "s_tmax": 5.0}  # some steps churn, some do not
CASES: list[tuple[str, dict[str, Any]]] = [
    ("euler", {}),
    ("euler", CHURN),
    ("euler", {**CHURN, "s_noise": 1.003, "s_tmin": 0.0, "s_tmax": float("inf")}),
    ("euler_ancestral", {}),
    ("euler_ancestral", {"eta": 0.5, "s_noise": 0.9}),
    ("heun", {}),
    ("heun", CHURN),
    ("dpm_2", {}),
    ("dpm_2", CHURN),
    ("dpm_2_ancestral", {}),
    ("dpm_2_ancestral", {"eta": 0.7}),
    ("lms", {}),
    ("lms", {"order": 2}),
    ("dpmpp_2s_ancestral", {}),
    ("dpmpp_2s_ancestral", {"eta": 0.5}),
    ("dpmpp_sde", {}),
    ("dpmpp_sde", {"eta": 0.6, "r": 0.4}),
    ("dpmpp_2m", {}),
    ("dpmpp_2m_sde", {}),
    ("dpmpp_2m_sde", {"solver_type": "heun"}),
    ("dpmpp_2m_sde", {"solver_type": "heun", "eta": 0.6, "s_noise": 0.95}),
    ("dpmpp_3m_sde", {}),
    ("dpmpp_3m_sde", {"eta": 0.5}),
]


def _run_both(name: str, options: dict[str, Any], denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor):
    """(k-diffusion result, sdkit result) with identical noise."""
    ours: dict[str, Any] = dict(options)
    theirs: dict[str, Any] = dict(options)
    if name in BROWNIAN:
        lo, hi = sigmas[sigmas > 0].min(), sigmas.max()
        theirs["noise_sampler"] = K.BrownianTreeNoiseSampler(x, lo, hi, seed=[11, 12])
        ours["noise_sampler"] = K.BrownianTreeNoiseSampler(x, lo, hi, seed=[11, 12])
    elif name in samplers.STOCHASTIC:
        theirs["noise_sampler"] = noise_sampler_for(11, x)
        ours["noise_sampler"] = noise_sampler_for(11, x)
    elif options.get("s_churn"):
        # k-diffusion draws churn noise from the global RNG at every step (even where gamma = 0); sdkit asks
        # its noise sampler only where it churns, so hand it k-diffusion's per-step draws by step index.
        torch.manual_seed(5)
        draws = [torch.randn_like(x) for _ in range(len(sigmas) - 1)]
        index = {float(s): i for i, s in enumerate(sigmas)}
        ours["noise_sampler"] = lambda sigma, sigma_hat: draws[index[float(sigma)]]
        torch.manual_seed(5)
    expected = getattr(K, f"sample_{name}")(denoiser, x, sigmas, disable=True, **theirs)
    got = samplers.sample(name, denoiser, x, sigmas, **ours)
    return expected, got


@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_matches_k_diffusion_on_gaussian_denoiser(name: str, options: dict[str, Any]) -> None:
    denoiser = GaussianDenoiser(mu=latents(3) * 0.4, s=0.6)
    sigmas = schedules.karras(12, 0.03, 14.6).double()
    x = latents(4) * 14.6
    expected, got = _run_both(name, options, denoiser, x, sigmas)
    assert torch.isfinite(got).all()
    assert (got - expected).abs().max().item() <= 1e-5
    assert got.std() > 0.1  # a real result, not a collapsed one


@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_matches_k_diffusion_on_tiny_unet(name: str, options: dict[str, Any]) -> None:
    denoiser, model = unet_denoiser()
    sigmas = schedules.karras(6, model.sigma_min, model.sigma_max).double()
    x = latents(6) * sigmas[0]
    expected, got = _run_both(name, options, denoiser, x, sigmas)
    assert torch.isfinite(got).all()
    assert (got - expected).abs().max().item() <= 1e-5
    assert (got - x / sigmas[0]).abs().mean() > 1e-3  # the UNet changed something


# ----------------------------------------------------------------------- diffusers' discrete schedulers
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def _diffusers_vp_run(sched: Any, x_vp: torch.Tensor, **step_kwargs: Any) -> torch.Tensor:
    """The diffusers pipeline loop on the raw UNet (VP space: ``scale_model_input`` is the identity)."""
    unet, cond = tiny_unet(), text_conditioning()
    with torch.no_grad():
        for t in sched.timesteps:
            model_in = sched.scale_model_input(x_vp, t)
            eps = unet(model_in, t.float().expand(x_vp.shape[0]), cond)
            x_vp = sched.step(eps, t, x_vp, **step_kwargs).prev_sample
    return x_vp


def _table_sigmas(sched: Any) -> torch.Tensor:
    model = DiscreteSchedule(sched.alphas_cumprod.double())
    return torch.cat([model.sigmas[sched.timesteps.long()], torch.zeros(1, dtype=torch.float64)])


def _seeded(seed: int) -> Any:
    """A noise sampler drawing exactly what diffusers' ``randn_tensor(shape, generator, float64)`` draws."""
    g = torch.Generator().manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn((2, 4, 8, 8), generator=g, dtype=torch.float64)


def _compare(
    make: Any,
    steps: int,
    name: str,
    seed: int | None = None,
    last_sigma: str = "zero",
    step_options: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[float, float]:
    """Max |sdkit - diffusers| on the tiny UNet: (scheduler as shipped, scheduler promoted to float64).

    diffusers keeps ``alphas_cumprod`` and ``sigmas`` in float32 whatever the latents' dtype, which limits
    agreement to ~1e-6; promoting them to float64 isolates the algorithm (agreement to ~1e-13).
    """
    errors = []
    for promote in (False, True):
        sched = make()
        if promote:
            sched.alphas_cumprod = sched.alphas_cumprod.double()
        sched.set_timesteps(steps)
        sigmas = _table_sigmas(sched)
        if last_sigma == "sigma_min":
            sigmas[-1] = DiscreteSchedule(sched.alphas_cumprod.double()).sigmas[0]
        if promote and hasattr(sched, "sigmas"):
            sched.sigmas = sigmas.clone()
        x_vp = latents(7)
        kwargs = dict(step_options or {})
        if seed is not None:
            kwargs["generator"] = torch.Generator().manual_seed(seed)
        expected = _diffusers_vp_run(sched, x_vp, **kwargs)
        denoiser, _ = unet_denoiser(DiscreteSchedule(sched.alphas_cumprod.double()))
        x = x_vp * math.sqrt(1 + float(sigmas[0]) ** 2)  # sigma-space latents: x = x_vp / sqrt(alpha_bar)
        noise = {"noise_sampler": _seeded(seed)} if seed is not None else {}
        got = samplers.sample(name, denoiser, x, sigmas, **options, **noise)
        got = got / math.sqrt(1 + float(sigmas[-1]) ** 2)  # back to VP space (a no-op at sigma 0)
        assert torch.isfinite(got).all()
        errors.append((got - expected).abs().max().item())
    return errors[0], errors[1]


@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_ddim_matches_diffusers(eta: float) -> None:
    from diffusers import DDIMScheduler

    def make() -> Any:
        return DDIMScheduler(**SD_BETAS, steps_offset=1, clip_sample=False, set_alpha_to_one=True)

    sched = make()
    sched.set_timesteps(8)
    model = DiscreteSchedule(sched.alphas_cumprod.double())
    assert torch.equal(_table_sigmas(sched), schedules.ddim_uniform(8, model))  # "leading" + offset 1
    assert torch.equal(_table_sigmas(sched), schedules.leading(8, model))
    shipped, promoted = _compare(make, 8, "ddim", seed=3 if eta else None, step_options={"eta": eta}, eta=eta)
    assert shipped <= 1e-5 and promoted <= 1e-10


@pytest.mark.parametrize("steps_offset", [0, 1])
def test_ddpm_matches_diffusers(steps_offset: int) -> None:
    from diffusers import DDPMScheduler

    shipped, promoted = _compare(
        lambda: DDPMScheduler(**SD_BETAS, steps_offset=steps_offset, clip_sample=False), 8, "ddpm", seed=4
    )
    # with steps_offset 1 the last step starts at t = 1 > 0, where diffusers still adds noise of std
    # sqrt(1e-20) = 1e-10 (its variance is clamped at 1e-20); sdkit adds none on the step to sigma 0
    assert shipped <= 1e-5 and promoted <= (1e-10 if steps_offset == 0 else 1e-9)


@pytest.mark.parametrize(
    ("order", "variant", "steps", "final"),
    [(2, "bh2", 8, "zero"), (3, "bh2", 5, "zero"), (1, "bh2", 4, "zero"), (3, "bh1", 8, "sigma_min")],
)
def test_unipc_matches_diffusers(order: int, variant: str, steps: int, final: str) -> None:
    """("bh1" with a final sigma of 0 is NaN in diffusers: B(h) = -h = -inf times a zero residual; sdkit
    returns the last estimate there, so bh1 is compared on a schedule that ends at sigma_min.)"""
    from diffusers import UniPCMultistepScheduler

    def make() -> Any:
        return UniPCMultistepScheduler(**SD_BETAS, solver_order=order, solver_type=variant, final_sigmas_type=final)

    sched = make()
    sched.set_timesteps(steps)
    torch.testing.assert_close(_table_sigmas(sched)[:-1].float(), sched.sigmas[:-1], rtol=1e-6, atol=0)
    shipped, promoted = _compare(make, steps, "unipc", last_sigma=final, order=order, variant=variant)
    assert shipped <= 1e-5 and promoted <= 1e-10


def test_lcm_matches_diffusers() -> None:
    from diffusers import LCMScheduler

    sched = LCMScheduler(**SD_BETAS)
    sched.set_timesteps(4)
    assert sched.timesteps.tolist() == [999, 759, 499, 259]
    assert torch.equal(_table_sigmas(sched), schedules.lcm(4, DiscreteSchedule(sched.alphas_cumprod.double())))
    shipped, promoted = _compare(lambda: LCMScheduler(**SD_BETAS), 4, "lcm", seed=5)
    # the rest is diffusers' consistency boundary term c_skip(t) x_t, c_skip = 0.25 / ((10 t)^2 + 0.25)
    # <= 3.7e-8 at t >= 259, which sdkit's sampler cannot apply (it never sees timesteps)
    assert shipped <= 1e-5 and promoted <= 1e-5


def test_ddim_and_ddpm_are_euler_and_euler_ancestral() -> None:
    """DDIM(eta) = Euler ancestral(eta) and DDPM = Euler ancestral(eta=1) in sigma space, to rounding."""
    denoiser = GaussianDenoiser(mu=0.3, s=0.5)
    sigmas = schedules.karras(9, 0.03, 14.6).double()
    x = latents(11) * 14.6
    assert (
        samplers.sample("ddim", denoiser, x, sigmas) - samplers.sample("euler", denoiser, x, sigmas)
    ).abs().max() < 1e-12
    for eta, name in ((0.5, "ddim"), (1.0, "ddim"), (1.0, "ddpm")):
        ours = samplers.sample(name, denoiser, x, sigmas, eta=eta, generator=3) if name == "ddim" else None
        ours = samplers.sample(name, denoiser, x, sigmas, generator=3) if ours is None else ours
        ref = samplers.sample("euler_ancestral", denoiser, x, sigmas, eta=eta, generator=3)
        assert (ours - ref).abs().max().item() < 1e-10


# ------------------------------------------------------------------------------ the diffusers adapter
def test_from_diffusers_euler_equals_euler() -> None:
    from diffusers import EulerDiscreteScheduler

    from sdkit.samplers.diffusers_adapter import diffusers_sigmas

    scheduler = EulerDiscreteScheduler(**SD_BETAS, timestep_spacing="linspace")
    run = samplers.from_diffusers(scheduler)
    sigmas = diffusers_sigmas(scheduler, 10)
    denoiser = GaussianDenoiser(mu=latents(12) * 0.3, s=0.5)
    x = latents(13) * sigmas[0]
    got = samplers.sample(run, denoiser, x, sigmas)
    again = samplers.sample(run, denoiser, x, sigmas)  # a fresh scheduler per run: same result
    expected = samplers.sample("euler", denoiser, x, sigmas)
    assert torch.equal(got, again)
    assert (got - expected).abs().max().item() <= 1e-5  # diffusers' Euler upcasts its step to float32
    with pytest.raises(ValueError, match="its own sigmas"):
        samplers.sample(run, denoiser, x, schedules.karras(10, 0.03, 14.6).double())


def test_from_diffusers_dpm_solver_equals_dpmpp_2m() -> None:
    from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

    from sdkit.samplers.diffusers_adapter import diffusers_sigmas

    model = DiscreteSchedule(EulerDiscreteScheduler(**SD_BETAS).alphas_cumprod.double())
    run = samplers.from_diffusers(DPMSolverMultistepScheduler, model)  # a class + the model's schedule
    sigmas = diffusers_sigmas(DPMSolverMultistepScheduler, 10, model)
    denoiser, _ = unet_denoiser(model)
    x = latents(14) * sigmas[0]
    steps = list(samplers.steps(run, denoiser, x, sigmas))
    expected = samplers.sample("dpmpp_2m", denoiser, x, sigmas)
    assert [s.sigma for s in steps] == sigmas[:-1].tolist()
    assert (steps[-1].x_next - expected).abs().max().item() <= 1e-5


def test_from_diffusers_refuses_multi_call_schedulers() -> None:
    from diffusers import HeunDiscreteScheduler

    run = samplers.from_diffusers(HeunDiscreteScheduler(**SD_BETAS))
    with pytest.raises(NotImplementedError, match="heun"):
        samplers.sample(run, GaussianDenoiser(0.0, 1.0), latents(1), torch.tensor([14.6, 1.0, 0.0]))
