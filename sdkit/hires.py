"""Hires fix (A1111's "Hires. fix"): txt2img at the base size, upscale, then img2img at the larger size.

``HiresFix`` holds the settings under the names A1111's infotext gives them: ``scale`` ("Hires upscale"),
``steps`` ("Hires steps", 0 = the base steps), ``denoising_strength`` ("Denoising strength"), ``upscaler``
("Hires upscaler") and ``resize_to`` ("Hires resize", ``(width, height)`` instead of ``scale``). The recipe is
``sdkit.recipes.hires_fix``; this module holds the pieces it composes.

Upscalers (A1111 ``modules/shared_state``/``shared.py``: ``latent_upscale_modes``; ``modules/upscaler.py``):

- "Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)", "Latent (nearest)",
  "Latent (nearest-exact)": the latents are interpolated (``torch.nn.functional.interpolate`` with the mode and
  antialias flag of ``LATENT_UPSCALERS``).
- "Lanczos", "Nearest", "None" ("None" is a plain Lanczos resize in A1111): decode, resize the pixels with PIL,
  encode again. A1111 re-encodes with a posterior *sample* from the global RNG; sdkit takes the posterior mean,
  so the result is deterministic. The pixels are resized to the target rounded down to a multiple of the VAE
  factor (A1111 resizes to the exact target and lets the encoder's strides floor it).
- Any other name (ESRGAN-type models: "R-ESRGAN 4x+", "4x-UltraSharp", "SwinIR_4x", "LDSR", ...) cannot run in
  sdkit: ``resolve_upscaler`` falls back to "Lanczos" with a warning that names the upscaler, so an infotext that
  uses one still regenerates (a different image, of the right size).

Target size (A1111 ``calculate_target_resolution``): ``(int(width * scale), int(height * scale))``; with
``resize_to``, one zero side keeps the aspect ratio, two sides upscale to cover them and the latents are then
cropped to them around the centre.

The second pass (A1111 ``sample_hr_pass`` + ``setup_img2img_steps`` with explicit steps) runs exactly
``steps or base_steps`` steps: the last ones of a schedule of ``int(steps / strength)`` steps (``hires_sigmas``;
A1111 divides by ``min(strength, 0.999)``, which gives the same schedule for fewer than 999 steps). Its noise
comes from a new per-image noise source with the same seeds, over the larger shape (A1111 makes a new
``ImageRNG``); the upscaled latents are noised to the schedule's first sigma (``z + noise * sigma``) as A1111's
img2img does. Strength 0 skips the second pass (A1111 has no rule for it).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from jaxtyping import Float
from PIL import Image as PILImage
from torch import Tensor

from sdkit.image import Image
from sdkit.latents import Latents
from sdkit.limits import MAX_STEPS, check_area, check_int, check_number
from sdkit.strength import check_strength, longer_schedule, strength_sigmas
from sdkit.vae import VAE

LATENT_UPSCALERS: dict[str, tuple[str, bool]] = {
    # A1111's latent_upscale_modes: name -> (torch interpolate mode, antialias)
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
PIXEL_UPSCALERS: dict[str, PILImage.Resampling] = {
    "Lanczos": PILImage.Resampling.LANCZOS,
    "Nearest": PILImage.Resampling.NEAREST,
    "None": PILImage.Resampling.LANCZOS,
}
FALLBACK_UPSCALER = "Lanczos"


@dataclass(frozen=True)
class HiresFix:
    """A1111's Hires. fix settings (see the module doc); ``resize_to`` replaces ``scale`` when given."""

    scale: float = 2.0
    steps: int = 0
    denoising_strength: float = 0.7
    upscaler: str = "Latent"
    resize_to: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        scale = check_number("hires scale", self.scale, minimum=0.0)
        if scale == 0:
            raise ValueError(f"hires scale must be a finite number > 0, got {self.scale!r}")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "steps", check_int("hires steps", self.steps, minimum=0, maximum=MAX_STEPS))
        try:
            object.__setattr__(self, "denoising_strength", check_strength(self.denoising_strength))
        except (TypeError, ValueError) as e:
            raise type(e)(f"hires denoising_strength: {e}") from None
        if not isinstance(self.upscaler, str) or not self.upscaler.strip():
            raise ValueError(f"hires upscaler must be a non-empty name, got {self.upscaler!r}")
        if self.resize_to is not None:
            if isinstance(self.resize_to, (str, bytes)) or not isinstance(self.resize_to, Sequence):
                raise ValueError(f"hires resize_to must be a (width, height) pair of ints, got {self.resize_to!r}")
            size = tuple(self.resize_to)
            if len(size) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in size):
                raise ValueError(f"hires resize_to must be a (width, height) pair of ints, got {self.resize_to!r}")
            if min(size) < 0 or max(size) == 0:
                raise ValueError(f"hires resize_to must be sizes >= 0, not both 0, got {self.resize_to!r}")
            object.__setattr__(self, "resize_to", (int(size[0]), int(size[1])))

    def target_size(self, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((upscale_w, upscale_h), (final_w, final_h))`` in pixels for a ``width`` x ``height`` first pass:
        the size the image is upscaled to and the size it is cropped to (A1111's rule, see the module doc)."""
        if self.resize_to is None:
            size = (int(width * self.scale), int(height * self.scale))
            return size, size
        rx, ry = self.resize_to
        if ry == 0:
            size = (rx, rx * height // width)
        elif rx == 0:
            size = (ry * width // height, ry)
        else:  # cover both sides, then crop to them
            cover = (rx, rx * height // width) if width / height < rx / ry else (ry * width // height, ry)
            return cover, (rx, ry)
        return size, size

    def latent_size(self, width: int, height: int, factor: int) -> tuple[int, int]:
        """(width, height) in latent cells of the second pass; raises when the target is under one cell."""
        (up_w, up_h), (final_w, final_h) = self.target_size(width, height)
        w = up_w // factor - (up_w - final_w) // factor
        h = up_h // factor - (up_h - final_h) // factor
        if w < 1 or h < 1:
            raise ValueError(f"hires: a {width}x{height} image upscaled by {self} is smaller than one latent cell")
        return w, h


def as_hires(value: HiresFix | Mapping[str, Any] | None) -> HiresFix | None:
    """``generate(hires=...)``: None, a ``HiresFix`` or a dict of its fields."""
    if value is None or isinstance(value, HiresFix):
        return value
    if isinstance(value, Mapping):
        unknown = set(value) - set(HiresFix.__dataclass_fields__)
        if unknown:
            raise ValueError(f"hires: unknown keys {sorted(unknown)}; allowed: {list(HiresFix.__dataclass_fields__)}")
        return HiresFix(**value)
    raise TypeError(f"hires must be a sdkit.hires.HiresFix, a dict of its fields or None, got {type(value).__name__}")


def check_hires(
    value: HiresFix | Mapping[str, Any] | None, width: int, height: int, batch_size: int, factor: int, steps: int
) -> HiresFix | None:
    """``generate(hires=...)`` checked for a ``width`` x ``height`` first pass of ``steps`` steps: a ``HiresFix``
    whose upscaler is the one sdkit will run (``resolve_upscaler``), its final size and the longer schedule its
    second pass slices (``hires_sigmas``) within ``sdkit.limits``."""
    hires = as_hires(value)
    if hires is None:
        return None
    w, h = hires.latent_size(width, height, factor)
    check_area(w * factor, h * factor, batch_size)
    n, strength = hires.steps or steps, hires.denoising_strength
    if strength > 0 and n / strength >= MAX_STEPS + 1:
        raise ValueError(
            f"hires denoising_strength {strength!r} with {n} steps needs a schedule of int({n} / {strength!r}) steps "
            f"to take the last {n} from; at most {MAX_STEPS} (sdkit.limits.MAX_STEPS): use a larger strength"
        )
    upscaler = resolve_upscaler(hires.upscaler)
    return hires if upscaler == hires.upscaler else replace(hires, upscaler=upscaler)


def resolve_upscaler(name: str) -> str:
    """The upscaler name sdkit runs for ``name`` (A1111's spelling, case-insensitive); names sdkit cannot run
    fall back to "Lanczos" with a warning naming them."""
    known = {k.lower(): k for k in (*LATENT_UPSCALERS, *PIXEL_UPSCALERS)}
    if name.strip().lower() in known:
        return known[name.strip().lower()]
    warnings.warn(
        f"hires upscaler {name!r} cannot run in sdkit (ESRGAN-type models are not included); using "
        f"{FALLBACK_UPSCALER!r} instead (known: {', '.join(known.values())})",
        stacklevel=3,
    )
    return FALLBACK_UPSCALER


def upscale(latents: Latents, vae: VAE, hires: HiresFix, width: int, height: int) -> Latents:
    """The first pass's latents (of a ``width`` x ``height`` image) at the second pass's size."""
    (up_w, up_h), (final_w, final_h) = hires.target_size(width, height)
    f, z = latents.space.factor, latents.tensor
    upscaler = resolve_upscaler(hires.upscaler)
    if upscaler in LATENT_UPSCALERS:
        mode, antialias = LATENT_UPSCALERS[upscaler]
        z = torch.nn.functional.interpolate(z, size=(up_h // f, up_w // f), mode=mode, antialias=antialias)
    else:  # pixel space: decode, resize with PIL, encode (posterior mean)
        size = (up_w // f * f, up_h // f * f)
        pictures = [p.resize(size, PIXEL_UPSCALERS[upscaler]) for p in vae.decode(latents).to_pil()]
        z = vae.encode(Image.from_pil(pictures)).tensor.to(device=z.device, dtype=z.dtype)
    ty, tx = (up_h - final_h) // f, (up_w - final_w) // f  # "Hires resize" to both sides: crop around the centre
    z = z[:, :, ty // 2 : z.shape[2] - (ty + 1) // 2, tx // 2 : z.shape[3] - (tx + 1) // 2]
    return Latents(z, latents.space)


def hires_schedule(make: Callable[[int], Tensor], steps: int, strength: float) -> Float[Tensor, " n1"]:
    """The longer schedule whose tail the second pass runs (``hires_sigmas``): ``make(int(steps / strength))``, or
    ``make(steps)`` at strength 0 or 1. A1111 spans a DPM++ SDE sampler's Brownian trees over all of it."""
    return longer_schedule(make(steps), check_strength(strength), make)


def hires_sigmas(make: Callable[[int], Tensor], steps: int, strength: float) -> Float[Tensor, " m"]:
    """The second pass's sigmas: the last ``steps`` steps of ``make(int(steps / strength))``, ``make(n)`` giving a
    schedule of ``n`` steps (e.g. ``lambda n: sdkit.schedules.make_sigmas("karras", n, model)``); empty at
    strength 0."""
    return strength_sigmas(make(steps), strength, "comfy", rebuild=make)
