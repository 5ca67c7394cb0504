"""Depth maps as ControlNet / depth-model conditioning: user-supplied 8- or 16-bit grayscale, or MiDaS.

Depth ControlNets were trained on MiDaS output: *inverse* relative depth, normalised to [0, 255], near = bright,
repeated over three channels. ``depth_image`` brings a user's map to that form (``invert=True`` for maps where
near is dark, e.g. metric depth); ``MidasDepth`` runs controlnet_aux's ``MidasDetector`` on a photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image as PILImage
from PIL import ImageOps
from torch import Tensor

from sdkit import limits
from sdkit.conditioners.image_input import as_float, as_image, checked, in_unit_range, resize
from sdkit.image import Image, check_finite, check_image_size
from sdkit.limits import check_bool, check_int


def depth_values(depth: Any) -> Float[Tensor, "b 1 h w"]:
    """Depth as float in [0, 1] by its container's bit depth (never by its values): PIL ``L`` / uint8 / 255,
    ``I;16`` / ``I`` / uint16 / 65535, float (``F``, float arrays and tensors) as is; an RGB map is read by
    its channel mean. Arrays may be ``[h, w]``, ``[c, h, w]`` or ``[b, c, h, w]`` (c in 1..4)."""
    if isinstance(depth, PILImage.Image):
        check_image_size("depth", *depth.size)
        depth = ImageOps.exif_transpose(depth) or depth
        if depth.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(depth, dtype=np.float32) / 65535.0
        elif depth.mode in ("F", "L"):
            a = check_finite("depth", np.asarray(depth, dtype=np.float32)) / (255.0 if depth.mode == "L" else 1.0)
        else:
            a = np.asarray(depth.convert("RGB"), dtype=np.float32).mean(axis=2) / 255.0
        return torch.from_numpy(a.copy())[None, None]
    if isinstance(depth, Image):
        return checked(depth, "depth").tensor.mean(dim=1, keepdim=True)
    if not isinstance(depth, (np.ndarray, Tensor)):
        raise TypeError(f"depth must be a PIL image, numpy array or torch tensor, got {type(depth).__name__}")
    shape = tuple(depth.shape)
    if depth.ndim == 2:
        depth = depth[None, None]
    elif depth.ndim == 3:
        depth = depth[None] if depth.shape[0] in (1, 3) else depth[:, None]
    if depth.ndim != 4 or not 1 <= depth.shape[1] <= 4:
        raise ValueError(f"depth must be [h, w], [c, h, w] or [b, c, h, w] with c in 1..4, got shape {shape}")
    check_image_size("depth", depth.shape[3], depth.shape[2], depth.shape[0])
    t = as_float(depth, "depth")
    return t.mean(dim=1, keepdim=True) if t.shape[1] != 1 else t


def depth_image(depth: Any, *, normalize: bool = True, invert: bool = False) -> Image:
    """A depth map as the 3-channel control image depth ControlNets take. ``normalize`` stretches each map to
    [0, 1] (min -> 0, max -> 1; a flat map becomes 0); without it values must already lie in [0, 1]."""
    normalize, invert = check_bool("normalize", normalize), check_bool("invert", invert)
    d = depth_values(depth)
    if normalize:
        lo = d.amin(dim=(2, 3), keepdim=True)
        span = d.amax(dim=(2, 3), keepdim=True) - lo
        # float64 for the stretch: float32 maps spanning more than ~1e38 would overflow to inf
        d = torch.where(span > 0, (d.double() - lo) / span.double().clamp_min(1e-300), 0.0).float()
    else:
        d = in_unit_range(d, "depth")
    if invert:
        d = 1 - d
    return Image(d.expand(-1, 3, -1, -1).contiguous())


@dataclass(frozen=True)
class MidasDepth:
    """The MiDaS conditioner: ``MidasDepth(detector)(photo) -> Image`` (near = bright), at the photo's size.

    ``detector`` is controlnet_aux's ``MidasDetector`` (``sdkit.loading.load_midas``); the photo is run at
    ``detect_resolution`` (its shorter side) through the detector's own call path."""

    detector: Any
    detect_resolution: int = 384

    def __post_init__(self) -> None:
        check_int("detect_resolution", self.detect_resolution, maximum=limits.MAX_SIDE, bound="MAX_SIDE")

    def __call__(self, image: Any) -> Image:
        img = as_image(image)
        out = []
        for t in img.tensor:
            arr = (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            depth = self.detector(
                arr,
                detect_resolution=self.detect_resolution,
                image_resolution=min(arr.shape[:2]),
                output_type="np",
            )
            depth = torch.from_numpy(np.ascontiguousarray(depth)).permute(2, 0, 1).float()[None] / 255.0
            out.append(resize(Image(depth), img.size).tensor)
        return Image(torch.cat(out))
