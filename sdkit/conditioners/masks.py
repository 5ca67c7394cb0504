"""Inpainting masks: conversion, grow/blur, latent-resolution masks, masked content, the masked denoiser and
the final paste-back.

Convention (A1111's "inpaint masked"): 1 (white) = repaint, 0 (black) = keep. A mask with an alpha channel
reads as its luminance times alpha, so white strokes painted on a transparent layer mark what to repaint.

``masked(denoiser, known, mask, noise)`` is the ``Denoiser -> Denoiser`` wrapper that makes any model inpaint:
before each model call the kept region of ``x`` is replaced by the known latents noised to the current sigma
(with the run's own noise), and the kept region of the estimate is replaced by the known latents; this is the
formulation of ComfyUI's ``KSamplerX0Inpaint``. Samplers then carry the kept region along exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from PIL import Image as PILImage
from PIL import ImageOps
from torch import Tensor

from sdkit.conditioners.image_input import Size, SizePolicy
from sdkit.image import Image
from sdkit.types import Denoiser

MaskedContent = Literal["original", "fill", "latent_noise", "latent_nothing"]
"""What the repainted region starts from (A1111's "Masked content"): the original image, the image with the
hole filled from its surroundings, fresh latent noise, or zero latents."""

PixelMask = Float[Tensor, "b 1 h w"]


# ------------------------------------------------------------------------------------------ conversion
def _pil_mask(image: PILImage.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        lum = np.asarray(image.convert("RGBA").convert("RGB").convert("L"), dtype=np.float32) / 255.0
        return lum * rgba[:, :, 3]
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(image, dtype=np.float32) / 65535.0
    if image.mode == "F":
        return np.asarray(image, dtype=np.float32).clip(0, 1)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def as_mask(mask: Any) -> PixelMask:
    """A mask ``[b, 1, h, w]`` in [0, 1] from PIL (any mode), numpy or torch (bool, uint8, float in [0, 1]);
    colour masks are read by luminance."""
    if isinstance(mask, PILImage.Image):
        return torch.from_numpy(_pil_mask(mask).copy())[None, None]
    if isinstance(mask, Image):
        return mask.tensor.mean(dim=1, keepdim=True)
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a PIL image, numpy array or torch tensor, got {type(mask).__name__}")
    t = mask.detach().cpu()
    if t.dtype == torch.bool:
        t = t.float()
    elif t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.dtype == torch.int32 or t.dtype == torch.int64:
        t = t.float()
    t = t.float()
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t[None] if t.shape[0] in (1, 3) else t[:, None]
    if t.ndim != 4:
        raise ValueError(f"mask must be [h, w], [1, h, w], [b, h, w] or [b, c, h, w], got shape {tuple(mask.shape)}")
    if t.shape[1] != 1:
        t = t.mean(dim=1, keepdim=True)
    if t.numel() and (t.min() < -1e-6 or t.max() > 1 + 1e-6):
        raise ValueError(f"mask values must be in [0, 1] (or bool / uint8), got [{t.min():.4g}, {t.max():.4g}]")
    return t.clamp(0, 1).contiguous()


def grow(mask: PixelMask, pixels: int) -> PixelMask:
    """Dilate the repaint region by ``pixels`` (a square neighbourhood); negative values erode it."""
    if pixels == 0:
        return mask
    k = 2 * abs(pixels) + 1
    if pixels > 0:
        return F.max_pool2d(mask, k, stride=1, padding=abs(pixels))
    return -F.max_pool2d(-mask, k, stride=1, padding=abs(pixels))


def gaussian_blur(x: Float[Tensor, "b c h w"], sigma: float) -> Float[Tensor, "b c h w"]:
    """Separable Gaussian blur (standard deviation ``sigma`` pixels, kernel reaching 3 sigma). Pixels farther
    than the kernel from any non-zero value stay exactly 0."""
    if sigma <= 0:
        return x
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = (k / k.sum()).to(x)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def prepare_mask(
    mask: Any,
    *,
    size: Size | None = None,
    size_policy: SizePolicy = "error",
    grow_pixels: int = 0,
    blur: float = 0.0,
    invert: bool = False,
) -> PixelMask:
    """The pixel mask a recipe uses: converted, sized like the image (``size`` = (width, height)), inverted,
    grown by ``grow_pixels`` and blurred with standard deviation ``blur`` pixels (A1111's "Mask blur")."""
    m = as_mask(mask)
    if invert:
        m = 1 - m
    if size is not None and (m.shape[3], m.shape[2]) != tuple(size):
        if size_policy == "error":
            raise ValueError(f"mask size {m.shape[3]}x{m.shape[2]} differs from the image's {size[0]}x{size[1]}")
        from sdkit.conditioners.image_input import crop_to, resize

        rgb = Image(m.expand(-1, 3, -1, -1))
        m = (resize(rgb, size) if size_policy == "resize" else crop_to(rgb, size)).tensor[:, :1].contiguous()
    return gaussian_blur(grow(m, grow_pixels), blur).clamp(0, 1)


@dataclass(frozen=True)
class Mask:
    """A mask with its options, as ``Kit.generate(mask=...)`` takes it (a bare image means the defaults)."""

    image: Any
    blur: float = 4.0
    grow: int = 0
    invert: bool = False
    content: MaskedContent = "original"

    def __post_init__(self) -> None:
        if isinstance(self.blur, bool) or not isinstance(self.blur, (int, float)) or not 0 <= self.blur < math.inf:
            raise ValueError(f"mask blur must be a finite number >= 0 (pixels), got {self.blur!r}")
        if isinstance(self.grow, bool) or not isinstance(self.grow, int):
            raise TypeError(f"mask grow must be an integer (pixels, negative erodes), got {self.grow!r}")
        if self.content not in ("original", "fill", "latent_noise", "latent_nothing"):
            raise ValueError(
                f"mask content must be 'original', 'fill', 'latent_noise' or 'latent_nothing', got {self.content!r}"
            )

    def __call__(self, size: Size | None = None, size_policy: SizePolicy = "error") -> PixelMask:
        return prepare_mask(
            self.image, size=size, size_policy=size_policy, grow_pixels=self.grow, blur=self.blur, invert=self.invert
        )


# ------------------------------------------------------------------------------------------ latents
def latent_mask(mask: PixelMask, factor: int) -> Float[Tensor, "b 1 h_lat w_lat"]:
    """The mask at latent resolution: a latent cell is repainted as much as its most-repainted pixel, so
    every masked pixel lies in a regenerated cell."""
    return F.max_pool2d(mask, factor, stride=factor)


def fill_masked(image: Image, mask: PixelMask, rounds: int = 8) -> Image:
    """A1111's "fill": the repaint region painted with the colours around it (repeated normalised blurs of the
    kept pixels, widest first), so the model starts from a plausible average instead of the old content."""
    keep = (mask < 0.5).to(image.tensor)
    x = image.tensor * keep
    filled = x.clone()
    h, w = image.tensor.shape[2:]
    for k in range(rounds):
        sigma = max(h, w) / 2 ** (k + 1)
        num, den = gaussian_blur(x, sigma), gaussian_blur(keep, sigma)
        estimate = num / den.clamp_min(1e-8)
        known = den > 1e-6
        filled = torch.where((keep < 0.5) & known.expand_as(filled), estimate, filled)
    return Image((image.tensor * keep + filled * (1 - keep)).clamp(0, 1))


def masked_image(image: Image, mask: PixelMask) -> Image:
    """The repaint region set to mid-grey (0 in the VAE's [-1, 1] pixels): what a 9-channel inpainting UNet sees
    as its "masked image" (the binarised mask, as diffusers and the SD inpainting training do)."""
    keep = (mask < 0.5).to(image.tensor)
    return Image(image.tensor * keep + 0.5 * (1 - keep))


class Masked:
    """``Denoiser -> Denoiser``: inpaint by holding the kept region to ``known`` (see the module docstring).

    ``known``: clean latents of the original ``[b, c, h, w]``; ``mask``: 1 = repaint, at latent resolution;
    ``noise``: the standard normal noise of the run, shaped like ``known``.
    """

    def __init__(self, denoiser: Denoiser, known: Tensor, mask: Tensor, noise: Tensor) -> None:
        if mask.shape[-2:] != known.shape[-2:]:
            raise ValueError(f"latent mask {tuple(mask.shape)} and known latents {tuple(known.shape)} differ in size")
        self.denoiser, self.known, self.mask, self.noise = denoiser, known, mask.to(known), noise

    def __call__(self, x: Float[Tensor, "b c h w"], sigma: Float[Tensor, " b"]) -> Float[Tensor, "b c h w"]:
        s = sigma.reshape(-1, 1, 1, 1).to(x)
        keep = 1 - self.mask
        x = x * self.mask + (self.known + self.noise * s) * keep
        return self.denoiser(x, sigma) * self.mask + self.known * keep


def masked(denoiser: Denoiser, known: Tensor, mask: Tensor, noise: Tensor) -> Denoiser:
    return Masked(denoiser, known, mask, noise)


def paste_back(original: Image, generated: Image, mask: PixelMask) -> Image:
    """``original`` where the mask is 0 (bit for bit), ``generated`` where it is 1, blended in between."""
    if original.size != generated.size:
        raise ValueError(f"paste_back: original {original.size} and generated {generated.size} differ in size")
    m = mask.to(generated.tensor)
    o = original.tensor.to(generated.tensor)
    if o.shape[0] != generated.tensor.shape[0]:
        o = o.expand(generated.tensor.shape[0], -1, -1, -1)
    return Image(torch.where(m > 0, o * (1 - m) + generated.tensor * m, o))
