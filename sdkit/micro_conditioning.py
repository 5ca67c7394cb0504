"""SDXL micro-conditioning and the published aspect-ratio buckets.

Micro-conditioning (Podell et al. 2023, "SDXL", sections 2.2-2.3): besides the text, the SDXL UNet sees a few
numbers about the training image, each Fourier-embedded (``addition_time_embed_dim`` wide) and concatenated
with the pooled text embedding into ``time_ids``:

* base: ``original_size (h, w) + crops_coords_top_left (top, left) + target_size (h, w)`` -> 6 numbers;
* refiner: ``original_size (h, w) + crops_coords_top_left (top, left) + aesthetic_score`` -> 5 numbers.

Which one a UNet wants is read from its config (``projection_class_embeddings_input_dim = n *
addition_time_embed_dim + pooled width``), so a refiner loaded from any source is recognised. Sizes are
``(height, width)`` as in the paper and in diffusers' keyword arguments of the same names. ``sdkit.sdxl`` gathers
these with the refiner handoff (``sdkit.refiner``) and the base + refiner runs of two kits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit.types import TextConditioning

Size = tuple[int, int]

# The training buckets of SDXL 1.0 base, as (width, height), ~1024^2 pixels in multiples of 64: Stability AI's
# published list (generative-models, scripts/demo/sampling.py ``SD_XL_BASE_RATIOS``; SDXL paper appendix I).
BUCKETS: tuple[Size, ...] = (
    (704, 1408), (704, 1344), (768, 1344), (768, 1280), (832, 1216), (832, 1152), (896, 1152), (896, 1088),
    (960, 1088), (960, 1024), (1024, 1024), (1024, 960), (1088, 960), (1088, 896), (1152, 896), (1152, 832),
    (1216, 832), (1280, 768), (1344, 768), (1344, 704), (1408, 704), (1472, 704), (1536, 640), (1600, 640),
    (1664, 576), (1728, 576),
)  # fmt: skip


def nearest_bucket(width: int, height: int) -> Size:
    """The SDXL training bucket ``(width, height)`` whose aspect ratio is closest (in log ratio) to ``width /
    height``: generate there, then crop or resize to the exact size wanted."""
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    target = math.log(width / height)
    return min(BUCKETS, key=lambda wh: abs(math.log(wh[0] / wh[1]) - target))


# ---------------------------------------------------------------------------------- micro-conditioning
def time_ids(original_size: Size, crops_coords_top_left: Size, target_size: Size) -> Float[Tensor, "1 6"]:
    """The base model's 6 micro-conditioning numbers ``[h_orig, w_orig, top, left, h_target, w_target]``."""
    return torch.tensor([[*original_size, *crops_coords_top_left, *target_size]], dtype=torch.float32)


def aesthetic_time_ids(original_size: Size, crops_coords_top_left: Size, score: float) -> Float[Tensor, "1 5"]:
    """The refiner's 5 numbers ``[h_orig, w_orig, top, left, aesthetic_score]``."""
    return torch.tensor([[*original_size, *crops_coords_top_left, float(score)]], dtype=torch.float32)


def time_id_count(unet: Any, pooled_dim: int) -> int:
    """How many micro-conditioning numbers a diffusers SDXL UNet takes: 6 (base) or 5 (refiner)."""
    config = unet.config
    if config.get("addition_embed_type") != "text_time":
        raise ValueError("this UNet takes no SDXL micro-conditioning (addition_embed_type is not 'text_time')")
    n, rest = divmod(
        int(config.projection_class_embeddings_input_dim) - pooled_dim, int(config.addition_time_embed_dim)
    )
    if rest or n not in (5, 6):
        raise ValueError(
            f"UNet added embedding of {config.projection_class_embeddings_input_dim} does not fit a pooled text "
            f"embedding of {pooled_dim} plus 5 or 6 time ids of {config.addition_time_embed_dim}"
        )
    return n


@dataclass(frozen=True)
class MicroConditioning:
    """SDXL's micro-conditioning for a prompt and its negative. ``None`` sizes default to the image's own
    ``(height, width)``; each ``negative_*`` defaults to its positive value. (diffusers differs in one corner:
    with only negative sizes given it resets the negative crop to (0, 0).) Aesthetic scores are used by the
    refiner only, with diffusers' defaults 6.0 / 2.5."""

    original_size: Size | None = None
    crops_coords_top_left: Size = (0, 0)
    target_size: Size | None = None
    aesthetic_score: float = 6.0
    negative_original_size: Size | None = None
    negative_crops_coords_top_left: Size | None = None
    negative_target_size: Size | None = None
    negative_aesthetic_score: float = 2.5

    def tensors(self, width: int, height: int, count: int = 6) -> tuple[Tensor, Tensor]:
        """``(time_ids, negative_time_ids)``, each ``[1, count]``, for an image of ``width x height``."""
        original = self.original_size or (height, width)
        target = self.target_size or (height, width)
        neg_original = self.negative_original_size or original
        neg_crop = self.negative_crops_coords_top_left or self.crops_coords_top_left
        neg_target = self.negative_target_size or target
        if count == 5:
            return (
                aesthetic_time_ids(original, self.crops_coords_top_left, self.aesthetic_score),
                aesthetic_time_ids(neg_original, neg_crop, self.negative_aesthetic_score),
            )
        return time_ids(original, self.crops_coords_top_left, target), time_ids(neg_original, neg_crop, neg_target)


def with_time_ids(cond: TextConditioning, ids: Tensor) -> TextConditioning:
    """A copy of ``cond`` with ``extra["time_ids"]`` (repeated over its batch); ``cond`` itself is left alone
    (encodings are cached and shared)."""
    ids = ids.to(cond.embeds.device).expand(cond.batch, -1)
    return TextConditioning(cond.embeds, cond.pooled, {**cond.extra, "time_ids": ids})


def add_time_ids(
    unet: Any,
    cond: TextConditioning,
    uncond: TextConditioning,
    width: int,
    height: int,
    micro: MicroConditioning | None = None,
) -> tuple[TextConditioning, TextConditioning]:
    """Attach the micro-conditioning ``unet`` expects (base: sizes; refiner: aesthetic score) to a prompt pair."""
    if cond.pooled is None:
        raise ValueError("SDXL micro-conditioning needs a pooled text embedding (the second text encoder's)")
    count = time_id_count(unet, int(cond.pooled.shape[-1]))
    pos, neg = (micro or MicroConditioning()).tensors(width, height, count)
    return with_time_ids(cond, pos), with_time_ids(uncond, neg)
