"""SDXL: micro-conditioning, the published aspect-ratio buckets, and the base -> refiner handoff.

Micro-conditioning (Podell et al. 2023, "SDXL", sections 2.2-2.3): besides the text, the SDXL UNet sees a few
numbers about the training image, each Fourier-embedded (``addition_time_embed_dim`` wide) and concatenated
with the pooled text embedding into ``time_ids``:

* base: ``original_size (h, w) + crops_coords_top_left (top, left) + target_size (h, w)`` -> 6 numbers;
* refiner: ``original_size (h, w) + crops_coords_top_left (top, left) + aesthetic_score`` -> 5 numbers.

Which one a UNet wants is read from its config (``projection_class_embeddings_input_dim = n *
addition_time_embed_dim + pooled width``), so a refiner loaded from any source is recognised. Sizes are
``(height, width)`` as in the paper and in diffusers' keyword arguments of the same names.

The refiner handoff ("ensemble of expert denoisers", paper section 2.5): the base runs the noisy first part of
one sigma schedule and hands its still-noisy latents to the refiner, which runs the rest. ``split_sigmas``
places the split exactly where diffusers' ``denoising_end`` / ``denoising_start`` put it (see there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit import samplers
from sdkit.guidance import CFG
from sdkit.latents import Latents
from sdkit.noise import ImageNoise, SeedSpec, noise_sampler_for
from sdkit.types import ConditionalDenoiser, Sampler, Step, TextConditioning

if TYPE_CHECKING:
    from collections.abc import Callable

    from sdkit.denoisers import DiscreteSchedule
    from sdkit.image import Image
    from sdkit.kit import Generation, Kit
    from sdkit.trace import Trace

Size = tuple[int, int]

# The training buckets of SDXL 1.0 base, as (width, height), ~1024^2 pixels in multiples of 64: Stability AI's
# published list (generative-models, scripts/demo/sampling.py ``SD_XL_BASE_RATIOS``; SDXL paper appendix I).
BUCKETS: tuple[Size, ...] = (
    (704, 1408), (704, 1344), (768, 1344), (768, 1280), (832, 1216), (832, 1152), (896, 1152), (896, 1088),
    (960, 1088), (960, 1024), (1024, 1024), (1024, 960), (1088, 960), (1088, 896), (1152, 896), (1152, 832),
    (1216, 832), (1280, 768), (1344, 768), (1344, 704), (1408, 704), (1472, 704), (1536, 640), (1600, 640),
    (1664, 576), (1728, 576),
)  # fmt: skip


def nearest_bucket(width: int, height: int) -> Size:
    """The SDXL training bucket ``(width, height)`` whose aspect ratio is closest (in log ratio) to ``width /
    height``: generate there, then crop or resize to the exact size wanted."""
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    target = math.log(width / height)
    return min(BUCKETS, key=lambda wh: abs(math.log(wh[0] / wh[1]) - target))


# ---------------------------------------------------------------------------------- micro-conditioning
def time_ids(original_size: Size, crops_coords_top_left: Size, target_size: Size) -> Float[Tensor, "1 6"]:
    """The base model's 6 micro-conditioning numbers ``[h_orig, w_orig, top, left, h_target, w_target]``."""
    return torch.tensor([[*original_size, *crops_coords_top_left, *target_size]], dtype=torch.float32)


def aesthetic_time_ids(original_size: Size, crops_coords_top_left: Size, score: float) -> Float[Tensor, "1 5"]:
    """The refiner's 5 numbers ``[h_orig, w_orig, top, left, aesthetic_score]``."""
    return torch.tensor([[*original_size, *crops_coords_top_left, float(score)]], dtype=torch.float32)


def time_id_count(unet: Any, pooled_dim: int) -> int:
    """How many micro-conditioning numbers a diffusers SDXL UNet takes: 6 (base) or 5 (refiner)."""
    config = unet.config
    if config.get("addition_embed_type") != "text_time":
        raise ValueError("this UNet takes no SDXL micro-conditioning (addition_embed_type is not 'text_time')")
    n, rest = divmod(
        int(config.projection_class_embeddings_input_dim) - pooled_dim, int(config.addition_time_embed_dim)
    )
    if rest or n not in (5, 6):
        raise ValueError(
            f"UNet added embedding of {config.projection_class_embeddings_input_dim} does not fit a pooled text "
            f"embedding of {pooled_dim} plus 5 or 6 time ids of {config.addition_time_embed_dim}"
        )
    return n


@dataclass(frozen=True)
class MicroConditioning:
    """SDXL's micro-conditioning for a prompt and its negative. ``None`` sizes default to the image's own
    ``(height, width)``; each ``negative_*`` defaults to its positive value. (diffusers differs in one corner:
    with only negative sizes given it resets the negative crop to (0, 0).) Aesthetic scores are used by the
    refiner only, with diffusers' defaults 6.0 / 2.5."""

    original_size: Size | None = None
    crops_coords_top_left: Size = (0, 0)
    target_size: Size | None = None
    aesthetic_score: float = 6.0
    negative_original_size: Size | None = None
    negative_crops_coords_top_left: Size | None = None
    negative_target_size: Size | None = None
    negative_aesthetic_score: float = 2.5

    def tensors(self, width: int, height: int, count: int = 6) -> tuple[Tensor, Tensor]:
        """``(time_ids, negative_time_ids)``, each ``[1, count]``, for an image of ``width x height``."""
        original = self.original_size or (height, width)
        target = self.target_size or (height, width)
        neg_original = self.negative_original_size or original
        neg_crop = self.negative_crops_coords_top_left or self.crops_coords_top_left
        neg_target = self.negative_target_size or target
        if count == 5:
            return (
                aesthetic_time_ids(original, self.crops_coords_top_left, self.aesthetic_score),
                aesthetic_time_ids(neg_original, neg_crop, self.negative_aesthetic_score),
            )
        return time_ids(original, self.crops_coords_top_left, target), time_ids(neg_original, neg_crop, neg_target)


def with_time_ids(cond: TextConditioning, ids: Tensor) -> TextConditioning:
    """A copy of ``cond`` with ``extra["time_ids"]`` (repeated over its batch); ``cond`` itself is left alone
    (encodings are cached and shared)."""
    ids = ids.to(cond.embeds.device).expand(cond.batch, -1)
    return TextConditioning(cond.embeds, cond.pooled, {**cond.extra, "time_ids": ids})


def add_time_ids(
    unet: Any,
    cond: TextConditioning,
    uncond: TextConditioning,
    width: int,
    height: int,
    micro: MicroConditioning | None = None,
) -> tuple[TextConditioning, TextConditioning]:
    """Attach the micro-conditioning ``unet`` expects (base: sizes; refiner: aesthetic score) to a prompt pair."""
    if cond.pooled is None:
        raise ValueError("SDXL micro-conditioning needs a pooled text embedding (the second text encoder's)")
    count = time_id_count(unet, int(cond.pooled.shape[-1]))
    pos, neg = (micro or MicroConditioning()).tensors(width, height, count)
    return with_time_ids(cond, pos), with_time_ids(uncond, neg)


# ------------------------------------------------------------------------------------- the handoff
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
) -> Latents:
    """Finish ``latents`` along ``sigmas`` with (usually) the refiner.

    Handoff: noisy latents from the base (``latents.sigma`` set) must sit at ``sigmas[0]`` and are used as
    they are; pass the base's ``noise`` so stochastic samplers keep drawing from its generators, as one A1111
    run does (without it the step noise restarts after the seed's starting noise). Plain img2img: clean latents
    (``sigma`` None, e.g. ``vae.encode(image)``) are first noised to ``sigmas[0]`` with the seed's noise.
    ``cond``/``uncond`` carry the refiner's ``time_ids``.
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
    steps = samplers.steps(sampler, guided, x, sigmas.to(x.device), noise_sampler=noise)
    for step in steps:
        if on_step is not None:
            on_step(step)
        x = step.x_next
    return Latents(x, latents.space)


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
    from sdkit.kit import Generation
    from sdkit.recipes import txt2img
    from sdkit.trace import Trace

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
    with torch.no_grad():
        # 1. The base: pure noise -> latents still noisy at head[-1].
        cond, uncond = base.prompts.encode_pair(params.prompt, params.negative_prompt)
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
        r_cond, r_uncond = refiner.prompts.encode_pair(params.prompt, params.negative_prompt)
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
    from sdkit.strength import strength_sigmas

    _, _, sigmas = refiner.parameters(prompt, negative_prompt, steps=steps, schedule=schedule)
    tail = strength_sigmas(sigmas, strength)
    w, h = image.size
    cond, uncond = refiner.prompts.encode_pair(prompt, negative_prompt)
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
        )
