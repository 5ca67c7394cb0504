"""Samplers: stateless generator functions ``(denoiser, x, sigmas, **options) -> Iterator[Step]``.

- ``SAMPLERS``: the registry by snake_case name (k-diffusion's names, plus ddim, ddpm, unipc, lcm);
- ``sample(sampler, denoiser, x, sigmas, **options)``: run to the end, return the final x;
- ``steps(...)``: the same run, one ``Step`` at a time, for notebooks.

Stepping, stopping and branching need no sampler state: a ``Step`` holds ``x_next``, so
``sample(other, denoiser, step.x_next, remaining(sigmas, step))`` continues from it with any sampler
(multistep samplers restart their history there, so their first branched step is first order).
Stochastic samplers take ``generator=`` (int seed or ``torch.Generator``) or ``noise_sampler=``; without
either they raise (randomness is explicit in sdkit). A1111 display names live in ``sdkit.samplers.names``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit.samplers.base import accepted_options
from sdkit.samplers.diffusers_adapter import from_diffusers
from sdkit.samplers.discrete import ddim, ddpm, lcm
from sdkit.samplers.dpm import dpm_2, dpm_2_ancestral
from sdkit.samplers.dpmpp import dpmpp_2m, dpmpp_2s_ancestral
from sdkit.samplers.dpmpp_sde import dpmpp_2m_sde, dpmpp_2m_sde_heun, dpmpp_3m_sde, dpmpp_sde
from sdkit.samplers.euler import euler, euler_ancestral, heun
from sdkit.samplers.lms import lms
from sdkit.samplers.trace_io import steps_from_tensors, steps_to_tensors
from sdkit.samplers.unipc import unipc
from sdkit.types import Denoiser, Sampler, Step

SamplerFn = Callable[..., Iterator[Step]]

# cast: each sampler takes its own keyword options, which mypy does not match against the protocol's
# ``**options: Any``; at runtime every entry is a Sampler (denoiser, x, sigmas, **options) -> Iterator[Step].
_REGISTRY: dict[str, SamplerFn] = {
    "euler": euler,
    "euler_ancestral": euler_ancestral,
    "heun": heun,
    "dpm_2": dpm_2,
    "dpm_2_ancestral": dpm_2_ancestral,
    "lms": lms,
    "dpmpp_2s_ancestral": dpmpp_2s_ancestral,
    "dpmpp_sde": dpmpp_sde,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_2m_sde": dpmpp_2m_sde,
    "dpmpp_2m_sde_heun": dpmpp_2m_sde_heun,
    "dpmpp_3m_sde": dpmpp_3m_sde,
    "ddim": ddim,
    "ddpm": ddpm,
    "unipc": unipc,
    "lcm": lcm,
}
SAMPLERS: dict[str, Sampler] = cast(dict[str, Sampler], _REGISTRY)

STOCHASTIC: frozenset[str] = frozenset(
    {
        *("euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral"),
        *("dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde"),
        *("ddpm", "lcm"),
    }
)
"""Samplers that draw fresh noise at every step by default (ddim only with eta > 0, euler/heun/dpm_2 only
with s_churn > 0): these need ``generator=`` or ``noise_sampler=``."""


def get_sampler(sampler: str | Sampler) -> Sampler:
    """A sampler by snake_case name, or the callable itself. Unknown names raise, listing the valid ones."""
    if callable(sampler):
        return sampler
    if isinstance(sampler, str):
        key = sampler.strip().lower()
        if key in SAMPLERS:
            return SAMPLERS[key]
        raise ValueError(
            f"unknown sampler {sampler!r}; valid names: {', '.join(SAMPLERS)} "
            "(A1111 display names like 'DPM++ 2M Karras' go through sdkit.samplers.names.resolve)"
        )
    raise TypeError(f"sampler must be a name or a sampler function, got {type(sampler).__name__}")


def steps(
    sampler: str | Sampler,
    denoiser: Denoiser,
    x: Float[Tensor, "b c h w"],
    sigmas: Float[Tensor, " n"],
    **options: Any,
) -> Iterator[Step]:
    """Run a sampler one ``Step`` at a time (under ``torch.no_grad``). Call the sampler function itself
    to sample with gradients. ``noise_sampler=`` / ``generator=`` are dropped for a sampler function that
    takes neither (nor ``**options``): it draws no noise (``sdkit.samplers.base.accepted_options``)."""
    fn = get_sampler(sampler)
    run = fn(denoiser, x, sigmas, **accepted_options(fn, options))
    while True:
        with torch.no_grad():
            try:
                step = next(run)
            except StopIteration:
                return
        yield step


def sample(
    sampler: str | Sampler,
    denoiser: Denoiser,
    x: Float[Tensor, "b c h w"],
    sigmas: Float[Tensor, " n"],
    **options: Any,
) -> Float[Tensor, "b c h w"]:
    """Run a sampler to the end of ``sigmas`` and return the final x (``x`` itself if there are no steps)."""
    for step in steps(sampler, denoiser, x, sigmas, **options):
        x = step.x_next
    return x


def remaining(sigmas: Float[Tensor, " n"], step: Step) -> Float[Tensor, " m"]:
    """The sigmas still ahead after ``step`` (starting at ``step.sigma_next``), for resuming or branching."""
    return sigmas[step.i + 1 :]


__all__ = [
    "SAMPLERS",
    "STOCHASTIC",
    "ddim",
    "ddpm",
    "dpm_2",
    "dpm_2_ancestral",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_heun",
    "dpmpp_2s_ancestral",
    "dpmpp_3m_sde",
    "dpmpp_sde",
    "euler",
    "euler_ancestral",
    "from_diffusers",
    "get_sampler",
    "heun",
    "lcm",
    "lms",
    "remaining",
    "sample",
    "steps",
    "steps_from_tensors",
    "steps_to_tensors",
    "unipc",
]
