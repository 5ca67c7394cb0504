"""A generation request: ``Kit.generate``'s arguments checked and completed for one model, as the
``GenerationParameters`` an infotext records, the sampler and the sigma schedule it runs.

Parameters left out take the family's defaults (``sdkit.families``); a sampler may be named as in A1111
(``"DPM++ 2M Karras"`` names its schedule too, ``sdkit.names``) or passed as a function, a schedule named or passed
as a tensor of sigmas; numbers are checked against ``sdkit.limits``. Each error is one line naming the parameter.
The functions take a kit's parts, never a ``Kit``: ``Kit.parameters`` is ``complete`` for one kit.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import Tensor

from sdkit.denoisers import DiscreteSchedule
from sdkit.families import FamilyDefaults
from sdkit.hires import HiresFix, check_hires, hires_schedule, hires_sigmas
from sdkit.limits import check_area, check_batch_size, check_bool, check_int, check_number, check_size, check_steps
from sdkit.metadata import GenerationParameters
from sdkit.noise import SeedSpec, check_seed, resolve_seed
from sdkit.trace import Trace
from sdkit.types import Sampler


def check_options(
    *,
    factor: int,
    width: int | None,
    height: int | None,
    hires: Any,
    image_inputs: tuple[Any, ...],
    trace: Any,
    progress: Any,
) -> None:
    """``generate``'s checks before any input is converted: sizes (multiples of the VAE ``factor``), the hires fix
    only in text to image (``image_inputs``: init image, strength, mask, control), ``trace`` and ``progress``."""
    if hires is not None and any(v is not None for v in image_inputs):
        raise ValueError("hires: the hires fix is a txt2img pass; it cannot go with init_image, mask or control")
    for pname, size in (("width", width), ("height", height)):
        if size is not None:
            check_size(pname, size, factor)
    if not isinstance(trace, Trace):
        check_bool("trace", trace)
    check_bool("progress", progress)


def complete(
    prompt: str,
    negative_prompt: str = "",
    *,
    model: str,
    family: str,
    defaults: FamilyDefaults,
    model_schedule: DiscreteSchedule,
    factor: int,
    prompts: Any,
    seed: int = -1,
    steps: int | None = None,
    cfg: float | None = None,
    sampler: str | Sampler | None = None,
    schedule: str | Tensor | None = None,
    width: int | None = None,
    height: int | None = None,
    batch_size: int = 1,
    subseed: int | None = None,
    subseed_strength: float = 0.0,
    seed_resize_from: tuple[int, int] | None = None,
    eta_noise_seed_delta: int = 0,
    clip_skip: int = 1,
    hires: HiresFix | dict[str, Any] | None = None,
) -> tuple[GenerationParameters, Sampler | str, Tensor]:
    """Validate and complete the arguments of ``generate`` for the model ``model`` (its ``family``, ``defaults``,
    training ``model_schedule``, VAE ``factor`` and ``prompts`` encoder); returns the parameters, sampler and
    sigmas."""
    from sdkit.samplers import SAMPLERS
    from sdkit.samplers.names import resolve
    from sdkit.schedules import make_sigmas

    d = defaults
    for pname, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if not isinstance(text, str):
            raise TypeError(f"{pname} must be a str, got {type(text).__name__}")
    check_seed(seed)
    if subseed is not None:
        check_seed(subseed, "subseed")
    seeds = SeedSpec(0, 0, subseed_strength, seed_resize_from, eta_noise_seed_delta)  # validates the options
    steps = check_steps(d.steps if steps is None else steps)
    cfg = check_number("cfg", d.cfg if cfg is None else cfg)
    width = check_size("width", d.width if width is None else width, factor)
    height = check_size("height", d.height if height is None else height, factor)
    batch_size = check_batch_size(batch_size)
    check_area(width, height, batch_size)
    sampler = d.sampler if sampler is None else sampler
    schedule_name = d.schedule if schedule is None else schedule
    if isinstance(sampler, str):
        if sampler in SAMPLERS:
            sampler_name = sampler
        else:
            sampler_name, implied = resolve(sampler)
            if schedule is None and implied:
                schedule_name = implied
        sampler_fn: Sampler | str = sampler_name
    elif callable(sampler):
        sampler_name, sampler_fn = getattr(sampler, "__name__", "custom"), sampler
    else:
        raise TypeError(f"sampler must be a name or a sampler function, got {type(sampler).__name__}")
    try:
        sigmas = make_sigmas(schedule_name, steps, model_schedule, family=family)
    except (ValueError, TypeError) as e:
        if "schedule" in str(e):
            raise
        raise type(e)(f"schedule: {e}") from None
    custom = isinstance(schedule_name, Tensor)
    if custom:
        steps = int(sigmas.shape[0]) - 1
    elif sigmas.shape[0] - 1 < steps:  # e.g. ddim_uniform past the model's timesteps: the infotext would lie
        raise ValueError(
            f"steps: schedule {schedule_name!r} gives at most {sigmas.shape[0] - 1} distinct steps for this "
            f"model, got steps={steps}"
        )
    clip_skip = check_clip_skip(clip_skip, prompts, family)
    hires_fix = check_hires(hires, width, height, batch_size, factor, steps)
    if hires_fix is not None and custom:
        raise ValueError("hires: the second pass stretches a named schedule; a custom schedule (sigmas) cannot")
    params = GenerationParameters(
        prompt=prompt,
        negative_prompt=negative_prompt,
        steps=steps,
        sampler=sampler_name,
        schedule="custom" if custom else str(schedule_name),
        cfg=float(cfg),
        seed=resolve_seed(seed),
        subseed=resolve_seed(-1 if subseed is None else subseed, "subseed") if seeds.subseed_strength else None,
        subseed_strength=seeds.subseed_strength,
        seed_resize_from=seeds.resize_from,
        eta_noise_seed_delta=seeds.eta_noise_seed_delta,
        width=width,
        height=height,
        model=model,
        batch_size=batch_size,
        sigmas=tuple(float(s) for s in sigmas) if custom else None,
        clip_skip=clip_skip,
        hires=hires_fix,
    )
    return params, sampler_fn, sigmas


def check_clip_skip(clip_skip: int, prompts: Any, family: str) -> int:
    """A1111's clip skip, checked against the text encoders; a warning where the family ignores it."""
    clip_skip = check_int("clip_skip", clip_skip)
    for encoder in getattr(prompts, "encoders", []):
        encoder.check_clip_skip(clip_skip)
    if clip_skip != 1 and not getattr(prompts, "clip_skip_applies", True):
        warnings.warn(
            f"clip_skip={clip_skip} does not change {family} encodings (as in A1111: its SD2 and SDXL text "
            "encoders ignore Clip skip); it is recorded in the infotext",
            stacklevel=4,  # the line that called Kit.parameters (in Kit.generate, or the user's)
        )
    return clip_skip


def hires_tail(params: GenerationParameters, model_schedule: DiscreteSchedule, family: str) -> tuple[Tensor, Tensor]:
    """The hires pass's sigmas, the tail of a longer schedule as in A1111 (``sdkit.hires.hires_sigmas``), and that
    longer schedule (``hires_schedule``: what a DPM++ SDE sampler's Brownian trees span)."""
    from sdkit.schedules import make_sigmas

    assert params.hires is not None
    steps, strength = params.hires.steps or params.steps, params.hires.denoising_strength

    def make(n: int) -> Tensor:
        return make_sigmas(params.schedule, n, model_schedule, family=family)

    return hires_sigmas(make, steps, strength), hires_schedule(make, steps, strength)
