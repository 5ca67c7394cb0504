"""The steps of one ``Kit.generate`` call once its arguments are complete (``sdkit.request``): the prompts encoded
for the request (prompt editing, SDXL micro-conditioning), the step hooks (trace, progress bar, the non-finite
watch) and the recipe the request calls for (``sdkit.recipes``; ``sdkit.conditioning`` with image inputs).

Each function takes a kit's parts (its prompt encoder, denoiser, VAE, device and dtype), never a ``Kit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sdkit.attention import is_capturing
from sdkit.conditioning import Conditioning
from sdkit.denoisers import DiscreteDenoiser
from sdkit.finite import FiniteWatch
from sdkit.guidance import Composed, Cond
from sdkit.image import Image
from sdkit.latents import Latents, LatentSpace
from sdkit.limits import MAX_BATCH_SIZE, check_area, check_int
from sdkit.metadata import GenerationParameters
from sdkit.micro_conditioning import add_time_ids
from sdkit.recipes import hires_fix, txt2img
from sdkit.text.composable import Part, composable_parts, composes
from sdkit.text.prompt_syntax import prompt_schedule
from sdkit.text.tokenizer import CHUNK_TOKENS
from sdkit.trace import Trace
from sdkit.types import Sampler, Step, TextConditioning
from sdkit.vae import VAE


# ------------------------------------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class EncodedPrompts:
    """The text conditioning of one request: ``cond`` (or, with prompt editing, ``schedule``: ``[(end_step,
    cond), ...]``), ``uncond``, and the hires pass's own pair (SDXL conditions it on its larger size)."""

    cond: Cond
    uncond: TextConditioning
    schedule: list[tuple[int, TextConditioning]] | None = None
    hires: tuple[Cond, TextConditioning] | None = None

    def to(self, device: torch.device, dtype: torch.dtype) -> EncodedPrompts:
        return EncodedPrompts(
            self.cond.to(device, dtype),
            self.uncond.to(device, dtype),
            None if self.schedule is None else [(end, c.to(device, dtype)) for end, c in self.schedule],
            None if self.hires is None else (self.hires[0].to(device, dtype), self.hires[1].to(device, dtype)),
        )


def encode_prompts(
    prompts: Any, params: GenerationParameters, *, family: str, unet: Any, factor: int, conditioned: bool
) -> EncodedPrompts:
    """Encode the request's prompts with a kit's ``prompts`` encoder: the prompt pair, the prompt-editing schedule
    (``[a:b:0.5]``, SD1/SD2 text to image only), the ``AND`` parts of a composable prompt (``sdkit.text.composable``),
    and for SDXL (``unet``: its config says which) the micro-conditioning of the image's size and of the hires pass's
    (``factor``: the VAE's)."""
    skip = {"clip_skip": params.clip_skip} if params.clip_skip != 1 else {}  # wrapped encode_pair: no kwargs
    parts = composable_parts(params.prompt)
    cond: Cond
    if composes(parts):
        cond, uncond = _encode_parts(prompts, parts, params, skip)
    else:  # one part: its text (A1111 drops a trailing ":1" and whitespace too), plain CFG
        cond, uncond = prompts.encode_pair(parts[0].text, params.negative_prompt, **skip)
    text = parts[0].text
    schedule, hires = None, None
    if isinstance(cond, TextConditioning) and len(prompt_schedule(text, params.steps)) >= 2:
        first = prompts.encode_schedule(text, params.steps)
        if conditioned or family == "sdxl" or params.hires is not None:
            raise NotImplementedError(
                "prompt: prompt editing ([a:b:0.5]) works in SD1/SD2 txt2img without hires fix only for now"
            )
        chunks = max(first[0][1].embeds.shape[1], uncond.embeds.shape[1]) // 77
        schedule = prompts.encode_schedule(text, params.steps, chunks=chunks, **skip)
        uncond = prompts.encode(params.negative_prompt, chunks, **skip)
    if family == "sdxl":  # micro-conditioning time_ids (base: sizes, refiner: aesthetic score)
        if params.hires is not None:  # the second pass is conditioned on its own size
            w, h = params.hires.latent_size(params.width, params.height, factor)
            hires = _with_time_ids(unet, cond, uncond, w * factor, h * factor)
        cond, uncond = _with_time_ids(unet, cond, uncond, params.width, params.height)
    return EncodedPrompts(cond, uncond, schedule, hires)


def _encode_parts(
    prompts: Any, parts: list[Part], params: GenerationParameters, skip: dict[str, int]
) -> tuple[Composed, TextConditioning]:
    """The ``AND`` parts of the prompt, each encoded on its own, with their weights; the negative prompt as plain
    text. As A1111's ``stack_conds``, a part with fewer chunks than the longest is padded by repeating its last token
    vector; then every part and the negative get empty chunks up to the longer of the two, as plain prompts do."""
    if is_capturing(prompts):  # its maps keep one cond per image and the tokens of one prompt
        raise NotImplementedError("capture_attention does not read AND prompts yet: capture each part on its own")
    check_int("AND parts x batch_size", len(parts) * params.batch_size, maximum=MAX_BATCH_SIZE, bound="MAX_BATCH_SIZE")
    check_area(params.width, params.height, len(parts) * params.batch_size)  # the UNet runs parts x batch images
    if any(len(prompt_schedule(part.text, params.steps)) >= 2 for part in parts):
        raise NotImplementedError("prompt: prompt editing ([a:b:0.5]) inside AND parts is not supported yet")
    conds = [prompts.encode(part.text, **skip) for part in parts]
    tokens = max(c.embeds.shape[1] for c in conds)
    conds = [_repeat_last_token(c, tokens) for c in conds]
    chunks = max(tokens // _CHUNK, prompts.chunks(params.negative_prompt))
    if chunks * _CHUNK > tokens:  # the empty chunks a plain prompt gets to match a longer negative
        empty = prompts.encode("", 1, **skip).embeds
        pad = empty.repeat(1, chunks - tokens // _CHUNK, 1)
        conds = [TextConditioning(torch.cat([c.embeds, pad.to(c.embeds)], 1), c.pooled, c.extra) for c in conds]
    _, uncond = prompts.encode_pair(parts[0].text, params.negative_prompt, chunks=chunks, **skip)
    return Composed.of(conds, [part.weight for part in parts]), uncond


_CHUNK = CHUNK_TOKENS + 2  # CLIP positions per chunk: BOS, 75 tokens, EOS


def _repeat_last_token(cond: TextConditioning, tokens: int) -> TextConditioning:
    """``cond`` padded to ``tokens`` by repeating its last token vector (A1111's ``stack_conds``)."""
    missing = tokens - cond.embeds.shape[1]
    if missing == 0:
        return cond
    last = cond.embeds[:, -1:].expand(-1, missing, -1)
    return TextConditioning(torch.cat([cond.embeds, last], 1), cond.pooled, cond.extra)


def _with_time_ids(unet: Any, cond: Cond, uncond: TextConditioning, width: int, height: int) -> tuple[Cond, Any]:
    """SDXL's micro-conditioning on a prompt pair; on every part of a composed prompt."""
    if not isinstance(cond, Composed):
        return add_time_ids(unet, cond, uncond, width, height)
    pairs = [add_time_ids(unet, part, uncond, width, height) for part in cond.parts]  # each pair's uncond is the same
    return Composed.of([c for c, _ in pairs], cond.weights), pairs[0][1]


# ------------------------------------------------------------------------------------------------- steps
def start_trace(trace: bool | Trace, space: LatentSpace) -> Trace | None:
    """The ``Trace`` that records this run (a given one is cleared first), or None; its previews need ``space``."""
    recorder = trace.start() if isinstance(trace, Trace) else Trace() if trace else None
    if recorder is not None and recorder.space is None:
        recorder.space = space
    return recorder


class StepHooks:
    """What every sampling step goes through: the non-finite watch (``sdkit.finite``), the trace and the progress
    bar. As a context manager it closes the bar on the way out, whatever happens (an interrupt in a notebook)."""

    def __init__(self, device: torch.device, recorder: Trace | None, bar: Any = None) -> None:
        self.watch, self.recorder, self.bar = FiniteWatch(device), recorder, bar
        self.on_cfg_parts = None if recorder is None else recorder.on_cfg_parts
        self.on_prompt = None if recorder is None else recorder.on_prompt

    def on_step(self, step: Step) -> None:
        self.watch(step)
        if self.recorder is not None:
            self.recorder.on_step(step)
        if self.bar is not None:
            self.bar.update(1)

    def finish(self) -> None:
        """After sampling: raise where latents first turned non-finite (the one device sync of the watch)."""
        self.watch.finish()

    def __enter__(self) -> StepHooks:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------------------- recipe
def run_recipe(
    denoiser: DiscreteDenoiser,
    vae: VAE,
    space: LatentSpace,
    prompts: EncodedPrompts,
    params: GenerationParameters,
    *,
    sampler: Sampler | str,
    sigmas: Tensor,
    hires_sigmas: Tensor | None,
    hires_schedule: Tensor | None = None,
    conditioning: Conditioning | None,
    device: torch.device,
    dtype: torch.dtype,
    hooks: StepHooks,
) -> tuple[Latents | None, Image]:
    """Run the recipe the request calls for: with image inputs the one ``conditioning`` picks; with
    ``params.hires`` the hires fix (``hires_sigmas``: its second pass, the tail of ``hires_schedule``); otherwise
    text to image. Returns the final latents (None after an inpainting paste-back) and the pixels."""
    p = prompts.to(device, dtype)
    if conditioning is not None:
        latents, image = conditioning.run(
            denoiser, vae, space, p.cond, p.uncond, params=params, sampler=sampler, sigmas=sigmas, device=device,
            dtype=dtype, on_step=hooks.on_step, on_cfg_parts=hooks.on_cfg_parts,
        )  # fmt: skip
        hooks.finish()
        return latents, image
    common: dict[str, Any] = dict(
        sigmas=sigmas, sampler=sampler, cfg_scale=params.cfg, seed=params.seed_spec, width=params.width,
        height=params.height, batch_size=params.batch_size, device=device, dtype=dtype, on_step=hooks.on_step,
        on_cfg_parts=hooks.on_cfg_parts,
    )  # fmt: skip
    if hires_sigmas is not None:
        assert params.hires is not None
        latents = hires_fix(
            denoiser, vae, p.cond, p.uncond, hires_sigmas=hires_sigmas, hires=params.hires, hires_cond=p.hires,
            hires_schedule=hires_schedule, **common,
        )  # fmt: skip
    else:
        cond = p.cond if p.schedule is None else p.schedule
        latents = txt2img(denoiser, space, cond, p.uncond, on_prompt=hooks.on_prompt, **common)
    hooks.finish()
    return latents, vae.decode(latents)
