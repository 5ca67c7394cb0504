"""Latents and the latent space they live in.

A ``Latents`` value carries its tensor *and* its ``LatentSpace``, so that SDXL latents handed to an SD1 VAE,
or a 3-channel tensor handed to a 4-channel UNet, fail at once with an error naming both sides. Tensors are
stored in the model's space (already multiplied by the VAE's scale factor); only ``sdkit.vae`` converts.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

RGBFactors = tuple[tuple[float, float, float], ...]


@dataclass(frozen=True)
class LatentSpace:
    """Family, shape and scaling of a VAE's latent space, plus a cheap linear latent -> RGB preview."""

    family: str
    channels: int = 4
    factor: int = 8
    scale: float = 1.0
    shift: float = 0.0
    rgb_factors: RGBFactors | None = None
    rgb_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if self.rgb_factors is not None:
            checked_rgb_factors(self.rgb_factors, self.rgb_bias, self.channels)

    def describe(self) -> str:
        return f"{self.family} ({self.channels} ch, /{self.factor}, scale {self.scale:g})"

    def check(self, other: LatentSpace, where: str) -> None:
        """Raise if latents of ``other`` are handed to something that works in ``self``."""
        if (self.family, self.channels, self.factor) != (other.family, other.channels, other.factor):
            raise TypeError(f"{where}: expects latents of {self.describe()}, got latents of {other.describe()}")


# Linear latent -> RGB preview factors as published by ComfyUI (comfy/latent_formats.py), which A1111 uses too.
SD_RGB_FACTORS: RGBFactors = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
SDXL_RGB_FACTORS: RGBFactors = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_RGB_BIAS = (0.1084, -0.0175, -0.0011)


def checked_rgb_factors(
    factors: Any, bias: Any, channels: int, name: str = "rgb_factors", bias_name: str = "rgb_bias"
) -> tuple[RGBFactors, tuple[float, float, float]]:
    """Preview factors read from a config (lists) as tuples: ``channels`` rows of 3 finite numbers and 3 biases."""

    def triple(row: Any) -> tuple[float, float, float] | None:
        ok = isinstance(row, Sequence) and not isinstance(row, str) and len(row) == 3
        ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in row)
        return (float(row[0]), float(row[1]), float(row[2])) if ok else None

    rows = [triple(r) for r in factors] if isinstance(factors, Sequence) and not isinstance(factors, str) else []
    checked = tuple(r for r in rows if r is not None)
    if len(checked) != channels or len(rows) != channels:
        raise ValueError(f"{name} must be {channels} rows of 3 finite numbers, got {factors!r}")
    checked_bias = triple(bias)
    if checked_bias is None:
        raise ValueError(f"{bias_name} must be 3 finite numbers (R, G, B), got {bias!r}")
    return checked, checked_bias


@dataclass(frozen=True)
class Latents:
    """A batch of latents ``[b, c, h, w]`` in ``space``; ``sigma`` is set while they are noisy."""

    tensor: Float[Tensor, "b c h w"]
    space: LatentSpace
    sigma: float | None = None

    def __post_init__(self) -> None:
        t = self.tensor
        if not isinstance(t, Tensor):
            raise TypeError(f"Latents.tensor must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 4:
            raise ValueError(f"Latents.tensor must be [b, c, h, w], got shape {tuple(t.shape)}")
        if t.shape[1] != self.space.channels:
            raise ValueError(
                f"Latents.tensor has {t.shape[1]} channels but its space {self.space.describe()} has "
                f"{self.space.channels}" + (" (pixels where latents belong?)" if t.shape[1] == 3 else "")
            )

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    @property
    def pixel_size(self) -> tuple[int, int]:
        """(width, height) of the image these latents decode to."""
        return self.tensor.shape[3] * self.space.factor, self.tensor.shape[2] * self.space.factor

    def with_tensor(self, tensor: Tensor, sigma: float | None = None) -> Latents:
        return replace(self, tensor=tensor, sigma=sigma)

    def __getitem__(self, index: int | slice) -> Latents:
        t = self.tensor[index]
        return self.with_tensor(t.unsqueeze(0) if t.ndim == 3 else t, self.sigma)

    def preview(self) -> Float[Tensor, "b 3 h w"]:
        """Cheap linear RGB preview in [0, 1] at latent resolution (no VAE call)."""
        factors = self.space.rgb_factors
        x = self.tensor.float().cpu()
        if factors is None:  # no published factors: show the first three channels, normalised
            rgb = x[:, :3]
            lo, hi = rgb.amin(dim=(2, 3), keepdim=True), rgb.amax(dim=(2, 3), keepdim=True)
            return (rgb - lo) / (hi - lo).clamp_min(1e-6)
        m = torch.tensor(factors, dtype=x.dtype)  # [c, 3]
        bias = torch.tensor(self.space.rgb_bias, dtype=x.dtype).view(1, 3, 1, 1)
        rgb = torch.einsum("bchw,cr->brhw", x, m) + bias
        return ((rgb + 1) / 2).clamp(0, 1)

    def _repr_png_(self) -> bytes:
        from PIL import Image as PILImage

        rgb = self.preview()
        channels = self.tensor.float().cpu()
        rows = []
        for b in range(rgb.shape[0]):
            c = channels[b]
            c = (c - c.amin(dim=(1, 2), keepdim=True)) / (
                c.amax(dim=(1, 2), keepdim=True) - c.amin(dim=(1, 2), keepdim=True)
            ).clamp_min(1e-6)
            tiles = [rgb[b]] + [c[k : k + 1].expand(3, -1, -1) for k in range(c.shape[0])]
            rows.append(torch.cat(tiles, dim=2))
        grid = torch.cat(rows, dim=1)
        arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        img = PILImage.fromarray(arr)
        scale = max(1, 128 // max(1, self.tensor.shape[2]))
        img = img.resize((img.width * scale, img.height * scale), PILImage.Resampling.NEAREST)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    def __repr__(self) -> str:
        s = "" if self.sigma is None else f", sigma={self.sigma:.4g}"
        return (
            f"Latents({list(self.tensor.shape)}, {self.space.describe()}{s}, {self.tensor.dtype}, {self.tensor.device})"
        )
