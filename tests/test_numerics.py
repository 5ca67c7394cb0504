"""Numerics: no non-finite value from any sampler x schedule x {1, 2, 3, 20} steps, strengths {0, 0.01, 0.5, 1}
through img2img, and non-finite values detected where they appear (sampler step, VAE decode).

The full grid runs on the analytic Gaussian denoiser (``x0 = mu + s^2 / (s^2 + sigma^2) (x - mu)``, the ideal
denoiser of N(mu, s^2) data), which is exact and costs nothing; the tiny UNet runs every sampler on a subset.
Warnings are errors throughout, so a ``log(0)`` at the final sigma 0 would fail as well as a NaN would.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from sdkit import recipes, samplers
from sdkit.denoisers import DiscreteSchedule, alphas_cumprod_from_betas
from sdkit.image import Image
from sdkit.noise import randn
from sdkit.schedules import SCHEDULES, make_sigmas
from sdkit.strength import strength_steps
from sdkit.types import Step

MODEL = DiscreteSchedule(alphas_cumprod_from_betas())
MU, S = 0.3, 0.8
STEP_COUNTS = (1, 2, 3, 20)


def gaussian(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s2 = sigma.reshape(-1, 1, 1, 1).to(x) ** 2
    return MU + S**2 / (S**2 + s2) * (x - MU)


def options(name: str) -> dict[str, Any]:
    return {"generator": 7} if name in samplers.STOCHASTIC else {}


def run(name: str, denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor) -> list[Step]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return list(samplers.steps(name, denoiser, x, sigmas, **options(name)))


def finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


@pytest.mark.parametrize("sampler", sorted(samplers.SAMPLERS))
def test_every_schedule_and_step_count_stays_finite(sampler):
    bad = []
    for schedule in SCHEDULES:
        for n in STEP_COUNTS:
            sigmas = make_sigmas(schedule, n, MODEL)
            x = randn([n], (4, 16, 16)) * sigmas[0]
            steps = run(sampler, gaussian, x, sigmas)
            assert len(steps) == len(sigmas) - 1 and steps[-1].sigma_next == 0.0
            if not all(finite(s.denoised, s.x_next) for s in steps):
                bad.append((schedule, n))
                continue
            if n == 20:  # a real sample of N(MU, S^2 = 0.64), not just finite numbers; DPM++ 3M SDE on the
                # uniform-timestep "normal" schedule gives std 2.2 at 20 steps, exactly as k-diffusion's does
                out = steps[-1].x_next
                assert abs(float(out.mean()) - MU) < 0.25 and 0.4 < float(out.std()) < 2.5, (schedule, n)
    assert bad == []


@pytest.mark.parametrize("sampler", sorted(samplers.SAMPLERS))
def test_every_sampler_on_the_tiny_unet_stays_finite(tiny_sd1_kit, sampler):
    kit = tiny_sd1_kit
    cond, uncond = kit.prompts.encode_pair("a red circle", "blurry")
    for schedule, n in (("karras", 1), ("normal", 2), ("exponential", 3)):
        sigmas = make_sigmas(schedule, n, kit.denoiser.schedule)
        seen: list[Step] = []
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            latents = recipes.txt2img(
                kit.denoiser, kit.vae.space, cond, uncond, sigmas=sigmas, sampler=sampler, seed=n, width=64,
                height=64, on_step=seen.append,
            )  # fmt: skip
        assert len(seen) == n and finite(latents.tensor, *(s.denoised for s in seen)), (schedule, n)


@pytest.mark.parametrize("n", STEP_COUNTS)
def test_strengths_through_img2img(tiny_sd1_kit, n):
    kit = tiny_sd1_kit
    cond, uncond = kit.prompts.encode_pair("a red circle", "")
    init = Image(torch.linspace(0, 1, 64 * 64 * 3).reshape(1, 3, 64, 64))
    sigmas = make_sigmas("karras", n, kit.denoiser.schedule)
    for strength in (0.0, 0.01, 0.5, 1.0):
        seen: list[Step] = []
        latents = recipes.img2img(
            kit.denoiser, kit.vae, init, cond, uncond, sigmas=sigmas, strength=strength, seed=3, on_step=seen.append
        )
        # strength x steps < 1 still runs one step (any strength > 0 changes the image); strength 0 runs none
        assert len(seen) == strength_steps(n, strength) == (0 if strength == 0 else max(1, round(strength * n)))
        assert finite(latents.tensor, kit.vae.decode(latents).tensor)
        if strength == 0.0:
            assert torch.equal(latents.tensor, kit.vae.encode(init).tensor)
        else:
            assert seen[-1].sigma_next == 0.0 and seen[0].sigma == pytest.approx(float(sigmas[n - len(seen)]))


# ------------------------------------------------------------------------------------- detection
class NaNAt:
    """A NoisePredictor that answers NaN from model call ``k`` on (one call per Euler step: CFG is batched)."""

    def __init__(self, inner: Any, k: int) -> None:
        self.inner, self.k, self.calls = inner, k, 0
        self.in_channels = inner.in_channels

    def __call__(self, x_in: torch.Tensor, t: torch.Tensor, cond: Any, **extra: Any) -> torch.Tensor:
        out = self.inner(x_in, t, cond, **extra)
        self.calls += 1
        return out * float("nan") if self.calls > self.k else out


@pytest.mark.parametrize("k", [0, 2])
def test_nan_from_the_denoiser_is_reported_at_its_step(tiny_sd1_kit, monkeypatch, k):
    kit = tiny_sd1_kit
    reference = kit.generate("a cat", seed=5, steps=4, width=64, height=64, sampler="euler")
    monkeypatch.setattr(kit.denoiser, "model", NaNAt(kit.denoiser.model, k))
    with pytest.raises(FloatingPointError, match=rf"at step {k} \(sigma .*first in the denoiser's estimate"):
        kit.generate("a cat", seed=5, steps=4, width=64, height=64, sampler="euler", trace=True)
    monkeypatch.undo()
    again = kit.generate("a cat", seed=5, steps=4, width=64, height=64, sampler="euler")
    assert again.images[0].tobytes() == reference.images[0].tobytes()


def test_nan_from_a_sampler_update_is_reported_as_such(tiny_sd1_kit):
    def broken(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, **options: Any):
        for i, step in enumerate(samplers.euler(denoiser, x, sigmas)):
            yield step if i < 1 else Step(step.i, step.sigma, step.sigma_next, step.x, step.denoised, step.x / 0 * 0)

    with pytest.raises(FloatingPointError, match=r"at step 1 .*the sampler's update"):
        tiny_sd1_kit.generate("a cat", seed=5, steps=3, width=64, height=64, sampler=broken)


def test_non_finite_vae_decode_is_reported(tiny_sd1_kit, monkeypatch):
    vae = tiny_sd1_kit.vae
    decode = vae.model.decode

    def nan_decode(z: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out = decode(z, *args, **kwargs)
        out.sample[0, 0, 0, 0] = float("inf")
        return out

    monkeypatch.setattr(vae.model, "decode", nan_decode)
    with pytest.raises(FloatingPointError, match="VAE decode produced non-finite pixels"):
        tiny_sd1_kit.generate("a cat", seed=5, steps=2, width=64, height=64)


def test_deferred_finite_watch_reports_the_first_bad_step():
    """Off the CPU, the flags are read once after sampling; the report names the same step as the eager check."""
    from sdkit.kit import FiniteWatch
    from sdkit.types import Step

    ok, bad = torch.zeros(1, 4, 2, 2), torch.full((1, 4, 2, 2), float("nan"))
    steps = [Step(0, 3.0, 2.0, ok, ok, ok), Step(1, 2.0, 1.0, ok, bad, bad), Step(2, 1.0, 0.0, bad, bad, bad)]
    watch = FiniteWatch(torch.device("meta"))  # any non-CPU device defers
    for step in steps:
        watch(step)  # no error yet: nothing was read
    with pytest.raises(FloatingPointError, match=r"at step 1 \(sigma 2 -> 1\), first in the denoiser's estimate"):
        watch.finish()
    eager = FiniteWatch(torch.device("cpu"))
    eager(steps[0])
    with pytest.raises(FloatingPointError, match="at step 1"):
        eager(steps[1])
