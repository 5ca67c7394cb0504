"""Seeded randomness, as AUTOMATIC1111 draws it with its CPU RNG source (``modules/rng.py``, ``ImageRNG``).

Image ``i`` of a batch has its own CPU generator seeded ``seed + i``. Its first draw is the starting noise;
the step noise of ancestral and SDE samplers is the *following* draws of the same generator (A1111's
``randn_like`` hijack in k-diffusion), so the first step noise never repeats the starting noise. All noise is
drawn on the CPU in float32 and then moved to the target device: the same seed gives the same image on any
device and at any batch position.

Seeds: any integer in [0, 2^64) is accepted and written to the infotext in full, but torch's CPU generator
(a 32-bit-seeded Mersenne twister) only uses the seed's low 32 bits, exactly as in A1111: seeds ``s`` and
``s + 2^32`` give the same noise. ``-1`` draws a random seed in [0, 2^32).

Variation seeds (``SeedSpec.subseed``/``subseed_strength``) mix a second noise in by A1111's slerp, and
``resize_from`` ("Seed resize from") draws the noise at another size and pastes its centre, so a composition
found at one size survives a change of size. ``eta_noise_seed_delta`` is A1111's ENSD: the step noise comes
from generators re-seeded ``seed + delta`` after the starting noise.

The DPM++ SDE samplers are the exception, in A1111 as here: their step noise comes from a Brownian tree per image
seeded with the image's seed (``sdkit.brownian``); ``ImageNoise.for_sampler`` hands each sampler its source.
"""

from __future__ import annotations

import numbers
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from sdkit import limits
from sdkit.brownian import BrownianNoise, sigma_range, uses_brownian_noise

if TYPE_CHECKING:
    from sdkit.types import NoiseSampler

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


def resolve_seed(seed: int, name: str = "seed") -> int:
    """``-1`` becomes a fresh random seed (reported back to the user); other seeds are validated."""
    seed = check_seed(seed, name)
    return secrets.randbelow(2**32) if seed == -1 else seed


def batch_seeds(seed: int, batch_size: int) -> list[int]:
    """Per-image seeds of a batch: ``seed, seed + 1, ...`` (wrapping at 2^64)."""
    return [(seed + i) % SEED_LIMIT for i in range(batch_size)]


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded like A1111's ``create_generator`` (torch keeps the seed's low 32 bits)."""
    return torch.Generator(device="cpu").manual_seed(seed % SEED_LIMIT)


def randn(
    seeds: Sequence[int],
    shape: Sequence[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal noise ``[len(seeds), *shape]``, image ``i`` the first draw of a generator seeded ``seeds[i]``."""
    parts = [torch.randn(tuple(shape), generator=generator(s), dtype=torch.float32) for s in seeds]
    return torch.stack(parts).to(device=device, dtype=dtype)


def slerp(t: float, low: Tensor, high: Tensor) -> Tensor:
    """A1111's variation-seed mix of two noises ``[c, h, w]`` (``modules/rng.py``): spherical interpolation taken
    along the height axis (dim 1) of each channel and column; ``t = 0`` is ``low``, ``t = 1`` ``high``. Nearly
    parallel noises fall back to A1111's linear mix ``low * t + high * (1 - t)`` (its weights, kept as they are)."""
    dot = (low / low.norm(dim=1, keepdim=True) * (high / high.norm(dim=1, keepdim=True))).sum(1)
    if dot.mean() > 0.9995:
        return low * t + high * (1 - t)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    start, end = torch.sin((1.0 - t) * omega) / sin_omega, torch.sin(t * omega) / sin_omega
    mixed = start.unsqueeze(1) * low + end.unsqueeze(1) * high
    degenerate = sin_omega.abs() < 1e-6  # one-row latents: every column is (anti)parallel, A1111 divides by ~0
    if bool(degenerate.any()):
        mixed = torch.where(degenerate.unsqueeze(1), low * (1 - t) + high * t, mixed)
    return mixed


def paste_centre(noise: Tensor, into: Tensor) -> Tensor:
    """``into`` with the centre of ``noise`` (``[c, h', w']``) pasted over its centre: A1111's "Seed resize from".

    Offsets are floor halves of the size difference; where ``noise`` is the larger side, A1111 crops it to
    ``size' + 2 * offset``, one row/column short of the target when the difference is odd (kept as it is)."""
    (_, h, w), (_, nh, nw) = into.shape, noise.shape
    dy, dx = (h - nh) // 2, (w - nw) // 2
    rows, cols = (nh if dy >= 0 else nh + 2 * dy), (nw if dx >= 0 else nw + 2 * dx)
    ty, tx, sy, sx = max(dy, 0), max(dx, 0), max(-dy, 0), max(-dx, 0)
    out = into.clone()
    out[:, ty : ty + rows, tx : tx + cols] = noise[:, sy : sy + rows, sx : sx + cols]
    return out


@dataclass(frozen=True)
class SeedSpec:
    """Everything that seeds a batch's noise, with A1111's names in its infotext.

    ``seed`` (``Seed``) is the first image's; ``subseed`` (``Variation seed``) is mixed in with
    ``subseed_strength`` (``Variation seed strength``, 0 = off). With a variation seed every image of the batch
    keeps ``seed`` and image ``i`` gets ``subseed + i`` (A1111's rule); without one image ``i`` gets ``seed + i``.
    ``resize_from`` (``Seed resize from``, ``(width, height)`` in pixels) draws the noise at that size and pastes
    its centre; ``eta_noise_seed_delta`` (``ENSD``) re-seeds the step noise ``seed + delta``.
    """

    seed: int
    subseed: int | None = None
    subseed_strength: float = 0.0
    resize_from: tuple[int, int] | None = None
    eta_noise_seed_delta: int = 0

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if self.seed == -1:
            raise ValueError("seed: SeedSpec needs a resolved seed in [0, 2^64), got -1")
        strength = self.subseed_strength
        if isinstance(strength, (bool, np.bool_)) or not isinstance(strength, numbers.Real):
            raise TypeError(f"subseed_strength must be a number in [0, 1], got {strength!r}")
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"subseed_strength must be in [0, 1], got {strength!r}")
        object.__setattr__(self, "subseed_strength", float(strength))
        if self.subseed is not None:
            object.__setattr__(self, "subseed", check_seed(self.subseed, "subseed"))
            if self.subseed == -1:
                raise ValueError("subseed: SeedSpec needs a resolved subseed in [0, 2^64), got -1")
        elif self.subseed_strength:
            raise ValueError("subseed: a subseed_strength above 0 needs a subseed")
        if self.resize_from is not None:
            if isinstance(self.resize_from, (str, bytes)) or not isinstance(self.resize_from, Sequence):
                raise TypeError(f"seed_resize_from must be a (width, height) pair of ints, got {self.resize_from!r}")
            size = tuple(self.resize_from)
            if len(size) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in size):
                raise TypeError(f"seed_resize_from must be a (width, height) pair of ints, got {self.resize_from!r}")
            if not all(0 < v <= limits.MAX_SIDE for v in size):
                raise ValueError(
                    f"seed_resize_from must be two sizes in (0, {limits.MAX_SIDE}] (sdkit.limits.MAX_SIDE), "
                    f"got {self.resize_from!r}"
                )
            object.__setattr__(self, "resize_from", (int(size[0]), int(size[1])))
        delta = self.eta_noise_seed_delta
        if isinstance(delta, (bool, np.bool_)) or not isinstance(delta, numbers.Integral):
            raise TypeError(f"eta_noise_seed_delta must be an int >= 0, got {delta!r}")
        if not 0 <= int(delta) < SEED_LIMIT:
            raise ValueError(f"eta_noise_seed_delta must be in [0, 2^64), got {delta!r}")
        object.__setattr__(self, "eta_noise_seed_delta", int(delta))

    @property
    def varies(self) -> bool:
        return self.subseed is not None and self.subseed_strength != 0

    def seeds(self, batch_size: int) -> list[int]:
        """Each image's seed (its own ``Seed`` in an A1111 infotext)."""
        return [self.seed] * batch_size if self.varies else batch_seeds(self.seed, batch_size)

    def subseeds(self, batch_size: int) -> list[int] | None:
        """Each image's variation seed, or None without one."""
        return batch_seeds(self.subseed, batch_size) if self.varies and self.subseed is not None else None

    def for_image(self, i: int) -> SeedSpec:
        """The spec that generates image ``i`` of this batch alone."""
        subseeds = self.subseeds(i + 1)
        return SeedSpec(
            self.seeds(i + 1)[i],
            subseeds[i] if subseeds else self.subseed,
            self.subseed_strength,
            self.resize_from,
            self.eta_noise_seed_delta,
        )


def seed_spec(seed: int | SeedSpec) -> SeedSpec:
    """An int seed as a plain ``SeedSpec``; a ``SeedSpec`` as it is."""
    return seed if isinstance(seed, SeedSpec) else SeedSpec(check_seed(seed))


class ImageNoise:
    """The noise of one batch, drawn as A1111's ``ImageRNG`` does with its CPU source.

    ``first()`` is the starting noise (image ``i`` from a generator seeded ``seeds[i]``); calling the object (the
    k-diffusion ``noise_sampler(sigma, sigma_next)`` convention) gives the step noise: the next draws of the same
    generators, or of generators re-seeded ``seed + eta_noise_seed_delta``. ``shape`` is one image's latent shape
    ``[c, h, w]``; ``factor`` the latent downsample factor (for ``resize_from``). ``for_batch`` builds one from a
    seed or ``SeedSpec``.
    """

    def __init__(
        self,
        shape: Sequence[int],
        seeds: Sequence[int],
        *,
        subseeds: Sequence[int] | None = None,
        subseed_strength: float = 0.0,
        resize_from: tuple[int, int] | None = None,
        eta_noise_seed_delta: int = 0,
        factor: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.shape = tuple(int(v) for v in shape)
        self.seeds = [check_seed(s) for s in seeds]
        self.subseeds = None if subseeds is None or not subseed_strength else [check_seed(s) for s in subseeds]
        self.subseed_strength = float(subseed_strength)
        self.resize_from = resize_from
        self.eta_noise_seed_delta = eta_noise_seed_delta
        self.factor = factor
        self.device, self.dtype = device, dtype
        self.generators = [generator(s) for s in self.seeds]
        self.started = False
        self.brownian: BrownianNoise | None = None

    @classmethod
    def for_batch(
        cls,
        seed: int | SeedSpec,
        batch_size: int,
        shape: Sequence[int],
        *,
        factor: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> ImageNoise:
        """The noise of a batch of ``batch_size`` images whose first image has ``seed``."""
        spec = seed_spec(seed)
        return cls(
            shape,
            spec.seeds(batch_size),
            subseeds=spec.subseeds(batch_size),
            subseed_strength=spec.subseed_strength,
            resize_from=spec.resize_from,
            eta_noise_seed_delta=spec.eta_noise_seed_delta,
            factor=factor,
            device=device,
            dtype=dtype,
        )

    def _source_shape(self) -> tuple[int, ...]:
        if self.resize_from is None:
            return self.shape
        width, height = self.resize_from
        return (self.shape[0], height // self.factor, width // self.factor)

    def _first_of(self, i: int) -> Tensor:
        source = self._source_shape()
        if source == self.shape:
            noise = torch.randn(self.shape, generator=self.generators[i], dtype=torch.float32)
        else:  # drawn at the other size by a fresh generator; this image's own generator fills the rest below
            noise = randn([self.seeds[i]], source)[0]
        if self.subseeds is not None:  # A1111: image i past the end of the subseeds mixes in subseed 0
            subseed = self.subseeds[i] if i < len(self.subseeds) else 0
            noise = slerp(self.subseed_strength, noise, randn([subseed], source)[0])
        if source != self.shape:
            noise = paste_centre(noise, torch.randn(self.shape, generator=self.generators[i], dtype=torch.float32))
        return noise

    def first(self) -> Tensor:
        """The starting noise ``[b, c, h, w]`` (standard normal, not yet scaled by a sigma)."""
        if self.started:
            raise RuntimeError("ImageNoise.first() was already drawn: make a new ImageNoise for a new run")
        noise = torch.stack([self._first_of(i) for i in range(len(self.seeds))])
        if self.eta_noise_seed_delta:
            self.generators = [generator(s + self.eta_noise_seed_delta) for s in self.seeds]
        self.started = True
        return noise.to(device=self.device, dtype=self.dtype)

    def skip_first(self) -> ImageNoise:
        """Advance past the starting noise without keeping it (for step noise of a run whose start was drawn
        elsewhere, e.g. with ``randn``); returns self."""
        self.first()
        return self

    def to(self, device: torch.device | str | None, dtype: torch.dtype) -> ImageNoise:
        """Deliver later draws on ``device`` in ``dtype`` (the draws themselves stay on the CPU); returns self."""
        self.device, self.dtype = device, dtype
        if self.brownian is not None:
            self.brownian.to(device, dtype)
        return self

    def for_sampler(self, sampler: Any, sigmas: Tensor) -> NoiseSampler:
        """The step noise ``sampler`` gets in this run, as A1111 gives it: for the DPM++ SDE family a Brownian tree
        per image seeded with the image's seed over the positive range of ``sigmas`` (``sdkit.brownian``), for every
        other sampler this object's generators.

        ``sigmas``: the run's whole schedule (for img2img the one before strength cuts its tail). The first tree is
        kept, so a refiner that continues the run with the same ``ImageNoise`` walks the same Brownian motion: make
        that first call with the whole schedule."""
        if not uses_brownian_noise(sampler):
            return self
        if self.brownian is None:
            span = sigma_range(sigmas.detach().float().cpu())
            if span is None:  # nothing positive: no step of this run draws noise
                return self
            self.brownian = BrownianNoise(self.seeds, self.shape, *span, device=self.device, dtype=self.dtype)
        return self.brownian

    def __call__(self, sigma: Tensor | float | None = None, sigma_next: Tensor | float | None = None) -> Tensor:
        if not self.started:
            raise RuntimeError("ImageNoise: draw the starting noise with first() before step noise")
        parts = [torch.randn(self.shape, generator=g, dtype=torch.float32) for g in self.generators]
        return torch.stack(parts).to(device=self.device, dtype=self.dtype)


def noise_sampler_for(seed: int | SeedSpec, like: Tensor) -> ImageNoise:
    """The step noise of a batch like ``like`` whose first image has ``seed``: each image's generator after its
    starting noise (A1111's scheme), so step noise never repeats the starting noise ``randn(batch_seeds(...))``."""
    return ImageNoise.for_batch(seed, like.shape[0], like.shape[1:], device=like.device, dtype=like.dtype).skip_first()
