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
import numbers
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from PIL import Image as PILImage
from PIL import ImageOps
from torch import Tensor

from sdkit.conditioners.image_input import (
    Size,
    SizePolicy,
    as_float,
    check_fit,
    checked,
    crop_to,
    in_unit_range,
    resize,
)
from sdkit.image import Image, check_finite, check_image_size
from sdkit.limits import check_bool, check_choice, check_int, check_number
from sdkit.types import Denoiser

MaskedContent = Literal["original", "fill", "latent_noise", "latent_nothing"]
"""What the repainted region starts from (A1111's "Masked content"): the original image, the image with the
hole filled from its surroundings, fresh latent noise, or zero latents."""
MASKED_CONTENT: tuple[str, ...] = get_args(MaskedContent)

PixelMask = Float[Tensor, "b 1 h w"]


# ------------------------------------------------------------------------------------------ conversion
MAX_BLUR = 256.0
"""The largest mask blur (standard deviation, pixels); assign ``sdkit.conditioners.masks.MAX_BLUR`` to raise it.
A1111's "Mask blur" slider stops at 64. A blur costs about 12 sigma multiply-adds per pixel and pass: at the bound a
4096x4096 mask takes about 10 s on one CPU core."""


def _pil_mask(image: PILImage.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        lum = np.asarray(image.convert("RGBA").convert("RGB").convert("L"), dtype=np.float32) / 255.0
        return lum * rgba[:, :, 3]
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(image, dtype=np.float32) / 65535.0
    if image.mode == "F":  # float pixels may be NaN or infinite (not clipped to 0 / 1)
        return check_finite("mask", np.asarray(image, dtype=np.float32)).clip(0, 1)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def as_mask(mask: Any) -> PixelMask:
    """A mask ``[b, 1, h, w]`` in [0, 1] from PIL (any mode), numpy or torch (bool, uint8, uint16, float in [0, 1]);
    colour masks are read by luminance. Arrays are ``[h, w]``, ``[1 or 3, h, w]``, ``[b, h, w]`` or
    ``[b, c, h, w]`` with c in 1..4."""
    if isinstance(mask, PILImage.Image):
        check_image_size("mask", *mask.size)
        return torch.from_numpy(_pil_mask(mask).copy())[None, None]
    if isinstance(mask, Image):
        return checked(mask, "mask").tensor.mean(dim=1, keepdim=True)
    if not isinstance(mask, (np.ndarray, Tensor)):
        raise TypeError(f"mask must be a PIL image, numpy array or torch tensor, got {type(mask).__name__}")
    shape = tuple(mask.shape)
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask[None] if mask.shape[0] in (1, 3) else mask[:, None]
    if mask.ndim != 4:
        raise ValueError(f"mask must be [h, w], [1, h, w], [b, h, w] or [b, c, h, w], got shape {shape}")
    b, c, h, w = mask.shape
    if not 1 <= c <= 4:
        raise ValueError(f"mask must have 1 to 4 channels, got shape {shape}")
    check_image_size("mask", w, h, b)
    t = as_float(mask, "mask")
    if c != 1:
        t = t.mean(dim=1, keepdim=True)
    return in_unit_range(t, "mask").contiguous()


def check_blur(blur: Any) -> float:
    """A mask blur: a finite number of pixels in [0, MAX_BLUR]."""
    value = check_number("mask blur", blur, minimum=0)
    if value > MAX_BLUR:
        raise ValueError(
            f"mask blur must be at most sdkit.conditioners.masks.MAX_BLUR = {MAX_BLUR:g} pixels, got {value:g} "
            "(assign MAX_BLUR to raise the bound)"
        )
    return value


def _dilate_1d(x: Tensor, radius: int, dim: int) -> Tensor:
    """Running maximum over ``[i - radius, i + radius]`` along ``dim`` (the window cut at the edges), in
    O(log radius) passes: dilating by radius a, then by the 3-point set {-s, 0, s} with s <= 2a + 1, is a dilation
    by radius a + s, so steps 1, 2, 4, ... reach any radius."""
    n = x.shape[dim]
    radius = min(radius, n - 1)  # beyond the far edge a window holds the whole line
    done, step = 0, 1
    while done < radius:
        s = min(step, radius - done)
        head, tail = x.narrow(dim, 0, n - s), x.narrow(dim, s, n - s)
        y = x.clone()
        y.narrow(dim, 0, n - s).copy_(torch.maximum(head, tail))
        y.narrow(dim, s, n - s).copy_(torch.maximum(y.narrow(dim, s, n - s), head))
        x, done, step = y, done + s, step * 2
    return x


def grow(mask: PixelMask, pixels: int) -> PixelMask:
    """Dilate the repaint region by ``pixels`` (a square neighbourhood: the max over a (2p+1)^2 window, as
    ``max_pool2d`` computes it); negative values erode it. Time O(h w log |pixels|) whatever ``pixels`` is."""
    if pixels == 0:
        return mask
    r = abs(pixels)
    sign = 1 if pixels > 0 else -1
    return sign * _dilate_1d(_dilate_1d(sign * mask, r, 2), r, 3)


def _blur_last(x: Tensor, k: Tensor) -> Tensor:
    """Convolve the last dim of ``x`` with the odd kernel ``k``, edges replicated. Blocks of outputs are one
    matrix product with a band matrix (BLAS speed; 10-30x faster than a depthwise conv on CPU); entries outside
    the band are exact zeros, so a pixel farther than the kernel from every non-zero value stays exactly 0."""
    r, n = (k.numel() - 1) // 2, x.shape[-1]
    block = max(64, 2 * r)
    blocks = -(-n // block)
    padded = F.pad(x, (r, r + blocks * block - n, 0, 0), mode="replicate")  # x is [b, c, h, w]
    windows = padded.unfold(-1, block + 2 * r, block)  # [..., blocks, block + 2r], overlapping views
    rows = torch.arange(block)[:, None] + torch.arange(2 * r + 1)[None, :]  # input index of output i, tap j
    band = torch.zeros(block + 2 * r, block, dtype=x.dtype, device=x.device)
    band[rows, torch.arange(block)[:, None].expand_as(rows)] = k.to(x).expand_as(rows)
    out = windows.reshape(-1, block + 2 * r) @ band  # one 2-D product: a batched one runs at a fraction of the speed
    return out.reshape(*x.shape[:-1], blocks * block)[..., :n]


def gaussian_blur(x: Float[Tensor, "b c h w"], sigma: float) -> Float[Tensor, "b c h w"]:
    """Separable Gaussian blur (standard deviation ``sigma`` pixels, at most ``MAX_BLUR``; kernel reaching
    3 sigma; edges replicated). Pixels farther than the kernel from any non-zero value stay exactly 0."""
    sigma = check_blur(sigma)
    if sigma <= 0:
        return x
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    x = _blur_last(x, k)
    return _blur_last(x.transpose(2, 3), k).transpose(2, 3).contiguous()


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
    target, policy, _ = check_fit(size, size_policy, 1)
    grow_pixels = check_grow(grow_pixels)
    blur = check_blur(blur)
    invert = check_bool("mask invert", invert)
    m = as_mask(mask)
    if invert:
        m = 1 - m
    if target is not None and (m.shape[3], m.shape[2]) != target:
        if policy == "error":
            raise ValueError(f"mask size {m.shape[3]}x{m.shape[2]} differs from the image's {target[0]}x{target[1]}")
        rgb = Image(m.expand(-1, 3, -1, -1))
        m = (resize(rgb, target) if policy == "resize" else crop_to(rgb, target)).tensor[:, :1].contiguous()
    return gaussian_blur(grow(m, grow_pixels), blur).clamp(0, 1)


def check_grow(pixels: Any) -> int:
    """Mask growth in pixels: any integer (negative erodes; beyond the image's side it covers the whole image)."""
    if isinstance(pixels, bool) or type(pixels).__name__ == "bool_" or not isinstance(pixels, numbers.Integral):
        raise TypeError(f"mask grow must be an integer (pixels, negative erodes), got {type(pixels).__name__}")
    return int(pixels)


@dataclass(frozen=True)
class Mask:
    """A mask with its options, as ``Kit.generate(mask=...)`` takes it (a bare image means the defaults)."""

    image: Any
    blur: float = 4.0
    grow: int = 0
    invert: bool = False
    content: MaskedContent = "original"

    def __post_init__(self) -> None:
        check_blur(self.blur)
        check_grow(self.grow)
        check_bool("mask invert", self.invert)
        check_choice("mask content", self.content, MASKED_CONTENT)

    def __call__(self, size: Size | None = None, size_policy: SizePolicy = "error") -> PixelMask:
        return prepare_mask(
            self.image, size=size, size_policy=size_policy, grow_pixels=self.grow, blur=self.blur, invert=self.invert
        )


# ------------------------------------------------------------------------------------------ latents
def latent_mask(mask: PixelMask, factor: int) -> Float[Tensor, "b 1 h_lat w_lat"]:
    """The mask at latent resolution: a latent cell is repainted as much as its most-repainted pixel, so
    every masked pixel lies in a regenerated cell."""
    factor = check_int("factor", factor, maximum=64)
    return F.max_pool2d(mask, factor, stride=factor)


def _wide_blur(x: Tensor, sigma: float) -> Tensor:
    """A Gaussian blur of any width in O(h w) time: for sigma above 4 px the image is area-averaged down by the
    power of 2 that brings sigma to 2-4 px, blurred there and bilinearly upsampled (the result is smooth on that
    scale anyway). ``fill_masked``'s widest rounds blur by half the image's side."""
    factor = 2 ** max(0, math.ceil(math.log2(sigma / 4))) if sigma > 4 else 1
    if factor == 1:
        return gaussian_blur(x, sigma)
    h, w = x.shape[2:]
    small = F.interpolate(x, size=(-(-h // factor), -(-w // factor)), mode="area")
    return F.interpolate(gaussian_blur(small, sigma / factor), size=(h, w), mode="bilinear", align_corners=False)


def fill_masked(image: Image, mask: PixelMask, rounds: int = 8) -> Image:
    """A1111's "fill": the repaint region painted with the colours around it (repeated normalised blurs of the
    kept pixels, widest first), so the model starts from a plausible average instead of the old content."""
    rounds = check_int("rounds", rounds, minimum=0, maximum=32)
    keep = (mask < 0.5).to(image.tensor)
    x = image.tensor * keep
    filled = x.clone()
    h, w = image.tensor.shape[2:]
    for k in range(rounds):
        sigma = max(h, w) / 2 ** (k + 1)
        num, den = _wide_blur(x, sigma), _wide_blur(keep, sigma)
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
