"""The names users type for sdkit's closed choices, in a module that imports no torch, so front ends (the CLI)
can check arguments before anything heavy loads: sampler and schedule names, A1111's display names for them, and
the image file suffixes sdkit writes. ``sdkit.samplers.SAMPLERS`` and ``sdkit.schedules.SCHEDULES`` are keyed by
``SAMPLER_NAMES`` and ``SCHEDULE_NAMES``.

A1111 (stable-diffusion-webui) display names <-> sdkit's (sampler, schedule) names are for users, the CLI and PNG
infotext; internal code passes snake_case names or the functions themselves, never display names.
``resolve("DPM++ 2M Karras") == ("dpmpp_2m", "karras")``; ``resolve("Euler a")`` gives the schedule A1111's
"Automatic" picks for that sampler (A1111 >= 1.9; before 1.9 a bare name meant the uniform schedule, which
is sdkit's "normal"). ``display_name("dpmpp_2m", "karras")`` gives ``("DPM++ 2M", "Karras")``, the
"Sampler" and "Schedule type" fields A1111 writes; ``str()`` of it is the legacy one-field form.

Not representable as (sampler, schedule): A1111's "discard next-to-last sigma" for DPM2/DPM2 a/DPM++ 3M SDE, and
its UniPC defaults (order 3, "bh1").
"""

from __future__ import annotations

import re
from typing import NamedTuple

SAMPLER_DISPLAY: dict[str, str] = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "heun": "Heun",
    "dpm_2": "DPM2",
    "dpm_2_ancestral": "DPM2 a",
    "lms": "LMS",
    "dpmpp_2s_ancestral": "DPM++ 2S a",
    "dpmpp_sde": "DPM++ SDE",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_2m_sde_heun": "DPM++ 2M SDE Heun",
    "dpmpp_3m_sde": "DPM++ 3M SDE",
    "ddim": "DDIM",
    "ddpm": "DDPM",
    "unipc": "UniPC",
    "lcm": "LCM",
}

SCHEDULE_DISPLAY: dict[str, str] = {
    "normal": "Normal",
    "karras": "Karras",
    "exponential": "Exponential",
    "polyexponential": "Polyexponential",
    "sgm_uniform": "SGM Uniform",
    "simple": "Simple",
    "ddim_uniform": "DDIM",
    "beta": "Beta",
    "kl_optimal": "KL Optimal",
    "align_your_steps": "Align Your Steps",
    "linspace": "Linspace",
    "leading": "Leading",
    "trailing": "Trailing",
    "lcm": "LCM",
    "custom": "Custom",
}

AUTOMATIC: dict[str, str] = {
    # A1111's "Automatic" schedule per sampler (modules/sd_samplers_kdiffusion.py options, A1111 >= 1.9)
    "euler": "normal",
    "euler_ancestral": "normal",
    "heun": "normal",
    "lms": "normal",
    "dpm_2": "karras",
    "dpm_2_ancestral": "karras",
    "dpmpp_2s_ancestral": "karras",
    "dpmpp_sde": "karras",
    "dpmpp_2m": "karras",
    "dpmpp_2m_sde": "exponential",
    "dpmpp_2m_sde_heun": "exponential",
    "dpmpp_3m_sde": "exponential",
    # timestep samplers: DDIM's uniform timesteps (t = k * T // n + 1), LCM's distillation grid
    "ddim": "ddim_uniform",
    "ddpm": "leading",
    "unipc": "normal",
    "lcm": "lcm",
}

SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLER_DISPLAY)
"""The keys of ``sdkit.samplers.SAMPLERS``, in its order."""

SCHEDULE_NAMES: tuple[str, ...] = tuple(name for name in SCHEDULE_DISPLAY if name != "custom")
"""The keys of ``sdkit.schedules.SCHEDULES`` ("custom" is what infotext calls a schedule passed as a tensor)."""

IMAGE_FORMATS: dict[str, str] = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
"""Output file suffix -> the PIL format sdkit writes (with the generation parameters) for it."""


def schedule_key(name: str) -> str:
    """A schedule name as ``SCHEDULES`` spells it: "Align Your Steps", "kl-optimal" -> "align_your_steps",
    "kl_optimal" (not checked: see ``sdkit.schedules.make_sigmas``)."""
    return name.strip().lower().replace(" ", "_").replace("-", "_")


_SAMPLER_ALIASES: dict[str, str] = {
    "k_euler": "euler",
    "k_euler_a": "euler_ancestral",
    "k_euler_ancestral": "euler_ancestral",
    "euler_a": "euler_ancestral",
    "k_heun": "heun",
    "k_dpm_2": "dpm_2",
    "k_dpm_2_a": "dpm_2_ancestral",
    "k_lms": "lms",
    "k_dpmpp_2s_a": "dpmpp_2s_ancestral",
    "k_dpmpp_sde": "dpmpp_sde",
    "k_dpmpp_2m": "dpmpp_2m",
    "k_dpmpp_2m_sde": "dpmpp_2m_sde",
    "k_dpmpp_2m_sde_heun": "dpmpp_2m_sde_heun",
    "k_dpmpp_3m_sde": "dpmpp_3m_sde",
    "uni_pc": "unipc",
}

_SCHEDULE_ALIASES: dict[str, str | None] = {
    "automatic": None,  # the sampler's default
    "uniform": "normal",  # A1111's k-diffusion get_sigmas: the same timesteps as "normal"
    "sgmuniform": "sgm_uniform",
    "ddim_uniform": "ddim_uniform",
}


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def _sampler_keys() -> dict[str, str]:
    keys = {_norm(display): name for name, display in SAMPLER_DISPLAY.items()}
    keys.update({name: name for name in SAMPLER_DISPLAY})
    keys.update(_SAMPLER_ALIASES)
    return keys


def _schedule_keys() -> dict[str, str | None]:
    keys: dict[str, str | None] = {_norm(display): name for name, display in SCHEDULE_DISPLAY.items()}
    keys.update({name: name for name in SCHEDULE_DISPLAY})
    keys.update(_SCHEDULE_ALIASES)
    return keys


def _unknown(what: str, text: str) -> ValueError:
    return ValueError(
        f"unknown {what} {text!r}; valid samplers: {', '.join(SAMPLER_DISPLAY.values())} (or sdkit names "
        f"{', '.join(SAMPLER_DISPLAY)}), optionally followed by a schedule type: Automatic, Uniform, "
        f"{', '.join(SCHEDULE_DISPLAY.values())} (or {', '.join(SCHEDULE_DISPLAY)})"
    )


def _schedule_of(text: str, sampler: str, name: str) -> str:
    keys = _schedule_keys()
    key = text if text in keys else text.replace("_", " ")
    if key not in keys:
        raise _unknown("schedule type" if text == name else "sampler/schedule name", name)
    return keys[key] or AUTOMATIC[sampler]


def resolve(name: str, schedule: str | None = None) -> tuple[str, str]:
    """``"DPM++ 2M Karras"`` -> ``("dpmpp_2m", "karras")``, case-insensitive.

    Accepts A1111 display names with an optional schedule suffix ("Euler a", "DPM++ SDE Exponential",
    "DPM++ 2M SGM Uniform", "Euler Automatic"), sdkit's snake_case names ("dpmpp_2m", "dpmpp_2m_karras"),
    and k-diffusion's old ``k_*`` aliases. ``schedule`` (A1111's separate "Schedule type" field) overrides a
    suffix; with neither, the sampler's A1111 "Automatic" schedule is returned. Unknown names raise
    ValueError listing the valid ones.
    """
    if not isinstance(name, str):
        raise TypeError(f"sampler name must be a str, got {type(name).__name__}")
    text = _norm(name)
    samplers = _sampler_keys()
    match = max(
        (k for k in samplers if text == k or text.startswith(k + " ") or text.startswith(k + "_")),
        key=len,
        default=None,
    )
    if match is None:
        raise _unknown("sampler", name)
    sampler = samplers[match]
    suffix = text[len(match) :].lstrip(" _")
    if schedule is not None and _norm(schedule):
        return sampler, _schedule_of(_norm(schedule), sampler, _norm(schedule))
    if suffix:
        return sampler, _schedule_of(suffix, sampler, name)
    return sampler, AUTOMATIC[sampler]


class DisplayName(NamedTuple):
    """A1111's "Sampler" and "Schedule type" fields; ``str()`` joins them ("DPM++ 2M Karras")."""

    sampler: str
    schedule: str

    def __str__(self) -> str:
        return f"{self.sampler} {self.schedule}" if self.schedule else self.sampler


def display_name(sampler: str, schedule: str) -> DisplayName:
    """``("dpmpp_2m", "karras")`` -> ``DisplayName("DPM++ 2M", "Karras")``; names sdkit does not know (a
    custom sampler function's ``__name__``) are passed through unchanged."""
    sampler_text = SAMPLER_DISPLAY.get(sampler, sampler)
    schedule_text = SCHEDULE_DISPLAY.get(schedule, schedule)
    return DisplayName(sampler_text, schedule_text)
