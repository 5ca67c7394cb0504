"""Init images: anything a user may hold (PIL in any mode, numpy, torch, ``sdkit.image.Image``) -> ``Image``.

Sizes are never silently misread: a VAE needs sides that are multiples of 8, and when an image does not fit,
``size_policy`` says what to do: ``"error"`` (the default: raise, naming the size), ``"resize"`` (rescale,
aspect ratio not kept) or ``"crop"`` (scale to cover, then centre-crop: A1111's "crop and resize").

Every input is checked before it is converted: its size against ``sdkit.limits`` (``sdkit.image.check_image_size``;
nothing is allocated for an image that is too large), its dtype (complex and non-numeric arrays are refused) and,
after conversion, its values (NaN or infinity would otherwise surface only after sampling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from torch import Tensor

from sdkit import limits
from sdkit.image import Image, check_finite, check_image_size
from sdkit.limits import check_choice, check_int

SizePolicy = Literal["error", "resize", "crop"]
SIZE_POLICIES: tuple[str, ...] = ("error", "resize", "crop")
Size = tuple[int, int]  # (width, height), as PIL counts

# dtype -> the value that means "full": integers of these widths are read as fractions of it (as PIL and image
# files store them); other integers and floats are taken as they are (then they must lie in [0, 1])
_FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_TORCH_FULL_SCALE = {torch.uint8: 255.0, torch.uint16: 65535.0}
_TORCH_NUMBERS = {torch.bool, torch.float16, torch.bfloat16, torch.float32, torch.float64, *_TORCH_FULL_SCALE}
_TORCH_NUMBERS |= {torch.int8, torch.int16, torch.int32, torch.int64, torch.uint32, torch.uint64}


def as_float(values: np.ndarray | Tensor, name: str) -> Tensor:
    """An array's numbers as a float32 CPU tensor of the same shape, read by dtype: bool as 0/1, uint8 / 255,
    uint16 / 65535, other integers and floats as they are. Complex and non-numeric dtypes are a TypeError, NaN
    or infinity a ValueError naming ``name``. Check the size (``check_image_size``) before calling: this copies."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold bool, integer or float numbers, got dtype {values.dtype}")
        check_finite(name, values)
        out = np.array(values, dtype=np.float32, order="C")  # a copy: writable, contiguous, native byte order
        scale = _FULL_SCALE.get(values.dtype)
        if scale:
            out /= scale
        return torch.from_numpy(out)
    if values.dtype not in _TORCH_NUMBERS or values.layout != torch.strided:
        raise TypeError(f"{name} must hold bool, integer or float numbers, got dtype {values.dtype}")
    t = check_finite(name, values.detach()).cpu()
    scale = _TORCH_FULL_SCALE.get(t.dtype)
    return t.float() / scale if scale else t.float()


def in_unit_range(t: Tensor, name: str) -> Tensor:
    """``t`` clamped to [0, 1], or a ValueError if it lies outside (beyond rounding)."""
    if t.numel() and (t.min() < -1e-6 or t.max() > 1 + 1e-6):
        raise ValueError(
            f"{name} values must be in [0, 1] (or bool / uint8 / uint16), got [{t.min():.4g}, {t.max():.4g}]"
        )
    return t.clamp(0, 1)


def _composite(t: Tensor) -> Tensor:
    """``[b, c, h, w]`` with c in 1..4 -> RGB: gray repeated, gray+alpha / RGBA composited over white (as
    ``sdkit.image.to_rgb_array`` does for PIL)."""
    c = t.shape[1]
    if c in (2, 4):
        alpha = t[:, -1:]
        t = t[:, :-1] * alpha + (1 - alpha)
    return t.expand(-1, 3, -1, -1).contiguous() if t.shape[1] == 1 else t.contiguous()


def _numpy_image(a: np.ndarray) -> Tensor:
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"numpy images must be [h, w], [h, w, c] or [b, h, w, c], got shape {a.shape}")
    b, h, w, c = a.shape
    if not 1 <= c <= 4:
        raise ValueError(f"images must have 1 to 4 channels, got {c} (shape {a.shape})")
    check_image_size("image", w, h, b)
    t = in_unit_range(as_float(a, "image"), "image")
    return _composite(t.permute(0, 3, 1, 2))


def _tensor_image(t: Tensor) -> Tensor:
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[1] not in (1, 3, 4):
        raise ValueError(
            f"tensor images must be channels-first [c, h, w] or [b, c, h, w] with c in 1, 3, 4, got {tuple(t.shape)}"
        )
    check_image_size("image", t.shape[3], t.shape[2], t.shape[0])
    return _composite(in_unit_range(as_float(t, "image"), "image"))


def as_image(image: Any) -> Image:
    """Convert without resizing: PIL (any mode; EXIF orientation applied), numpy, torch ``[0, 1]`` or a list."""
    if isinstance(image, Image):
        return checked(image, "image")
    if isinstance(image, PILImage.Image):
        return Image.from_pil(image)
    if isinstance(image, np.ndarray):
        return Image(_numpy_image(image))
    if isinstance(image, Tensor):
        return Image(_tensor_image(image))
    if isinstance(image, Sequence) and not isinstance(image, (str, bytes)) and len(image) > 0:
        return _image_list(image)
    raise TypeError(f"expected a PIL image, numpy array, torch tensor or sdkit Image, got {type(image).__name__}")


def checked(image: Image, name: str) -> Image:
    """An ``Image`` a user passed in, checked as a conversion would be: size within the bounds, finite values."""
    check_image_size(name, *image.size, batch=image.tensor.shape[0])
    check_finite(name, image.tensor)
    return image


def _image_list(images: Sequence[Any]) -> Image:
    """A batch from a list of single images or batches, refused as soon as it passes the batch bounds."""
    if len(images) > limits.MAX_BATCH_SIZE:
        check_image_size("image", 1, 1, len(images))
    parts: list[Tensor] = []
    for x in images:
        if isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
            raise TypeError(f"a list of images must hold images, not {type(x).__name__}s (nested lists)")
        part = as_image(x).tensor
        if parts and part.shape[2:] != parts[0].shape[2:]:
            sizes = sorted({tuple(parts[0].shape[2:]), tuple(part.shape[2:])})
            raise ValueError(f"images of a batch must share one size, got (h, w) sizes {sizes}")
        parts.append(part)
        check_image_size("image", part.shape[3], part.shape[2], sum(p.shape[0] for p in parts))
    return Image(torch.cat(parts))


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
    """Scale to cover ``size`` (keeping the aspect ratio), then centre-crop to it. The crop is taken first, at the
    image's resolution, so no intermediate is larger than the input or the output (a 8192x1 strip cropped to a
    square would otherwise be scaled to millions of pixels a side)."""
    w, h = size
    iw, ih = image.size
    scale = max(w / iw, h / ih)
    box = (min(iw, max(1, round(w / scale))), min(ih, max(1, round(h / scale))))
    return resize(center_crop(image, box), (w, h))


def check_fit(size: Any, size_policy: Any, multiple: Any) -> tuple[Size | None, str, int]:
    """The checked arguments of ``fit_size``: a ``size`` of two positive multiples of ``multiple`` within
    ``sdkit.limits``, a known ``size_policy``, an integer ``multiple`` in [1, MAX_SIDE]."""
    policy = check_choice("size_policy", size_policy, SIZE_POLICIES)
    multiple = check_int("multiple", multiple, maximum=limits.MAX_SIDE, bound="MAX_SIDE")
    if size is None:
        return None, policy, multiple
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise TypeError(f"size must be a (width, height) pair, got {type(size).__name__}")
    tw = check_int("size width", size[0], maximum=limits.MAX_SIDE, bound="MAX_SIDE")
    th = check_int("size height", size[1], maximum=limits.MAX_SIDE, bound="MAX_SIDE")
    if tw % multiple or th % multiple:
        raise ValueError(f"target size {tw}x{th} must be a multiple of {multiple}")
    check_image_size("size", tw, th)
    return (tw, th), policy, multiple


def fit_size(image: Image, size: Size | None = None, size_policy: SizePolicy = "error", multiple: int = 8) -> Image:
    """``image`` at ``size`` (or at its own size when that is a multiple of ``multiple``), per ``size_policy``."""
    target, policy, multiple = check_fit(size, size_policy, multiple)
    w, h = image.size
    if target is None:
        if w % multiple == 0 and h % multiple == 0:
            return image
        if policy == "error":
            raise ValueError(
                f"image size {w}x{h} is not a multiple of {multiple}; pass size_policy='resize' or 'crop' "
                f"(or an explicit size) to make it {max(multiple, round(w / multiple) * multiple)}x"
                f"{max(multiple, round(h / multiple) * multiple)}"
            )
        if policy == "crop" and w >= multiple and h >= multiple:  # trim the few extra pixels, no resampling
            return center_crop(image, (w // multiple * multiple, h // multiple * multiple))
        target = (max(multiple, round(w / multiple) * multiple), max(multiple, round(h / multiple) * multiple))
        check_image_size(f"image rounded to a multiple of {multiple}", *target)
    tw, th = target
    if (w, h) == (tw, th):
        return image
    if policy == "error":
        raise ValueError(
            f"image size {w}x{h} differs from the requested {tw}x{th}; pass size_policy='resize' or 'crop'"
        )
    return resize(image, (tw, th)) if policy == "resize" else crop_to(image, (tw, th))


def to_image(image: Any, *, size: Size | None = None, size_policy: SizePolicy = "error", multiple: int = 8) -> Image:
    """Any supported image -> ``Image`` with sides that are multiples of ``multiple`` (see ``fit_size``)."""
    check_fit(size, size_policy, multiple)  # before the image is converted
    return fit_size(as_image(image), size, size_policy, multiple)


def check_batch(name: str, batch: int, batch_size: int) -> None:
    """One image per generated image, or a single one used for all (the rule of ``sdkit.recipes``)."""
    if batch not in (1, batch_size):
        raise ValueError(
            f"{name} has a batch of {batch} images, but batch_size is {batch_size}; give 1 image (used for every "
            f"image of the batch) or {batch_size}"
        )


@dataclass(frozen=True)
class InitImage:
    """The init-image conditioner: ``InitImage(size_policy="crop")(pil) -> Image`` ready for a VAE."""

    size: Size | None = None
    size_policy: SizePolicy = "error"
    multiple: int = 8

    def __post_init__(self) -> None:
        check_fit(self.size, self.size_policy, self.multiple)

    def __call__(self, image: Any) -> Image:
        return to_image(image, size=self.size, size_policy=self.size_policy, multiple=self.multiple)
