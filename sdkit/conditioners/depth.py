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

from sdkit.conditioners.image_input import as_image, resize
from sdkit.image import Image


def depth_values(depth: Any) -> Float[Tensor, "b 1 h w"]:
    """Depth as float in [0, 1] by its container's bit depth (never by its values): PIL ``L`` / uint8 / 255,
    ``I;16`` / ``I`` / uint16 / 65535, float (``F``, float arrays and tensors) as is; an RGB map is read by
    its channel mean. Arrays may be ``[h, w]``, ``[c, h, w]`` or ``[b, c, h, w]``."""
    if isinstance(depth, PILImage.Image):
        depth = ImageOps.exif_transpose(depth) or depth
        if depth.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(depth, dtype=np.float32) / 65535.0
        elif depth.mode in ("F", "L"):
            a = np.asarray(depth, dtype=np.float32) / (255.0 if depth.mode == "L" else 1.0)
        else:
            a = np.asarray(depth.convert("RGB"), dtype=np.float32).mean(axis=2) / 255.0
        return torch.from_numpy(a.copy())[None, None]
    if isinstance(depth, Image):
        return depth.tensor.mean(dim=1, keepdim=True)
    if isinstance(depth, np.ndarray):
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(depth.dtype, 1.0)
        depth = torch.from_numpy(np.ascontiguousarray(depth).astype(np.float32) / scale)
    if not isinstance(depth, Tensor):
        raise TypeError(f"depth must be a PIL image, numpy array or torch tensor, got {type(depth).__name__}")
    t = depth.detach().cpu()
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t[None] if t.shape[0] in (1, 3) else t[:, None]
    if t.ndim != 4:
        raise ValueError(f"depth must be [h, w], [c, h, w] or [b, c, h, w], got shape {tuple(depth.shape)}")
    return t.mean(dim=1, keepdim=True) if t.shape[1] != 1 else t


def depth_image(depth: Any, *, normalize: bool = True, invert: bool = False) -> Image:
    """A depth map as the 3-channel control image depth ControlNets take. ``normalize`` stretches each map to
    [0, 1] (min -> 0, max -> 1; a flat map becomes 0); without it values must already lie in [0, 1]."""
    d = depth_values(depth)
    if normalize:
        lo = d.amin(dim=(2, 3), keepdim=True)
        span = d.amax(dim=(2, 3), keepdim=True) - lo
        d = torch.where(span > 0, (d - lo) / span.clamp_min(1e-12), torch.zeros_like(d))
    elif d.numel() and (d.min() < 0 or d.max() > 1):
        raise ValueError(f"depth values must be in [0, 1] with normalize=False, got [{d.min():.4g}, {d.max():.4g}]")
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
