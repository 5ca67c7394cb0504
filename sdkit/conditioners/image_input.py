"""Init images: anything a user may hold (PIL in any mode, numpy, torch, ``sdkit.image.Image``) -> ``Image``.

Sizes are never silently misread: a VAE needs sides that are multiples of 8, and when an image does not fit,
``size_policy`` says what to do: ``"error"`` (the default: raise, naming the size), ``"resize"`` (rescale,
aspect ratio not kept) or ``"crop"`` (scale to cover, then centre-crop: A1111's "crop and resize").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from PIL import Image as PILImage
from torch import Tensor

from sdkit.image import Image

SizePolicy = Literal["error", "resize", "crop"]
Size = tuple[int, int]  # (width, height), as PIL counts


def _array_to_unit(a: np.ndarray) -> np.ndarray:
    """A numpy image as float32 in [0, 1], by its dtype (uint8 / 255, uint16 / 65535, bool, float as is)."""
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
        if a.size and (a.min() < -1e-6 or a.max() > 1 + 1e-6):
            raise ValueError(f"float images must hold values in [0, 1], got [{a.min():.4g}, {a.max():.4g}]")
        return a.clip(0, 1)
    raise TypeError(f"numpy images must be uint8, uint16, bool or float, got {a.dtype}")


def _hwc_to_rgb(a: Float[np.ndarray, "h w c"]) -> Float[np.ndarray, "h w 3"]:
    """Gray -> RGB by repetition; RGBA/LA composited over white (as ``sdkit.image.to_rgb_array`` does for PIL)."""
    c = a.shape[2]
    if c in (2, 4):
        alpha = a[:, :, -1:]
        a = a[:, :, :-1] * alpha + (1 - alpha)
        c -= 1
    if c == 1:
        return np.repeat(a, 3, axis=2)
    if c == 3:
        return a
    raise ValueError(f"images must have 1 to 4 channels, got {c}")


def _numpy_image(a: np.ndarray) -> Tensor:
    a = _array_to_unit(np.asarray(a))
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"numpy images must be [h, w], [h, w, c] or [b, h, w, c], got shape {a.shape}")
    rgb = np.stack([_hwc_to_rgb(x) for x in a])
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).contiguous()


def _tensor_image(t: Tensor) -> Tensor:
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.dtype == torch.bool:
        t = t.float()
    t = t.detach().float().cpu()
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[1] not in (1, 3, 4):
        raise ValueError(
            f"tensor images must be channels-first [c, h, w] or [b, c, h, w] with c in 1, 3, 4, got {tuple(t.shape)}"
        )
    if t.numel() and (t.min() < -1e-6 or t.max() > 1 + 1e-6):
        raise ValueError(f"tensor images must hold values in [0, 1], got [{t.min():.4g}, {t.max():.4g}]")
    t = t.clamp(0, 1)
    if t.shape[1] == 4:
        t = t[:, :3] * t[:, 3:] + (1 - t[:, 3:])
    return t.expand(-1, 3, -1, -1).contiguous() if t.shape[1] == 1 else t


def as_image(image: Any) -> Image:
    """Convert without resizing: PIL (any mode; EXIF orientation applied), numpy, torch ``[0, 1]`` or a list."""
    if isinstance(image, Image):
        return image
    if isinstance(image, PILImage.Image):
        return Image.from_pil(image)
    if isinstance(image, np.ndarray):
        return Image(_numpy_image(image))
    if isinstance(image, Tensor):
        return Image(_tensor_image(image))
    if isinstance(image, Sequence) and not isinstance(image, (str, bytes)) and len(image) > 0:
        parts = [as_image(x).tensor for x in image]
        sizes = {tuple(p.shape[2:]) for p in parts}
        if len(sizes) != 1:
            raise ValueError(f"images of a batch must share one size, got (h, w) sizes {sorted(sizes)}")
        return Image(torch.cat(parts))
    raise TypeError(f"expected a PIL image, numpy array, torch tensor or sdkit Image, got {type(image).__name__}")


def resize(image: Image, size: Size) -> Image:
    """Bicubic, antialiased resize to ``size`` = (width, height)."""
    w, h = size
    if image.size == (w, h):
        return image
    t = F.interpolate(image.tensor.float(), size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    return Image(t.clamp(0, 1))


def center_crop(image: Image, size: Size) -> Image:
    """The centre ``size`` = (width, height) of ``image`` (which must be at least that large)."""
    w, h = size
    iw, ih = image.size
    x0, y0 = (iw - w) // 2, (ih - h) // 2
    return Image(image.tensor[:, :, y0 : y0 + h, x0 : x0 + w].contiguous())


def crop_to(image: Image, size: Size) -> Image:
    """Scale to cover ``size`` (keeping the aspect ratio), then centre-crop to it."""
    w, h = size
    iw, ih = image.size
    scale = max(w / iw, h / ih)
    cover = (max(w, round(iw * scale)), max(h, round(ih * scale)))
    return center_crop(resize(image, cover), (w, h))


def fit_size(image: Image, size: Size | None = None, size_policy: SizePolicy = "error", multiple: int = 8) -> Image:
    """``image`` at ``size`` (or at its own size when that is a multiple of ``multiple``), per ``size_policy``."""
    if size_policy not in ("error", "resize", "crop"):
        raise ValueError(f"size_policy must be 'error', 'resize' or 'crop', got {size_policy!r}")
    w, h = image.size
    if size is None:
        if w % multiple == 0 and h % multiple == 0:
            return image
        if size_policy == "error":
            raise ValueError(
                f"image size {w}x{h} is not a multiple of {multiple}; pass size_policy='resize' or 'crop' "
                f"(or an explicit size) to make it {max(multiple, round(w / multiple) * multiple)}x"
                f"{max(multiple, round(h / multiple) * multiple)}"
            )
        if size_policy == "crop" and w >= multiple and h >= multiple:  # trim the few extra pixels, no resampling
            return center_crop(image, (w // multiple * multiple, h // multiple * multiple))
        size = (max(multiple, round(w / multiple) * multiple), max(multiple, round(h / multiple) * multiple))
    tw, th = size
    if tw % multiple or th % multiple:
        raise ValueError(f"target size {tw}x{th} must be a multiple of {multiple}")
    if (w, h) == (tw, th):
        return image
    if size_policy == "error":
        raise ValueError(
            f"image size {w}x{h} differs from the requested {tw}x{th}; pass size_policy='resize' or 'crop'"
        )
    return resize(image, (tw, th)) if size_policy == "resize" else crop_to(image, (tw, th))


def to_image(image: Any, *, size: Size | None = None, size_policy: SizePolicy = "error", multiple: int = 8) -> Image:
    """Any supported image -> ``Image`` with sides that are multiples of ``multiple`` (see ``fit_size``)."""
    return fit_size(as_image(image), size, size_policy, multiple)


@dataclass(frozen=True)
class InitImage:
    """The init-image conditioner: ``InitImage(size_policy="crop")(pil) -> Image`` ready for a VAE."""

    size: Size | None = None
    size_policy: SizePolicy = "error"
    multiple: int = 8

    def __call__(self, image: Any) -> Image:
        return to_image(image, size=self.size, size_policy=self.size_policy, multiple=self.multiple)
