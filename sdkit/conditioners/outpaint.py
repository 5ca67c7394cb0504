"""Outpainting canvases: the image placed on a larger canvas, the new zone filled from the image's edges
(a neutral start for the VAE) and a mask that is 1 in the new zone, feathered ``overlap`` pixels into the
original so the seam is regenerated and blended, and exactly 0 beyond.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from sdkit import limits
from sdkit.conditioners.image_input import as_image
from sdkit.image import Image, check_image_size
from sdkit.limits import check_int


@dataclass(frozen=True)
class Canvas:
    """An outpainting canvas: ``image`` (new zone edge-filled), ``mask`` (1 = generate), and ``box``: where the
    requested output lies on the canvas (left, top, right, bottom), since the canvas is rounded up to a
    multiple of the VAE factor on the extended sides."""

    image: Image
    mask: Float[Tensor, "b 1 h w"]
    box: tuple[int, int, int, int]
    original_box: tuple[int, int, int, int]

    def crop(self, image: Image) -> Image:
        x0, y0, x1, y1 = self.box
        return Image(image.tensor[:, :, y0:y1, x0:x1].contiguous())


def extend_canvas(
    image: Any, *, left: int = 0, right: int = 0, up: int = 0, down: int = 0, overlap: int = 8, multiple: int = 8
) -> Canvas:
    """Extend ``image`` (any image ``as_image`` takes) by the given pixels on each side; the canvas is padded
    further on the extended sides (right/bottom when a direction is not extended) to a multiple of ``multiple``,
    and cropped back later. The canvas must stay within ``sdkit.limits`` (checked before it is made)."""
    pads = {k: check_int(k, v, minimum=0) for k, v in (("left", left), ("right", right), ("up", up), ("down", down))}
    left, right, up, down = pads.values()
    overlap = check_int("overlap", overlap, minimum=0)
    multiple = check_int("multiple", multiple, maximum=limits.MAX_SIDE, bound="MAX_SIDE")
    if left + right + up + down == 0:
        raise ValueError("outpaint: extend at least one side (left, right, up or down > 0)")
    image = as_image(image)
    w, h = image.size
    W, H = w + left + right, h + up + down
    extra_w, extra_h = -W % multiple, -H % multiple
    check_image_size(
        f"outpaint canvas (image {w}x{h} + left/right {left}/{right}, up/down {up}/{down})",
        W + extra_w,
        H + extra_h,
        image.tensor.shape[0],
    )
    # Put the rounding pixels on a side that is being generated anyway, so the original stays where it is.
    pad_l = left + (extra_w if left and not right else 0)
    pad_r = right + (0 if left and not right else extra_w)
    pad_u = up + (extra_h if up and not down else 0)
    pad_d = down + (0 if up and not down else extra_h)
    canvas = F.pad(image.tensor, (pad_l, pad_r, pad_u, pad_d), mode="replicate")
    new = torch.ones(1, 1, h + pad_u + pad_d, w + pad_l + pad_r)
    new[:, :, pad_u : pad_u + h, pad_l : pad_l + w] = 0
    mask = _feather(new, overlap, (pad_l, pad_r, pad_u, pad_d))
    box = (pad_l - left, pad_u - up, pad_l - left + W, pad_u - up + H)
    return Canvas(Image(canvas), mask, box, (pad_l, pad_u, pad_l + w, pad_u + h))


def _feather(new: Tensor, overlap: int, pads: tuple[int, int, int, int]) -> Tensor:
    """1 in the new zone; inside the original, a linear ramp from 1 at a generated edge to 0 at ``overlap``
    pixels from it (only along the sides that were extended)."""
    if overlap == 0:
        return new
    _, _, H, W = new.shape
    pad_l, pad_r, pad_u, pad_d = pads
    ys = torch.arange(H, dtype=torch.float32).view(-1, 1)
    xs = torch.arange(W, dtype=torch.float32).view(1, -1)
    inf = torch.full((H, W), float("inf"))
    dist = inf
    if pad_l:
        dist = torch.minimum(dist, (xs - pad_l + 1).expand(H, W))
    if pad_r:
        dist = torch.minimum(dist, (W - pad_r - xs).expand(H, W))
    if pad_u:
        dist = torch.minimum(dist, (ys - pad_u + 1).expand(H, W))
    if pad_d:
        dist = torch.minimum(dist, (H - pad_d - ys).expand(H, W))
    ramp = (1 - (dist - 1) / overlap).clamp(0, 1)  # 1 for the first original pixel row, 0 from ``overlap`` on
    return torch.maximum(new, ramp.where(new[0, 0] == 0, torch.zeros(())).view(1, 1, H, W))
