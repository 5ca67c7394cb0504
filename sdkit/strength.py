"""img2img strength: which tail of a noise schedule to run when starting from a (noised) init image.

The recipe noises the init latents to the first sigma of the tail and samples the tail; strength 0 returns
the input unchanged (an empty tail), strength 1 runs the whole schedule from pure noise level. The tools
disagree on how strength maps to steps, so ``strength_sigmas`` offers each convention:

- ``"sdkit"``: keep the last ``round(strength * steps)`` steps of the given schedule, at least one step for
  any strength > 0. The image is re-noised to the sigma from which ``strength`` of the schedule remains.
- ``"diffusers"``: keep ``int(steps * strength)`` steps (floor; ``StableDiffusionImg2ImgPipeline``): 25
  steps at strength 0.5 run 12, and strength < 1/steps runs nothing.
- ``"comfy"``: ComfyUI's ``denoise``: build a *longer* schedule of ``int(steps / strength)`` steps and keep
  its last ``steps``, so the number of steps stays ``steps`` whatever the strength. It needs
  ``rebuild(total_steps) -> sigmas`` to make the longer schedule (e.g. ``lambda n: make_sigmas("karras",
  n, model)``); the sigmas passed in only give ``steps``.
- ``"a1111"``: stable-diffusion-webui's default: ``t_enc = int(min(strength, 0.999) * steps)`` and the
  tail ``sigmas[steps - t_enc - 1:]``, i.e. ``t_enc + 1`` steps (strength 0 is treated as no steps here).

All return a view/slice of sigmas (a 1-D tensor, ending in the schedule's last sigma), or an empty tensor.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Literal, get_args

from jaxtyping import Float
from torch import Tensor

from sdkit.limits import check_choice, check_int, show

StrengthMode = Literal["sdkit", "diffusers", "comfy", "a1111"]
STRENGTH_MODES: tuple[str, ...] = get_args(StrengthMode)


def check_strength(strength: float) -> float:
    """A denoising strength: a real number in [0, 1] (numpy scalars too; booleans are not numbers here)."""
    if isinstance(strength, bool) or type(strength).__name__ == "bool_" or not isinstance(strength, numbers.Real):
        raise TypeError(f"strength must be a number in [0, 1], got {type(strength).__name__} {show(strength)}")
    value = float(strength)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {value!r}")
    return value


def strength_steps(steps: int, strength: float, mode: StrengthMode = "sdkit") -> int:
    """How many of ``steps`` steps an img2img run at ``strength`` takes (modes "sdkit", "diffusers", "a1111";
    "comfy" always takes ``steps`` for strength > 0)."""
    strength = check_strength(strength)
    steps = check_int("steps", steps, minimum=0)
    check_choice("strength mode", mode, STRENGTH_MODES)
    if strength == 0.0 or steps == 0:
        return 0
    if mode == "sdkit":
        return min(steps, max(1, round(strength * steps)))
    if mode == "diffusers":
        return min(int(steps * strength), steps)
    if mode == "a1111":
        return min(steps, int(min(strength, 0.999) * steps) + 1)
    return steps  # "comfy"


def strength_sigmas(
    sigmas: Float[Tensor, " n1"],
    strength: float,
    mode: StrengthMode = "sdkit",
    rebuild: Callable[[int], Tensor] | None = None,
) -> Float[Tensor, " m"]:
    """The tail of ``sigmas`` (``steps + 1`` entries for ``steps`` steps) that img2img runs at ``strength``.

    ``strength = 0`` gives an empty tensor (no steps: the recipe returns the input unchanged), ``strength
    = 1`` the full schedule. ``rebuild`` is required by ``mode="comfy"`` (see the module docstring).
    """
    strength = check_strength(strength)
    check_choice("strength mode", mode, STRENGTH_MODES)
    if not isinstance(sigmas, Tensor):
        raise TypeError(f"sigmas must be a 1-D tensor, got {type(sigmas).__name__}")
    if sigmas.ndim != 1:
        raise ValueError(f"sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
    steps = int(sigmas.shape[0]) - 1
    if strength == 0.0 or steps <= 0:
        return sigmas[:0]
    if mode == "comfy":
        return longer_schedule(sigmas, strength, rebuild)[-(steps + 1) :]
    k = strength_steps(steps, strength, mode)
    return sigmas[steps - k :] if k else sigmas[:0]


def longer_schedule(
    sigmas: Float[Tensor, " n1"], strength: float, rebuild: Callable[[int], Tensor] | None
) -> Float[Tensor, " k"]:
    """The schedule whose last ``steps`` steps ``mode="comfy"`` runs (``steps`` those of ``sigmas``):
    ``rebuild(int(steps / strength))``, or ``sigmas`` itself at strength 0 or 1 (or with no steps). A1111's hires
    pass spans a DPM++ SDE sampler's Brownian trees over it (``sdkit.hires.hires_schedule``)."""
    if not callable(rebuild):
        raise ValueError("strength mode 'comfy' needs rebuild=(total_steps -> sigmas) to build the longer schedule")
    steps = int(sigmas.shape[0]) - 1
    if strength in (0.0, 1.0) or steps <= 0:
        return sigmas
    total = int(steps / strength)
    longer = rebuild(total)
    if not isinstance(longer, Tensor) or longer.ndim != 1 or longer.shape[0] < steps + 1:
        shape = tuple(longer.shape) if isinstance(longer, Tensor) else type(longer).__name__
        raise ValueError(f"rebuild({total}) must return about {total + 1} sigmas, got {shape}")
    return longer
