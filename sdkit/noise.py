"""Seeded randomness. All noise is drawn on CPU generators, one per image, then moved to the target device:
the same seed gives the same image on any device, and image ``i`` of a batch with seed ``s`` equals a single
image with seed ``s + i``.
"""

from __future__ import annotations

import numbers
import secrets
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

SEED_LIMIT = 2**64


def check_seed(seed: int, name: str = "seed") -> int:
    """Validate a seed: ``-1`` (draw one) or an integer in [0, 2^64); any integer type (numpy's too) comes back
    as a Python int. Booleans are refused."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an int in [0, 2^64) or -1 for random, got {seed!r}")
    seed = int(seed)
    if seed != -1 and not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{name} must be in [0, 2^64) or -1 for random, got {seed}")
    return seed


def resolve_seed(seed: int) -> int:
    """``-1`` becomes a fresh random seed (reported back to the user); other seeds are validated."""
    seed = check_seed(seed)
    return secrets.randbelow(2**32) if seed == -1 else seed


def batch_seeds(seed: int, batch_size: int) -> list[int]:
    """Per-image seeds of a batch: ``seed, seed + 1, ...`` (wrapping at 2^64)."""
    return [(seed + i) % SEED_LIMIT for i in range(batch_size)]


def generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def randn(
    seeds: Sequence[int],
    shape: Sequence[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal noise ``[len(seeds), *shape]``, image ``i`` drawn from a generator seeded ``seeds[i]``."""
    parts = [torch.randn(tuple(shape), generator=generator(s), dtype=torch.float32) for s in seeds]
    return torch.stack(parts).to(device=device, dtype=dtype)


class SeededNoiseSampler:
    """A k-diffusion-compatible ``noise_sampler(sigma, sigma_next)`` with one CPU generator per image.

    Stochastic samplers draw from it at each step; seeding it like the initial noise keeps ancestral samplers
    reproducible and batch-position invariant.
    """

    def __init__(self, seeds: Sequence[int], like: Tensor) -> None:
        self.generators = [generator(s) for s in seeds]
        self.shape = tuple(like.shape[1:])
        self.device, self.dtype = like.device, like.dtype

    def __call__(self, sigma: Tensor | float | None = None, sigma_next: Tensor | float | None = None) -> Tensor:
        parts = [torch.randn(self.shape, generator=g, dtype=torch.float32) for g in self.generators]
        return torch.stack(parts).to(device=self.device, dtype=self.dtype)


def noise_sampler_for(seed: int, like: Tensor) -> SeededNoiseSampler:
    """The noise sampler for a batch whose first image has ``seed``. Its stream is offset from the initial
    noise's (seed + 2^63 per image) so step noise never repeats the starting noise."""
    return SeededNoiseSampler([(s + 2**63) % SEED_LIMIT for s in batch_seeds(seed, like.shape[0])], like)
