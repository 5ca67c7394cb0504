"""Generation parameters and their A1111-compatible PNG "parameters" text (infotext).

Format (as A1111 writes it)::

    a red circle
    Negative prompt: blurry
    Steps: 20, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: shapes

``read(path)`` returns keyword arguments for ``Kit.generate``, so an image regenerates from its own file.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sdkit.noise import SeedSpec

NEGATIVE = "Negative prompt: "
_FIELD = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


@dataclass(frozen=True)
class GenerationParameters:
    """Everything needed to reproduce an image (sampler/schedule as sdkit names; sigmas when custom)."""

    prompt: str
    negative_prompt: str
    steps: int
    sampler: str
    schedule: str
    cfg: float
    seed: int
    width: int
    height: int
    model: str
    batch_size: int = 1
    sigmas: tuple[float, ...] | None = None
    strength: float | None = None  # img2img / inpaint denoising strength
    mask_blur: float | None = None  # inpainting mask blur (pixels)
    controls: tuple[str, ...] = ()  # one "Model: ..., Weight: ..., Guidance Start: ..., Guidance End: ..." each
    # variation seeds and seed resizing, as A1111 (``sdkit.noise.SeedSpec``): the subseed of the batch's first image
    subseed: int | None = None
    subseed_strength: float = 0.0
    seed_resize_from: tuple[int, int] | None = None  # (width, height) in pixels
    eta_noise_seed_delta: int = 0  # A1111's ENSD: step noise from generators seeded seed + delta

    def infotext(self) -> str:
        from sdkit.samplers.names import display_name

        sampler_display, schedule_display = display_name(self.sampler, self.schedule)
        fields = [
            ("Steps", str(self.steps)),
            ("Sampler", sampler_display),
            ("Schedule type", schedule_display),
            ("CFG scale", f"{self.cfg:g}"),
            ("Seed", str(self.seed)),
            ("Size", f"{self.width}x{self.height}"),
            ("Model", self.model),
        ]
        if self.subseed_strength:
            fields.append(("Variation seed", str(self.subseed)))
            fields.append(("Variation seed strength", repr(float(self.subseed_strength))))
        if self.seed_resize_from is not None:
            fields.append(("Seed resize from", "{}x{}".format(*self.seed_resize_from)))
        if self.eta_noise_seed_delta:
            fields.append(("ENSD", str(self.eta_noise_seed_delta)))
        if self.strength is not None:
            fields.append(("Denoising strength", f"{self.strength:g}"))
        if self.mask_blur is not None:
            fields.append(("Mask blur", f"{self.mask_blur:g}"))
        fields.extend((f"ControlNet {i}", c) for i, c in enumerate(self.controls))
        if self.batch_size > 1:
            fields.append(("Batch size", str(self.batch_size)))
        if self.sigmas is not None:
            fields.append(("Sigmas", " ".join(repr(float(s)) for s in self.sigmas)))
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(NEGATIVE + self.negative_prompt)
        lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in fields))
        return "\n".join(lines)

    @property
    def seed_spec(self) -> SeedSpec:
        """The batch's seeds as ``sdkit.noise.SeedSpec`` (what the recipes draw the noise from)."""
        return SeedSpec(
            self.seed, self.subseed, self.subseed_strength, self.seed_resize_from, self.eta_noise_seed_delta
        )

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``Kit.generate`` that reproduce this image."""
        d = asdict(self)
        # mask blur and ControlNets need the mask / control images, which infotext cannot hold
        d.pop("mask_blur")
        d.pop("controls")
        if d["strength"] is None:
            d.pop("strength")
        sigmas = d.pop("sigmas")
        if sigmas is not None:
            import torch

            d["schedule"] = torch.tensor(sigmas, dtype=torch.float32)
        return d


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' if ("," in value or '"' in value) else value


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _convert(fields: dict[str, str], key: str, convert: Any, default: Any = None) -> Any:
    """``convert(fields[key])``, or one line naming the field when its value does not parse."""
    if key not in fields:
        return default
    try:
        return convert(fields[key])
    except (ValueError, TypeError, OverflowError):
        raise ValueError(f"infotext: field {key!r} has an unreadable value {fields[key]!r}") from None


def _size(value: str) -> tuple[int, int]:
    width, height = (int(v) for v in value.split("x"))
    return width, height


def parse(text: str) -> GenerationParameters:
    """Parse infotext written by sdkit (or A1111, for the fields both share)."""
    from sdkit.samplers.names import resolve

    if not isinstance(text, str):
        raise TypeError(f"infotext must be a str, got {type(text).__name__}")
    lines = text.strip().split("\n")
    if not lines or ":" not in lines[-1]:
        raise ValueError("infotext: the last line must hold the 'Steps: ..., Seed: ...' fields")
    fields = {m.group(1).strip(): _unquote(m.group(2)) for m in _FIELD.finditer(lines[-1]) if m.group(1).strip()}
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines[:-1]:
        if line.startswith(NEGATIVE):
            in_negative = True
            line = line[len(NEGATIVE) :]
        (negative_lines if in_negative else prompt_lines).append(line)
    missing = [k for k in ("Steps", "Sampler", "CFG scale", "Seed", "Size") if k not in fields]
    if missing:
        raise ValueError(f"infotext: missing fields {missing}")
    schedule_display = fields.get("Schedule type", "")
    sampler, schedule = resolve(fields["Sampler"] + (f" {schedule_display}" if schedule_display else ""))
    width, height = _convert(fields, "Size", _size)
    sigmas = _convert(fields, "Sigmas", lambda v: tuple(float(s) for s in v.split()))
    return GenerationParameters(
        prompt="\n".join(prompt_lines),
        negative_prompt="\n".join(negative_lines),
        steps=_convert(fields, "Steps", int),
        sampler=sampler,
        schedule="custom" if sigmas is not None else schedule,
        cfg=_convert(fields, "CFG scale", float),
        seed=_convert(fields, "Seed", int),
        width=width,
        height=height,
        model=fields.get("Model", ""),
        batch_size=_convert(fields, "Batch size", int, 1),
        sigmas=sigmas,
        strength=_convert(fields, "Denoising strength", float),
        mask_blur=_convert(fields, "Mask blur", float),
        controls=tuple(v for k, v in fields.items() if re.fullmatch(r"ControlNet \d+", k)),
        **_seed_fields(fields),
    )


def _seed_fields(fields: dict[str, str]) -> dict[str, Any]:
    """Variation seed, its strength, "Seed resize from" and ENSD (A1111's names; absent or 0 when not used)."""
    strength = _convert(fields, "Variation seed strength", float, 0.0)
    resize = _convert(fields, "Seed resize from", _size)
    return {
        "subseed": _convert(fields, "Variation seed", int) if strength else None,
        "subseed_strength": strength,
        "seed_resize_from": resize if resize is not None and min(resize) > 0 else None,
        "eta_noise_seed_delta": _convert(fields, "ENSD", int, 0),
    }


def read(path: str | Path) -> dict[str, Any]:
    """``Kit.generate`` keyword arguments stored in an image written by sdkit."""
    from sdkit.loading import read_png_parameters

    return parse(read_png_parameters(path)).generate_kwargs()
