"""SDXL: micro-conditioning, the published aspect-ratio buckets, and the base -> refiner handoff, in one place.

Micro-conditioning (Podell et al. 2023, "SDXL", sections 2.2-2.3; ``sdkit.micro_conditioning``): besides the text,
the SDXL UNet sees a few numbers about the training image (original size, crop, target size; the refiner an
aesthetic score instead of the target size), attached to the text conditioning as ``time_ids`` by
``add_time_ids``. ``Kit.generate`` does this for every SDXL kit.

The refiner handoff ("ensemble of expert denoisers", paper section 2.5; ``sdkit.refiner``): the base runs the noisy
first part of one sigma schedule and hands its still-noisy latents to the refiner, which runs the rest.
``split_sigmas`` places the split exactly where diffusers' ``denoising_end`` / ``denoising_start`` put it;
``refine`` is the recipe of the second part.

This module adds what takes whole kits: ``generate_refined`` (base + refiner), ``refine_image`` (img2img with the
refiner) and ``move``; the parts above are importable from here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from sdkit.kit import Generation, Kit
from sdkit.micro_conditioning import (
    BUCKETS,
    MicroConditioning,
    Size,
    add_time_ids,
    aesthetic_time_ids,
    nearest_bucket,
    time_id_count,
    time_ids,
    with_time_ids,
)
from sdkit.noise import ImageNoise
from sdkit.recipes import txt2img
from sdkit.refiner import refine, split_sigmas
from sdkit.strength import strength_sigmas
from sdkit.text.composable import plain_text
from sdkit.trace import Trace
from sdkit.types import Sampler

if TYPE_CHECKING:
    from sdkit.image import Image
    from sdkit.latents import Latents

__all__ = [
    "BUCKETS",
    "MicroConditioning",
    "Size",
    "add_time_ids",
    "aesthetic_time_ids",
    "generate_refined",
    "move",
    "nearest_bucket",
    "refine",
    "refine_image",
    "split_sigmas",
    "time_id_count",
    "time_ids",
    "with_time_ids",
]


def move(kit: Kit, device: torch.device | str) -> Kit:
    """Move all of a kit's modules (UNet, VAE, text encoders) to ``device``, e.g. the base to the CPU while the
    refiner uses the GPU; returns the kit."""
    device = torch.device(device)
    modules = [kit.unet, kit.vae.model, *(e.model for e in kit.prompts.encoders)]
    modules += [m for m in kit.extras.values() if isinstance(m, torch.nn.Module)]
    for module in modules:
        module.to(device)
    kit.device = device
    return kit


def generate_refined(
    base: Kit,
    refiner: Kit,
    prompt: str,
    negative_prompt: str = "",
    *,
    denoising_end: float = 0.8,
    seed: int = -1,
    steps: int | None = None,
    cfg: float | None = None,
    refiner_cfg: float | None = None,
    sampler: str | Sampler | None = None,
    schedule: str | Tensor | None = None,
    width: int | None = None,
    height: int | None = None,
    batch_size: int = 1,
    micro: MicroConditioning | None = None,
    refiner_micro: MicroConditioning | None = None,
    offload_base: bool = False,
    trace: bool | Trace = False,
) -> Generation:
    """SDXL base + refiner: the base denoises the first ``denoising_end`` of the schedule, the refiner the
    rest from the same latents (diffusers' ``denoising_end`` / ``denoising_start``). ``offload_base`` moves
    the base to the CPU once its part is done (to fit both on a small GPU)."""
    params, sampler_fn, sigmas = base.parameters(
        prompt,
        negative_prompt,
        seed=seed,
        steps=steps,
        cfg=cfg,
        sampler=sampler,
        schedule=schedule,
        width=width,
        height=height,
        batch_size=batch_size,
    )
    head, tail = split_sigmas(sigmas, base.denoiser.schedule, denoising_end)
    recorder = trace.start() if isinstance(trace, Trace) else Trace() if trace else None
    on_step = None if recorder is None else recorder.on_step
    w, h = params.width, params.height
    space = base.latent_space or base.vae.space
    noise = ImageNoise.for_batch(
        params.seed, params.batch_size, (space.channels, h // space.factor, w // space.factor),
        factor=space.factor, device=base.device, dtype=base.dtype,
    )  # fmt: skip
    noise.for_sampler(sampler_fn, sigmas)  # a DPM++ SDE sampler's Brownian trees span the whole run (A1111's)
    with torch.no_grad():
        # 1. The base: pure noise -> latents still noisy at head[-1].
        text = plain_text(params.prompt, "the SDXL refiner")
        cond, uncond = base.prompts.encode_pair(text, params.negative_prompt)
        cond, uncond = add_time_ids(base.unet, cond, uncond, w, h, micro)
        latents = txt2img(
            base.denoiser,
            space,
            cond.to(base.device, base.dtype),
            uncond.to(base.device, base.dtype),
            sigmas=head,
            sampler=sampler_fn,
            cfg_scale=params.cfg,
            seed=params.seed,
            width=w,
            height=h,
            batch_size=params.batch_size,
            device=base.device,
            dtype=base.dtype,
            on_step=on_step,
            noise=noise,
        )
        latents = latents.with_tensor(latents.tensor, sigma=float(head[-1]))
        if offload_base:
            move(base, "cpu")
        # 2. The refiner: its own text encoder and aesthetic-score conditioning, the same latents and sigmas.
        r_cond, r_uncond = refiner.prompts.encode_pair(text, params.negative_prompt)
        r_cond, r_uncond = add_time_ids(refiner.unet, r_cond, r_uncond, w, h, refiner_micro)
        latents = refine(
            refiner.denoiser,
            r_cond.to(refiner.device, refiner.dtype),
            r_uncond.to(refiner.device, refiner.dtype),
            latents.with_tensor(latents.tensor.to(refiner.device, refiner.dtype), latents.sigma),
            sigmas=tail,
            sampler=sampler_fn,
            cfg_scale=params.cfg if refiner_cfg is None else refiner_cfg,
            seed=params.seed,
            on_step=on_step,
            noise=noise,
        )
        image = refiner.vae.decode(latents)
    note = refiner.vae.last_decode_note
    params = params.with_field("Refiner", refiner.name).with_field("Refiner switch at", f"{denoising_end:g}")
    infotext = params.infotext()
    return Generation(
        image.to_pil(), params.seed, infotext, params, latents=latents, trace=recorder, notes=[note] if note else []
    )


def refine_image(
    refiner: Kit,
    image: Image,
    prompt: str,
    negative_prompt: str = "",
    *,
    strength: float = 0.3,
    seed: int = 0,
    steps: int | None = None,
    cfg: float | None = None,
    sampler: str | Sampler = "euler",
    schedule: str | Tensor | None = None,
    micro: MicroConditioning | None = None,
) -> Latents:
    """Plain img2img with the refiner (or any SDXL kit) on any image: encode, noise to the sigma from which
    ``strength`` of the schedule remains (sdkit's strength convention), denoise. Decode with ``refiner.vae``."""
    _, _, sigmas = refiner.parameters(prompt, negative_prompt, steps=steps, schedule=schedule)
    tail = strength_sigmas(sigmas, strength)
    w, h = image.size
    cond, uncond = refiner.prompts.encode_pair(plain_text(prompt, "the SDXL refiner"), negative_prompt)
    cond, uncond = add_time_ids(refiner.unet, cond, uncond, w, h, micro)
    latents = refiner.vae.encode(image)
    latents = latents.with_tensor(latents.tensor.to(refiner.device, refiner.dtype))
    with torch.no_grad():
        return refine(
            refiner.denoiser,
            cond.to(refiner.device, refiner.dtype),
            uncond.to(refiner.device, refiner.dtype),
            latents,
            sigmas=tail,
            sampler=sampler,
            cfg_scale=refiner.defaults.cfg if cfg is None else cfg,
            seed=seed,
            schedule=sigmas,
        )
