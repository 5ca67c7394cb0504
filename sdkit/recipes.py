"""Recipes: short, visible compositions of sdkit's objects. Copy one into a notebook cell and edit it.

Each recipe takes the objects it composes (a conditional denoiser, the VAE or its latent space, encoded prompts,
a sigma schedule, a sampler) and returns latents, or pixels where the last step is a pixel paste-back
(``inpaint``, ``outpaint``); ``Kit.generate`` adds prompt encoding, decoding and metadata.

- ``txt2img``: pure noise -> image.
- ``img2img``: an init image noised to the strength's sigma, then denoised (``sdkit.strength``).
- ``inpaint``: repaint a masked region with any model (latent blending) or a 9-channel inpainting UNet.
- ``outpaint``: inpaint on a larger canvas whose new zone starts from noise.
- ``controlnet``: txt2img with one or several ControlNets (any recipe takes ``controlled(denoiser, ...)`` too).
- ``hires_fix``: A1111's Hires. fix: txt2img, upscale, then img2img at the larger size (``sdkit.hires``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit import samplers
from sdkit.conditioners.controlnet import Control, controlled
from sdkit.conditioners.masks import MaskedContent, fill_masked, latent_mask, masked, masked_image, paste_back
from sdkit.conditioners.outpaint import extend_canvas
from sdkit.denoisers import DiscreteDenoiser
from sdkit.guidance import CFG, Composed, Cond, PartsHook, ScheduledCFG
from sdkit.hires import HiresFix, upscale
from sdkit.image import Image
from sdkit.latents import Latents, LatentSpace
from sdkit.noise import ImageNoise, SeedSpec, randn, seed_spec
from sdkit.strength import StrengthMode, strength_sigmas
from sdkit.types import ConditionalDenoiser, Denoiser, Sampler, Step, TextConditioning
from sdkit.vae import VAE

StepHook = Callable[[Step], None]


PromptSchedule = Sequence[tuple[int, TextConditioning]]
"""Prompt editing: ``[(end_step, cond), ...]`` from ``PromptEncoder.encode_schedule``."""


def txt2img(
    denoiser: ConditionalDenoiser,
    space: LatentSpace,
    cond: Cond | PromptSchedule,
    uncond: TextConditioning,
    *,
    sigmas: Float[Tensor, " n1"],
    sampler: str | Sampler = "euler",
    cfg_scale: float = 7.5,
    seed: int | SeedSpec = 0,
    width: int = 512,
    height: int = 512,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    on_step: StepHook | None = None,
    on_cfg_parts: PartsHook | None = None,
    on_prompt: Callable[[int, int], None] | None = None,
    noise: ImageNoise | None = None,
) -> Latents:
    """Text to image: pure noise at ``sigmas[0]``, denoised step by step under classifier-free guidance.

    ``cond`` may be a prompt schedule (prompt editing); ``on_prompt(step, entry)`` then reports which entry
    each step used. ``seed`` may be a ``SeedSpec`` (variation seed, seed resize); ``noise`` an ``ImageNoise``
    to draw from instead (it keeps going afterwards, e.g. into an SDXL refiner)."""
    # 1. Starting noise: one seeded CPU generator per image (A1111's scheme), so image i of a batch equals seed
    #    + i alone; the same generators' next draws are the step noise of stochastic samplers.
    shape = (space.channels, height // space.factor, width // space.factor)
    if noise is None:
        noise = ImageNoise.for_batch(seed, batch_size, shape, factor=space.factor, device=device, dtype=dtype)
    x = noise.first() * sigmas[0].to(dtype)
    # 2. Guidance wraps the model: [uncond, cond] in one batch, mixed as uncond + scale * (cond - uncond).
    if isinstance(cond, (TextConditioning, Composed)):  # one prompt, or the AND parts of one
        guided = CFG(denoiser, cond.repeat(batch_size), uncond.repeat(batch_size), cfg_scale, on_parts=on_cfg_parts)
    else:  # prompt editing: the conditioning switches between steps
        entries = [(end, c.repeat(batch_size)) for end, c in cond]
        guided = ScheduledCFG(denoiser, entries, uncond.repeat(batch_size), cfg_scale, on_parts=on_cfg_parts)
    # 3. The sampler walks the sigmas; stochastic samplers draw their step noise from the seeded generators (the
    #    DPM++ SDE family from per-image Brownian trees, as A1111 does).
    step_noise = noise.for_sampler(sampler, sigmas)
    for step in samplers.steps(sampler, guided, x, sigmas.to(device), noise_sampler=step_noise):
        if isinstance(guided, ScheduledCFG):
            if on_prompt is not None:
                on_prompt(step.i, guided.entry)
            guided.advance(step.i + 1)
        if on_step is not None:
            on_step(step)
        x = step.x_next
    return Latents(x, space)


def _batch(t: Tensor, batch_size: int, what: str) -> Tensor:
    """One entry per image: a single init image/latent is repeated, a batch must match ``batch_size``."""
    if t.shape[0] == batch_size:
        return t
    if t.shape[0] == 1:
        return t.expand(batch_size, *t.shape[1:]).contiguous()
    raise ValueError(f"{what} has a batch of {t.shape[0]}, but batch_size is {batch_size}")


def img2img(
    denoiser: ConditionalDenoiser,
    vae: VAE,
    init: Image,
    cond: Cond,
    uncond: TextConditioning,
    *,
    sigmas: Float[Tensor, " n1"],
    strength: float = 0.75,
    strength_mode: StrengthMode = "sdkit",
    sampler: str | Sampler = "euler",
    cfg_scale: float = 7.5,
    seed: int | SeedSpec = 0,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    on_step: StepHook | None = None,
    on_cfg_parts: PartsHook | None = None,
) -> Latents:
    """Image to image: the init latents noised to the first sigma of the schedule's tail that ``strength`` picks,
    then denoised. Strength 0 returns the VAE round trip of ``init``; strength 1 ignores it (pure noise at
    ``sigmas[0]``, exactly txt2img with the same seed, as diffusers' inpaint pipeline does at strength 1)."""
    # 1. The init image as latents (posterior mean: deterministic), one per image of the batch.
    z = _batch(vae.encode(init).tensor, batch_size, "init image").to(device=device, dtype=dtype)
    # 2. Strength picks the tail of the schedule to run; no steps (strength 0) is the VAE round trip.
    tail = strength_sigmas(sigmas, strength, strength_mode).to(device)
    if tail.shape[0] < 2:
        return Latents(z, vae.space)
    # 3. Seeded per-image noise, as txt2img draws it, scaled to the tail's first sigma.
    noise = ImageNoise.for_batch(seed, batch_size, z.shape[1:], factor=vae.space.factor, device=device, dtype=dtype)
    start = noise.first()
    x = start * tail[0].to(dtype) if strength >= 1.0 else z + start * tail[0].to(dtype)
    # 4. Guidance and the sampler, as in txt2img.
    guided = CFG(denoiser, cond.repeat(batch_size), uncond.repeat(batch_size), cfg_scale, on_parts=on_cfg_parts)
    # (A1111 spans a DPM++ SDE sampler's Brownian trees over the whole schedule, not the tail.)
    for step in samplers.steps(sampler, guided, x, tail, noise_sampler=noise.for_sampler(sampler, sigmas)):
        if on_step is not None:
            on_step(step)
        x = step.x_next
    return Latents(x, vae.space)


def _unet_channels(denoiser: Any) -> int:
    """Input channels of the UNet behind a (possibly wrapped) denoiser: 4, or 9 for inpainting UNets."""
    for obj in (denoiser, getattr(denoiser, "model", None), getattr(denoiser, "base", None)):
        channels = getattr(obj, "in_channels", None) or getattr(getattr(obj, "model", None), "in_channels", None)
        if channels:
            return int(channels)
    return 4


def inpaint(
    denoiser: ConditionalDenoiser,
    vae: VAE,
    init: Image,
    mask: Float[Tensor, "b 1 h w"],
    cond: Cond,
    uncond: TextConditioning,
    *,
    sigmas: Float[Tensor, " n1"],
    strength: float = 1.0,
    content: MaskedContent = "original",
    blend: bool | None = None,
    strength_mode: StrengthMode = "sdkit",
    sampler: str | Sampler = "euler",
    cfg_scale: float = 7.5,
    seed: int | SeedSpec = 0,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    on_step: StepHook | None = None,
    on_cfg_parts: PartsHook | None = None,
) -> Image:
    """Repaint where ``mask`` is 1 (pixel mask, see ``sdkit.conditioners.masks``); returns pixels, where the mask
    is 0 exactly the original's. Any model inpaints by blending the known latents at each step (``blend``,
    default on for 4-channel UNets); a 9-channel inpainting UNet also gets mask + masked-image latents."""
    space, b = vae.space, batch_size
    # 1. Known latents of the original and the repaint mask at latent resolution.
    known = _batch(vae.encode(init).tensor, b, "init image").to(device=device, dtype=dtype)
    m = _batch(latent_mask(mask, space.factor), b, "mask").to(device=device, dtype=dtype)
    rng = ImageNoise.for_batch(seed, b, known.shape[1:], factor=space.factor, device=device, dtype=dtype)
    noise = rng.first()
    # 2. Masked content: what the repainted region starts from before it is noised.
    start = {"original": known, "latent_nothing": known * (1 - m)}.get(content)
    if content == "fill":
        start = _batch(vae.encode(fill_masked(init, mask)).tensor, b, "init image").to(device=device, dtype=dtype)
    elif content == "latent_noise":
        # A1111 fills with a fresh draw of the image seeds (no variation seed), so the fill is the plain seed noise
        fill = randn(seed_spec(seed).seeds(b), known.shape[1:], device=device, dtype=dtype)
        start = known * (1 - m) + fill * m
    if start is None:
        raise ValueError(
            f"content must be one of 'original', 'fill', 'latent_noise', 'latent_nothing', got {content!r}"
        )
    # 3. Inpainting UNets take [mask, masked-image latents] as extra input channels (diffusers' order).
    extra = {}
    if _unet_channels(denoiser) == 2 * space.channels + 1:
        hole = vae.encode(masked_image(init, mask)).tensor.to(device=device, dtype=dtype)
        extra["concat"] = torch.cat([(m >= 0.5).to(dtype).expand(b, -1, -1, -1), _batch(hole, b, "init image")], 1)
    guided: Denoiser = CFG(denoiser, cond.repeat(b), uncond.repeat(b), cfg_scale, on_parts=on_cfg_parts, **extra)
    if blend if blend is not None else not extra:
        guided = masked(guided, known, m, noise)
    # 4. Noise to the tail's first sigma and sample, as img2img does.
    tail = strength_sigmas(sigmas, strength, strength_mode).to(device)
    x = start if tail.shape[0] < 2 else noise * tail[0] if strength >= 1.0 else start + noise * tail[0]
    for step in samplers.steps(sampler, guided, x, tail, noise_sampler=rng.for_sampler(sampler, sigmas)):
        if on_step is not None:
            on_step(step)
        x = step.x_next
    # 5. Decode and paste the original back outside the mask (bit for bit).
    return paste_back(init, vae.decode(Latents(x, space)), mask)


def outpaint(
    denoiser: ConditionalDenoiser,
    vae: VAE,
    image: Image,
    cond: Cond,
    uncond: TextConditioning,
    *,
    left: int = 0,
    right: int = 0,
    up: int = 0,
    down: int = 0,
    overlap: int = 8,
    sigmas: Float[Tensor, " n1"],
    **options: Any,
) -> Image:
    """Extend ``image`` by ``left``/``right``/``up``/``down`` pixels: the new zone starts from noise, the rest
    conditions it through the inpainting blend, and ``overlap`` pixels of the original along each extended edge
    are regenerated under a feathered mask so the seam blends. ``options`` go to ``inpaint``."""
    canvas = extend_canvas(image, left=left, right=right, up=up, down=down, overlap=overlap, multiple=vae.space.factor)
    options = {"strength": 1.0, "content": "latent_noise", **options}
    out = inpaint(denoiser, vae, canvas.image, canvas.mask, cond, uncond, sigmas=sigmas, **options)
    return canvas.crop(out)


def controlnet(
    denoiser: DiscreteDenoiser,
    space: LatentSpace,
    controls: Sequence[Control],
    cond: Cond,
    uncond: TextConditioning,
    *,
    sigmas: Float[Tensor, " n1"],
    width: int = 512,
    height: int = 512,
    **options: Any,
) -> Latents:
    """txt2img steered by one or several ControlNets (``Control(model, image, weight, start, end)``)."""
    guided = controlled(denoiser, controls, sigmas, (width, height), batch_size=options.get("batch_size", 1))
    return txt2img(guided, space, cond, uncond, sigmas=sigmas, width=width, height=height, **options)


def hires_fix(
    denoiser: ConditionalDenoiser,
    vae: VAE,
    cond: Cond | PromptSchedule,
    uncond: TextConditioning,
    *,
    sigmas: Float[Tensor, " n1"],
    hires_sigmas: Float[Tensor, " m"],
    hires: HiresFix | None = None,
    hires_cond: tuple[Cond, TextConditioning] | None = None,
    hires_schedule: Float[Tensor, " k"] | None = None,
    sampler: str | Sampler = "euler",
    cfg_scale: float = 7.5,
    seed: int | SeedSpec = 0,
    width: int = 512,
    height: int = 512,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    on_step: StepHook | None = None,
    on_cfg_parts: PartsHook | None = None,
) -> Latents:
    """A1111's Hires. fix: txt2img at ``width`` x ``height``, upscale the result (``hires.upscaler``: latent
    interpolation, or decode / resize / encode), then img2img at the larger size over ``hires_sigmas`` (build them
    with ``sdkit.hires.hires_sigmas``: A1111 runs the last ``hires.steps`` steps of a longer schedule).
    ``hires``: default ``HiresFix()``; ``hires_cond``: ``(cond, uncond)`` for the second pass (SDXL's size
    conditioning), default the same as the first."""
    hires = hires or HiresFix()
    # 1. The first pass, exactly txt2img.
    low = txt2img(
        denoiser, vae.space, cond, uncond, sigmas=sigmas, sampler=sampler, cfg_scale=cfg_scale, seed=seed,
        width=width, height=height, batch_size=batch_size, device=device, dtype=dtype, on_step=on_step,
        on_cfg_parts=on_cfg_parts,
    )  # fmt: skip
    # 2. Upscale: interpolate the latents ("Latent" upscalers) or decode, resize the pixels and encode again.
    z = upscale(low, vae, hires, width, height).tensor.to(device=device, dtype=dtype)
    tail = hires_sigmas.to(device)
    if tail.shape[0] < 2:  # denoising strength 0: the upscaled image as it is
        return Latents(z, vae.space)
    # 3. img2img at the new size: a new noise source with the same seeds over the larger shape (A1111 makes a new
    #    ImageRNG), the upscaled latents noised to the tail's first sigma, then the sampler.
    noise = ImageNoise.for_batch(seed, batch_size, z.shape[1:], factor=vae.space.factor, device=device, dtype=dtype)
    x = z + noise.first() * tail[0].to(dtype)
    c, u = hires_cond if hires_cond is not None else (cond, uncond)
    if not isinstance(c, (TextConditioning, Composed)):
        raise ValueError("hires_fix: prompt editing needs a hires_cond for the second pass (one TextConditioning)")
    guided = CFG(denoiser, c.repeat(batch_size), u.repeat(batch_size), cfg_scale, on_parts=on_cfg_parts)
    # A1111's second pass is img2img over a longer schedule whose tail this is (``hires_schedule``); its Brownian
    # trees span that schedule. Without it, its top is taken as the first pass's (equal for karras, normal,
    # exponential, sgm_uniform; not for spacings whose top moves with the step count, such as A1111's "DDIM").
    span = hires_schedule.to(tail) if hires_schedule is not None else torch.cat([sigmas[:1].to(tail), tail])
    for step in samplers.steps(sampler, guided, x, tail, noise_sampler=noise.for_sampler(sampler, span)):
        if on_step is not None:
            on_step(step)
        x = step.x_next
    return Latents(x, vae.space)
