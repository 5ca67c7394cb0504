"""``Kit.generate`` with diffusers schedulers through ``samplers.from_diffusers`` (issue #14): the options sdkit
passes every sampler (``noise_sampler=``, ``generator=``) reach the scheduler's step noise, and the latents equal
diffusers' own StableDiffusionPipeline loop on the same tiny random components, starting noise, sigmas and
step-noise generators."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from sampler_fixtures import GaussianDenoiser

from sdkit import samplers
from sdkit.noise import noise_sampler_for
from sdkit.samplers.diffusers_adapter import diffusers_sigmas
from sdkit.types import Step

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT, NEGATIVE, SEED, STEPS = "a red circle above a blue square", "blurry", 4376845645, 6
SCHEDULERS = ["UniPCMultistepScheduler", "DPMSolverMultistepScheduler", "EulerAncestralDiscreteScheduler"]
SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def _scheduler(folder, class_name: str, **config):
    import diffusers

    cls = getattr(diffusers, class_name)
    return cls.from_config(cls.load_config(str(folder), subfolder="scheduler"), **config)


def _diffusers_loop(folder, scheduler, start: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
    """Final latents of diffusers' StableDiffusionPipeline (its own encoding, CFG and scheduler loop) started
    from sdkit's starting latents ``start`` (VE space, at sigma_max) and drawing step noise from ``generators``."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder), scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler.set_timesteps(STEPS)
    sigma_max = float(diffusers_sigmas(scheduler, STEPS)[0])
    # the pipeline scales ``latents`` by init_noise_sigma; VP-space schedulers (init_noise_sigma 1) work on
    # x / sqrt(1 + sigma^2)
    init = float(pipe.scheduler.init_noise_sigma)
    latents = start / init if init != 1.0 else start / (1 + sigma_max**2) ** 0.5
    with torch.no_grad():
        out = pipe(
            PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=7.5, latents=latents,
            height=64, width=64, output_type="latent", generator=generators,
        ).images  # fmt: skip
    return out


@pytest.mark.parametrize("class_name", SCHEDULERS)
def test_generate_with_diffusers_scheduler_matches_diffusers_pipeline(tiny_sd1_folder, tiny_sd1_kit, class_name):
    scheduler = _scheduler(tiny_sd1_folder, class_name)
    sigmas = diffusers_sigmas(scheduler, STEPS)
    gen = tiny_sd1_kit.generate(
        PROMPT, NEGATIVE, seed=SEED, steps=STEPS, cfg=7.5, width=64, height=64,
        sampler=samplers.from_diffusers(scheduler), schedule=sigmas.float(), trace=True,
    )  # fmt: skip
    ours = gen.latents.tensor
    start = gen.trace.steps[0].x
    # the step noise Kit.generate hands to samplers: per-image CPU generators, past the starting noise
    generators = noise_sampler_for(SEED, start).generators
    theirs = _diffusers_loop(tiny_sd1_folder, _scheduler(tiny_sd1_folder, class_name), start, generators)
    assert ours.shape == theirs.shape == (1, 4, 8, 8)
    assert theirs.std() > 0.1  # a real image's latents, not a collapsed run
    diff = (ours - theirs).abs().max().item()
    assert diff <= 1e-4, f"{class_name}: max abs difference {diff:.3g} from diffusers' loop"
    assert [s.sigma for s in gen.trace.steps] == pytest.approx(sigmas[:-1].tolist(), rel=1e-6)


def test_ancestral_step_noise_follows_the_seed(tiny_sd1_folder, tiny_sd1_kit):
    """EulerAncestral draws step noise: the same seed reproduces the latents, another seed changes them, and a
    run from diffusers' loop with different step-noise generators differs (the noise is really used)."""
    scheduler = _scheduler(tiny_sd1_folder, "EulerAncestralDiscreteScheduler")
    options = dict(steps=STEPS, width=64, height=64, sampler=samplers.from_diffusers(scheduler))
    options["schedule"] = diffusers_sigmas(scheduler, STEPS).float()
    a = tiny_sd1_kit.generate(PROMPT, seed=7, trace=True, **options)
    b = tiny_sd1_kit.generate(PROMPT, seed=7, **options)
    assert torch.equal(a.latents.tensor, b.latents.tensor)
    start = a.trace.steps[0].x
    other = _diffusers_loop(tiny_sd1_folder, scheduler, start, [torch.Generator().manual_seed(12345)])
    assert (a.latents.tensor - other).abs().max().item() > 1e-2


def test_sample_options_equal_diffusers_generators():
    """``generator=`` as a torch.Generator goes to diffusers as is; an int seed is sdkit's per-image stream."""
    from diffusers import EulerAncestralDiscreteScheduler

    scheduler = EulerAncestralDiscreteScheduler(**SD_BETAS)
    run = samplers.from_diffusers(scheduler)
    sigmas = diffusers_sigmas(scheduler, 8)
    denoiser = GaussianDenoiser(mu=0.3, s=0.5)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * sigmas[0].float()
    by_generator = samplers.sample(run, denoiser, x, sigmas, generator=torch.Generator().manual_seed(5))
    # diffusers' own loop: eps from the same ideal denoiser, the same generator
    sched = EulerAncestralDiscreteScheduler(**SD_BETAS)
    sched.set_timesteps(8)
    g, sample = torch.Generator().manual_seed(5), x.clone()
    for i, t in enumerate(sched.timesteps):
        sigma = float(sched.sigmas[i])
        eps = (sample - denoiser(sample, torch.full((2,), sigma))) / sigma
        sched.scale_model_input(sample, t)
        sample = sched.step(eps, t, sample, generator=g).prev_sample
    assert torch.equal(by_generator, sample)
    by_seed = samplers.sample(run, denoiser, x, sigmas, generator=9)
    by_stream = samplers.sample(run, denoiser, x, sigmas, noise_sampler=noise_sampler_for(9, x))
    assert torch.equal(by_seed, by_stream)
    assert not torch.allclose(by_seed, by_generator, atol=1e-3)


def test_variance_noise_takes_any_noise_sampler():
    """DDIM(eta=1) takes the noise itself: an arbitrary (sigma, sigma_next) -> noise callable feeds it, and
    the run equals sdkit's own ddim with the same noise (parity-tested against diffusers elsewhere)."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(**SD_BETAS, steps_offset=1, clip_sample=False, set_alpha_to_one=True)
    sigmas = diffusers_sigmas(scheduler, 8)
    denoiser = GaussianDenoiser(mu=0.3, s=0.5)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * sigmas[0]
    calls: list[tuple[float, float]] = []

    def noise(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        calls.append((float(sigma), float(sigma_next)))
        g = torch.Generator().manual_seed(len(calls))
        return torch.randn(x.shape, generator=g, dtype=torch.float64)

    got = samplers.sample(samplers.from_diffusers(scheduler), denoiser, x, sigmas, eta=1.0, noise_sampler=noise)
    assert calls == list(zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True))
    calls.clear()
    expected = samplers.sample("ddim", denoiser, x, sigmas, eta=1.0, noise_sampler=noise)
    assert (got - expected).abs().max().item() <= 1e-5  # diffusers' DDIM steps in float32


def test_stochastic_scheduler_without_randomness_raises():
    from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

    denoiser, x = GaussianDenoiser(mu=0.0, s=1.0), torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    ancestral = EulerAncestralDiscreteScheduler(**SD_BETAS)
    run, sigmas = samplers.from_diffusers(ancestral), diffusers_sigmas(ancestral, 4).float()
    with pytest.raises(ValueError, match="EulerAncestralDiscreteScheduler adds fresh noise.*generator="):
        samplers.sample(run, denoiser, x * sigmas[0], sigmas)
    with pytest.raises(ValueError, match="^noise_sampler: EulerAncestralDiscreteScheduler draws its step noise"):
        samplers.sample(run, denoiser, x * sigmas[0], sigmas, noise_sampler=lambda s, t: x)
    with pytest.raises(ValueError, match="not both"):
        samplers.sample(run, denoiser, x, sigmas, generator=1, noise_sampler=lambda s, t: x)
    with pytest.raises(TypeError, match="generator must be"):
        samplers.sample(run, denoiser, x, sigmas, generator="1")
    # plain Euler draws only with s_churn > 0: no seed needed without churn
    euler = EulerDiscreteScheduler(**SD_BETAS)
    euler_sigmas = diffusers_sigmas(euler, 4).float()
    samplers.sample(samplers.from_diffusers(euler), denoiser, x * euler_sigmas[0], euler_sigmas)
    with pytest.raises(ValueError, match="adds fresh noise"):
        samplers.sample(samplers.from_diffusers(euler), denoiser, x * euler_sigmas[0], euler_sigmas, s_churn=10.0)


def _plain_euler(denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> Iterator[Step]:
    """A user's sampler with no options at all: Euler's method (Karras et al. 2022, Algorithm 1)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, torch.full((x.shape[0],), sigma, dtype=torch.float32, device=x.device))
        x_next = x + (x - denoised) / sigma * (sigma_next - sigma)
        yield Step(i, sigma, sigma_next, x, denoised, x_next)
        x = x_next


def test_any_custom_sampler_function_works_with_generate(tiny_sd1_kit):
    """Recipes offer every sampler a seeded noise_sampler; a function that takes no options still runs."""
    options = dict(seed=11, steps=5, width=64, height=64, schedule="karras")
    custom = tiny_sd1_kit.generate(PROMPT, sampler=_plain_euler, **options)
    builtin = tiny_sd1_kit.generate(PROMPT, sampler="euler", **options)
    assert (custom.latents.tensor - builtin.latents.tensor).abs().max().item() <= 1e-5
    assert "Sampler: _plain_euler" in custom.infotext


def test_misspelt_options_still_raise():
    def det(denoiser, x, sigmas, *, order: int = 1) -> Iterator[Step]:
        yield from _plain_euler(denoiser, x, sigmas)

    x, sigmas = torch.ones(1, 4, 2, 2), torch.tensor([2.0, 1.0, 0.0])
    denoiser = GaussianDenoiser(mu=0.0, s=1.0)
    got = samplers.sample(det, denoiser, x, sigmas, noise_sampler=lambda s, t: x, generator=3, order=2)
    # Euler on N(0, 1) data: x * (1 - (2 - 1) * 2/5 ... ) step by step, as sdkit's k-diffusion-tested euler
    assert torch.allclose(got, samplers.sample("euler", denoiser, x, sigmas), atol=1e-6)
    assert torch.allclose(got, x * 0.6 * 0.5)  # d = x/(1+s^2): 2 -> 1 scales by 1 - 2/5, 1 -> 0 by 1 - 1/2
    with pytest.raises(TypeError, match="ordr"):
        samplers.sample(det, denoiser, x, sigmas, ordr=2)
