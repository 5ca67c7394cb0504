"""Images as a typed batch: a float tensor ``[b, 3, h, w]`` in [0, 1], convertible to and from PIL.

Every PIL mode a user may hold (RGBA, palette, 16-bit grayscale, EXIF-rotated JPEG) is converted to RGB here,
once, so no other code guesses at pixel formats.

An image a user hands in is checked before it is converted (``check_image_size``: empty sides and the bounds of
``sdkit.limits``) and after (``check_finite``: NaN or infinity would only surface after sampling, as a confusing
"non-finite latents" error).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image as PILImage
from PIL import ImageOps
from torch import Tensor

from sdkit import limits

ArrayT = TypeVar("ArrayT", Tensor, np.ndarray)


@dataclass(frozen=True)
class Image:
    """A batch of RGB images with values in [0, 1]."""

    tensor: Float[Tensor, "b 3 h w"]

    def __post_init__(self) -> None:
        t = self.tensor
        if not isinstance(t, Tensor) or t.ndim != 4 or t.shape[1] != 3:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(
                f"Image.tensor must be [b, 3, h, w] RGB in [0, 1], got {shape}"
                + (
                    " (latents where pixels belong?)"
                    if isinstance(t, Tensor) and t.ndim == 4 and t.shape[1] == 4
                    else ""
                )
            )

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return int(self.tensor.shape[3]), int(self.tensor.shape[2])

    @staticmethod
    def from_pil(images: PILImage.Image | Sequence[PILImage.Image]) -> Image:
        if isinstance(images, PILImage.Image):
            images = [images]
        for im in images:
            check_image_size("image", *im.size, batch=len(images))
        arrays = [to_rgb_array(im) for im in images]
        sizes = {a.shape for a in arrays}
        if len(sizes) != 1:
            raise ValueError(f"images of a batch must share one size, got {sorted(sizes)}")
        return Image(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous())

    def to_pil(self) -> list[PILImage.Image]:
        arr = (self.tensor.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
        return [PILImage.fromarray(a.permute(1, 2, 0).numpy()) for a in arr]

    def to_signed(self) -> Float[Tensor, "b 3 h w"]:
        """Pixels in [-1, 1], as VAEs take them."""
        return self.tensor * 2 - 1

    @staticmethod
    def from_signed(x: Float[Tensor, "b 3 h w"]) -> Image:
        return Image((x / 2 + 0.5).clamp(0, 1))

    def _repr_png_(self) -> bytes:
        pics = self.to_pil()
        w, h = pics[0].size
        sheet = PILImage.new("RGB", (w * len(pics), h))
        for k, p in enumerate(pics):
            sheet.paste(p, (k * w, 0))
        if h < 128:
            s = 128 // h
            sheet = sheet.resize((sheet.width * s, sheet.height * s), PILImage.Resampling.NEAREST)
        buf = io.BytesIO()
        sheet.save(buf, format="PNG")
        return buf.getvalue()


def to_rgb_array(image: PILImage.Image) -> np.ndarray:
    """float32 ``[h, w, 3]`` in [0, 1] from any PIL image (orientation, alpha, palette and bit depth handled)."""
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("La", "RGBa"):  # premultiplied alpha: un-premultiply first (PIL converts only to LA / RGBA)
        image = image.convert(image.mode.upper())
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(image, dtype=np.float32)
        a = a / (65535.0 if a.max() > 255 else 255.0)
        return np.repeat(a[:, :, None], 3, axis=2).clip(0, 1)
    if image.mode == "F":  # [0, 1] as is; PIL's own convert("F") gives [0, 255]
        a = check_finite("image", np.asarray(image, dtype=np.float32))
        a = a / 255.0 if a.size and a.max() > 1 else a
        return np.repeat(a[:, :, None], 3, axis=2).clip(0, 1)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = PILImage.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def check_image_size(name: str, width: int, height: int, batch: int = 1) -> None:
    """Refuse an input image (or a batch of ``batch`` such images) that is empty or beyond the bounds of
    ``sdkit.limits`` (``MAX_SIDE``, ``MAX_PIXELS``, ``MAX_BATCH_SIZE``, ``MAX_BATCH_PIXELS``), before anything is
    converted or resized. The bounds are read at call time, so assigning them raises them."""
    size = f"{width}x{height}" + (f" (batch of {batch})" if batch != 1 else "")
    if width < 1 or height < 1 or batch < 1:
        raise ValueError(f"{name} is empty: {size} pixels")
    hint = "resize it first, or assign sdkit.limits.{} to raise the bound"
    if max(width, height) > limits.MAX_SIDE:
        raise ValueError(
            f"{name} is {size} pixels, a side longer than sdkit.limits.MAX_SIDE = {limits.MAX_SIDE}; "
            + hint.format("MAX_SIDE")
        )
    if width * height > limits.MAX_PIXELS:
        raise ValueError(
            f"{name} is {size} = {width * height} pixels, more than sdkit.limits.MAX_PIXELS = {limits.MAX_PIXELS}; "
            + hint.format("MAX_PIXELS")
        )
    if batch > limits.MAX_BATCH_SIZE:
        raise ValueError(
            f"{name} is a batch of {batch} images, more than sdkit.limits.MAX_BATCH_SIZE = {limits.MAX_BATCH_SIZE}; "
            "pass fewer, or assign sdkit.limits.MAX_BATCH_SIZE to raise the bound"
        )
    if batch * width * height > limits.MAX_BATCH_PIXELS:
        raise ValueError(
            f"{name} is {size}, {batch * width * height} pixels in all, more than sdkit.limits.MAX_BATCH_PIXELS = "
            f"{limits.MAX_BATCH_PIXELS}; pass fewer or smaller images, or assign sdkit.limits.MAX_BATCH_PIXELS to "
            "raise the bound"
        )


def check_finite(name: str, values: ArrayT) -> ArrayT:
    """``values`` unchanged, or a ValueError naming ``name`` if it holds NaN or infinity."""
    if isinstance(values, np.ndarray):
        finite = np.isfinite(values) if values.dtype.kind in "fc" else None
    else:
        finite = values.isfinite() if values.is_floating_point() or values.is_complex() else None
    if finite is not None and not bool(finite.all()):
        bad, total = int((~finite).sum()), math.prod(values.shape)
        raise ValueError(f"{name} holds NaN or infinite values ({bad} of {total}); values must be finite")
    return values
