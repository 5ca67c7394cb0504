"""The base -> refiner handoff of SDXL ("ensemble of expert denoisers", Podell et al. 2023, section 2.5): the
base runs the noisy first part of one sigma schedule and hands its still-noisy latents to the refiner, which runs
the rest. ``split_sigmas`` places the split exactly where diffusers' ``denoising_end`` / ``denoising_start`` put it
(see there); ``refine`` is the recipe of the second part (or plain img2img with the refiner).
``sdkit.sdxl.generate_refined`` runs both with two kits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from jaxtyping import Float
from torch import Tensor

from sdkit import samplers
from sdkit.guidance import CFG
from sdkit.latents import Latents
from sdkit.noise import ImageNoise, SeedSpec, noise_sampler_for
from sdkit.types import ConditionalDenoiser, Sampler, Step, TextConditioning

if TYPE_CHECKING:
    from sdkit.denoisers import DiscreteSchedule


def split_sigmas(
    sigmas: Float[Tensor, " n1"], schedule: DiscreteSchedule, denoising_end: float
) -> tuple[Float[Tensor, " k1"], Float[Tensor, " m1"]]:
    """Split a schedule for the base -> refiner handoff: ``(head, tail)`` with ``head[-1] == tail[0]``.

    diffusers' rule (``denoising_end`` in StableDiffusionXLPipeline, ``denoising_start`` in the img2img one):
    the cutoff is the training timestep ``t_c = round(T - f * T)``; the base takes every step whose starting
    timestep is ``>= t_c``, the refiner the steps whose timestep is ``< t_c``. The timesteps of our sigmas are
    recovered through the model's schedule (diffusers' linear interpolation inverted); float32 sigmas give
    them back to ~1e-5, so a tolerance of 1e-3 keeps a timestep exactly at the cutoff on the base's side.
    With the same full schedule in both diffusers pipelines, this is the split they compute.
    """
    if not 0.0 < denoising_end < 1.0:
        raise ValueError(f"denoising_end must be in (0, 1), got {denoising_end}")
    total = schedule.num_timesteps
    cutoff = int(round(total - denoising_end * total))
    t = schedule.sigma_to_t(sigmas[:-1].double().cpu())
    k = int((t >= cutoff - 1e-3).sum())
    return sigmas[: k + 1], sigmas[k:]


def refine(
    denoiser: ConditionalDenoiser,
    cond: TextConditioning,
    uncond: TextConditioning,
    latents: Latents,
    *,
    sigmas: Float[Tensor, " n1"],
    sampler: str | Sampler = "euler",
    cfg_scale: float = 5.0,
    seed: int | SeedSpec = 0,
    on_step: Callable[[Step], None] | None = None,
    noise: ImageNoise | None = None,
    schedule: Float[Tensor, " m"] | None = None,
) -> Latents:
    """Finish ``latents`` along ``sigmas`` with (usually) the refiner.

    Handoff: noisy latents from the base (``latents.sigma`` set) must sit at ``sigmas[0]`` and are used as
    they are; pass the base's ``noise`` so stochastic samplers keep drawing from its generators, as one A1111
    run does (without it the step noise restarts after the seed's starting noise). Plain img2img: clean latents
    (``sigma`` None, e.g. ``vae.encode(image)``) are first noised to ``sigmas[0]`` with the seed's noise.
    ``cond``/``uncond`` carry the refiner's ``time_ids``. ``schedule``: the whole schedule ``sigmas`` were cut
    from, which a DPM++ SDE sampler's Brownian trees span as in A1111 (default ``sigmas``; a handoff's ``noise``
    keeps the base's trees).
    """
    x = latents.tensor
    b = x.shape[0]
    if sigmas.shape[0] < 2:
        return latents.with_tensor(x, float(sigmas[0]) if sigmas.shape[0] else latents.sigma)
    start = float(sigmas[0])
    if latents.sigma is None:  # 1. plain img2img: noise the clean latents to the first sigma
        noise = ImageNoise.for_batch(seed, b, x.shape[1:], factor=latents.space.factor, device=x.device, dtype=x.dtype)
        x = x + noise.first() * start
    elif not math.isclose(latents.sigma, start, rel_tol=1e-4, abs_tol=1e-6):
        raise ValueError(f"refine: latents are at sigma {latents.sigma:.6g} but the schedule starts at {start:.6g}")
    # 2. The refiner under CFG, with its own conditioning, walks the rest of the schedule.
    guided = CFG(denoiser, cond.repeat(b), uncond.repeat(b), cfg_scale)
    noise = noise_sampler_for(seed, x) if noise is None else noise.to(x.device, x.dtype)
    step_noise = noise.for_sampler(sampler, sigmas if schedule is None else schedule)  # or the base's trees
    steps = samplers.steps(sampler, guided, x, sigmas.to(x.device), noise_sampler=step_noise)
    for step in steps:
        if on_step is not None:
            on_step(step)
        x = step.x_next
    return Latents(x, latents.space)
