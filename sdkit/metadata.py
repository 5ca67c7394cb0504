"""Generation parameters and their A1111-compatible PNG "parameters" text (infotext).

Format (as A1111 writes it)::

    a red circle
    Negative prompt: blurry
    Steps: 20, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: shapes

``read(path)`` returns keyword arguments for ``Kit.generate``, so an image regenerates from its own file, and
``parse(text)`` reads A1111's and Forge's infotexts the way A1111's ``parse_generation_parameters``
(``modules/infotext_utils.py``) does:

- The last line holds the fields; every line before it is the prompt, up to a line that starts with
  "Negative prompt:", which starts the negative prompt. Each line is stripped of surrounding whitespace.
- A field is ``Key: value``, separated by commas; a value that holds ``,``, ``:`` or a newline is written as
  a JSON string (``Lora hashes: "a: 1f2e, b: 3d4c"``). sdkit also keeps a JSON object or list written bare
  (``Hashes: {"model": "..."}``, civitai's extension) whole, where A1111 cuts it at its first comma.
- ``Denoising strength`` is the hires pass's strength when the text has ``Hires upscale``, ``Hires steps``,
  ``Hires upscaler`` or ``Hires resize`` (A1111's txt2img Hires. fix) and img2img's strength otherwise.
  ``Clip skip`` is 1 when absent. Texts of A1111 before 1.0 (Jan 2023) give the first pass as "First pass size"
  (0x0: A1111's automatic size) and the final size as "Size"; they read as "Hires resize" to that final size,
  as A1111 converts them. Sampler and schedule resolve as A1111 >= 1.9 ("Automatic" is the sampler's
  default schedule; "DPM++ 2M Karras" in one field is the same as "DPM++ 2M" + "Schedule type: Karras").
- Fields sdkit does not use (``Model hash``, ``VAE``, ``Lora hashes``, ``TI hashes``, ``Version``, extension
  fields ...) are kept in ``GenerationParameters.extra`` as written and ``infotext()`` writes them back unchanged,
  in their order, after sdkit's own fields.

What sdkit writes always reads back to the same parameters (``parse(p.infotext()) == p``):

- Numbers are written so that they read back exactly: ``repr`` of the float, except integral values, which
  are written as integers ("CFG scale: 7", "CFG scale: 7.5", "CFG scale: 7.123456789").
- The prompt lines are ambiguous for some prompts, in A1111 as well: a line starting with "Negative prompt:",
  whitespace around a line, blank first lines. sdkit writes the prompt lines as A1111 does and, when reading
  them back would not give the exact prompt or negative prompt, adds the exact text as JSON-quoted ``Prompt``
  and ``Negative prompt`` fields to the last line. They take precedence when reading (in A1111 too: its
  parser lets a field named ``Prompt`` overwrite the prompt it collected from the lines).
- Any value that could be misread (commas, colons, newlines, quotes, surrounding whitespace; e.g. a model
  folder name with a newline) is written as a JSON string, so the text keeps its one line of fields.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from sdkit.hires import HiresFix
from sdkit.noise import SeedSpec

NEGATIVE = "Negative prompt: "
_KEY = re.compile(r"\s*(\w[\w \-/]+):\s*")  # A1111's re_param, split into key and value
_VALUE = re.compile(r'("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_END = re.compile(r"\s*(?:,|$)")
_HIRES_KEYS = ("Hires upscale", "Hires steps", "Hires upscaler", "Hires resize")
_KNOWN = {
    "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model", "Batch size", "Batch pos", "Sigmas",
    "Denoising strength", "Mask blur", "Clip skip", "Variation seed", "Variation seed strength",
    "Seed resize from", "ENSD", "Prompt", "Negative prompt", "First pass size", *_HIRES_KEYS,
}  # fmt: skip


@dataclass(frozen=True)
class GenerationParameters:
    """Everything needed to reproduce an image (sampler/schedule as sdkit names; sigmas when custom).

    ``extra``: fields sdkit does not use, as ``(key, value as written)`` pairs (a JSON-quoted value keeps its
    quotes), written back unchanged after sdkit's own fields."""

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
    clip_skip: int = 1  # A1111's "Clip skip" (1: the last layer; see sdkit.text.encoder)
    hires: HiresFix | None = None  # txt2img's second pass (sdkit.hires); its strength is "Denoising strength"
    extra: tuple[tuple[str, str], ...] = ()
    batch_pos: int = 0  # which image of its batch this is (its own seed is ``seed``); A1111's "Batch pos"

    def __post_init__(self) -> None:
        from sdkit.schedules import SCHEDULES

        key = self.schedule.strip().lower().replace(" ", "_").replace("-", "_")
        if key in SCHEDULES and key != self.schedule:  # "Align Your Steps", "kl-optimal": the name sdkit writes
            object.__setattr__(self, "schedule", key)
        if self.hires is not None and self.strength is not None:
            raise ValueError("hires: the hires fix is for txt2img; it cannot go with an img2img strength")
        for k, raw in self.extra:
            if _split_fields(f"{k}: {raw}") != [(k, raw)]:
                raise ValueError(f"extra: field {k!r} with value {raw!r} would not read back from an infotext")

    def _fields(self) -> list[tuple[str, str]]:
        """sdkit's own fields, A1111's names and order, values as written (quoted where needed)."""
        from sdkit.samplers.names import display_name

        sampler_display, schedule_display = display_name(self.sampler, self.schedule)
        out = [
            ("Steps", str(self.steps)),
            ("Sampler", sampler_display),
            ("Schedule type", schedule_display),
            ("CFG scale", _number(self.cfg)),
            ("Seed", str(self.seed)),
            ("Size", f"{self.width}x{self.height}"),
        ]
        if self.model:
            out.append(("Model", self.model))
        if self.subseed_strength:
            out.append(("Variation seed", str(self.subseed)))
            out.append(("Variation seed strength", _number(self.subseed_strength)))
        if self.seed_resize_from is not None:
            out.append(("Seed resize from", "{}x{}".format(*self.seed_resize_from)))
        strength = self.strength if self.hires is None else self.hires.denoising_strength
        if strength is not None:
            out.append(("Denoising strength", _number(strength)))
        if self.clip_skip != 1:
            out.append(("Clip skip", str(self.clip_skip)))
        if self.eta_noise_seed_delta:
            out.append(("ENSD", str(self.eta_noise_seed_delta)))
        if self.mask_blur is not None:
            out.append(("Mask blur", _number(self.mask_blur)))
        out.extend((f"ControlNet {i}", c) for i, c in enumerate(self.controls))
        if self.batch_size > 1:
            out.append(("Batch size", str(self.batch_size)))
            out.append(("Batch pos", str(self.batch_pos)))
        if self.sigmas is not None:
            out.append(("Sigmas", " ".join(repr(float(s)) for s in self.sigmas)))
        if self.hires is not None:
            h = self.hires
            if h.resize_to is None or h.scale != HiresFix.scale:
                out.append(("Hires upscale", _number(h.scale)))
            if h.resize_to is not None:
                out.append(("Hires resize", "{}x{}".format(*h.resize_to)))
            if h.steps:
                out.append(("Hires steps", str(h.steps)))
            out.append(("Hires upscaler", h.upscaler))
        return [(k, _quote(v)) for k, v in out]

    def infotext(self) -> str:
        fields_ = self._fields()
        clash = {k for k, _ in fields_} & {k for k, _ in self.extra}
        if clash:
            raise ValueError(f"extra: fields {sorted(clash)} are written by sdkit itself; remove them from extra")
        fields_ += self.extra
        lines = [self.prompt] + ([NEGATIVE + self.negative_prompt] if self.negative_prompt else [])
        read_prompt, read_negative = _read_prompts("\n".join(lines).split("\n"))
        if read_prompt != self.prompt:  # the lines alone would read back wrong: add the exact texts
            fields_.append(("Prompt", json.dumps(self.prompt, ensure_ascii=False)))
        if read_negative != self.negative_prompt:
            fields_.append(("Negative prompt", json.dumps(self.negative_prompt, ensure_ascii=False)))
        lines.append(", ".join(f"{k}: {v}" for k, v in fields_))
        return "\n".join(lines)

    @property
    def seed_spec(self) -> SeedSpec:
        """The batch's seeds as ``sdkit.noise.SeedSpec`` (what the recipes draw the noise from)."""
        return SeedSpec(
            self.seed, self.subseed, self.subseed_strength, self.seed_resize_from, self.eta_noise_seed_delta
        )

    def with_field(self, key: str, value: str) -> GenerationParameters:
        """These parameters with one more field of their own written after sdkit's (quoted where needed), e.g.
        ``("Refiner", name)``."""
        return replace(self, extra=(*self.extra, (key, _quote(value))))

    def for_image(self, i: int) -> GenerationParameters:
        """The parameters written into image ``i`` of this batch: its own seed (and variation seed), as A1111
        writes each image's ``Seed``, with ``Batch pos: i``. They regenerate it as the first image of a batch of
        the same size."""
        from sdkit.limits import check_int

        i = check_int("index", i, minimum=0, maximum=self.batch_size - 1)
        own = self.seed_spec.for_image(i)
        return replace(self, seed=own.seed, subseed=own.subseed, batch_pos=i)

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``Kit.generate`` that reproduce this image (the first of the batch they make)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        # mask blur and ControlNets need the mask / control images, which infotext cannot hold
        for key in ("mask_blur", "controls", "extra", "batch_pos"):
            d.pop(key)
        for key in ("strength", "hires"):
            if d[key] is None:
                d.pop(key)
        sigmas = d.pop("sigmas")
        if sigmas is not None:
            import torch

            d["schedule"] = torch.tensor(sigmas, dtype=torch.float32)
        return d


def _number(x: float) -> str:
    """A float that reads back exactly: "7" for 7.0, "7.5", "7.123456789" (``repr``)."""
    x = float(x)
    return str(int(x)) if math.isfinite(x) and x.is_integer() and abs(x) < 2**53 else repr(x)


def _quote(value: str) -> str:
    """A1111's ``quote`` (JSON string when the value holds ``,``, ``:`` or a newline), also for values that would
    not read back otherwise: quotes or a JSON-looking start, surrounding whitespace, any control character."""
    risky = (
        value != value.strip()
        or value[:1] in ('"', "{", "[")
        or any(c in value for c in ",:")
        or any(ord(c) < 32 or c == "\x7f" for c in value)
    )
    return json.dumps(value, ensure_ascii=False) if risky else value


def _unquote(raw: str) -> str:
    """A1111's ``unquote``: a value in double quotes is a JSON string (older sdkit texts: backslash escapes)."""
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        try:
            value = json.loads(raw)
            return value if isinstance(value, str) else raw
        except ValueError:
            return re.sub(r"\\(.)", r"\1", raw[1:-1])
    return raw


def _split_fields(line: str) -> list[tuple[str, str]]:
    """``[(key, value as written), ...]`` of a fields line: A1111's ``re_param.findall``, plus bare JSON
    objects/lists kept whole."""
    out: list[tuple[str, str]] = []
    pos = 0
    while (key := _KEY.search(line, pos)) is not None:
        start = key.end()
        if line[start : start + 1] in ("{", "["):
            try:
                _, end = json.JSONDecoder().raw_decode(line, start)
            except ValueError:
                end = -1
            sep = _END.match(line, end) if end > 0 else None
            if sep is not None:
                out.append((key.group(1), line[start:end]))
                pos = max(sep.end(), end + 1)
                continue
        value = _VALUE.match(line, start)
        assert value is not None  # the value pattern matches the empty string
        out.append((key.group(1), value.group(1)))
        pos = max(value.end(), start + 1)
    return out


def _read_prompts(lines: list[str]) -> tuple[str, str]:
    """The prompt and negative prompt of the lines before the fields, as A1111 reads them."""
    prompt, negative, in_negative = "", "", False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE.strip()):
            in_negative = True
            line = line[len(NEGATIVE.strip()) :].strip()
        if in_negative:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    return prompt, negative


def _convert(fields_: dict[str, str], key: str, convert: Any, default: Any = None) -> Any:
    """``convert(fields[key])``, or one line naming the field when its value does not parse."""
    if key not in fields_:
        return default
    try:
        return convert(fields_[key])
    except (ValueError, TypeError, OverflowError):
        raise ValueError(f"infotext: field {key!r} has an unreadable value {fields_[key]!r}") from None


def _size(value: str) -> tuple[int, int]:
    width, height = (int(v) for v in value.split("x"))
    return width, height


def parse(text: str) -> GenerationParameters:
    """Parse infotext written by sdkit, A1111 or Forge (see the module doc for the rules)."""
    from sdkit.samplers.names import resolve

    if not isinstance(text, str):
        raise TypeError(f"infotext must be a str, got {type(text).__name__}")
    *lines, last = text.strip().split("\n")
    pairs = _split_fields(last)
    if len(pairs) < 3:  # A1111: no fields line; it is all prompt
        lines, pairs = [*lines, last], []
    values = {k: _unquote(raw) for k, raw in pairs}  # the last of a repeated key wins, as in A1111
    missing = [k for k in ("Steps", "Sampler", "CFG scale", "Seed", "Size") if k not in values]
    if missing:
        raise ValueError(f"infotext: missing fields {missing} (the last line must hold 'Steps: ..., Seed: ...')")
    prompt, negative = _read_prompts(lines)
    sampler, schedule = resolve(values["Sampler"], values.get("Schedule type"))
    width, height = _convert(values, "Size", _size)
    first_pass = _convert(values, "First pass size", _size)
    if first_pass is not None:  # A1111 < 1.0's hires fix: "Size" is the final size
        values["Hires resize"] = f"{width}x{height}"
        width, height = _old_first_pass(width, height) if 0 in first_pass else first_pass
    sigmas = _convert(values, "Sigmas", lambda v: tuple(float(s) for s in v.split()))
    hires = _hires(values)
    params = GenerationParameters(
        prompt=values.get("Prompt", prompt),
        negative_prompt=values.get("Negative prompt", negative),
        steps=_convert(values, "Steps", int),
        sampler=sampler,
        schedule="custom" if sigmas is not None else schedule,
        cfg=_convert(values, "CFG scale", float),
        seed=_convert(values, "Seed", int),
        width=width,
        height=height,
        model=values.get("Model", ""),
        batch_size=_convert(values, "Batch size", int, 1),
        batch_pos=_convert(values, "Batch pos", int, 0),
        sigmas=sigmas,
        strength=None if hires is not None else _convert(values, "Denoising strength", float),
        mask_blur=_convert(values, "Mask blur", float),
        controls=tuple(v for k, v in values.items() if re.fullmatch(r"ControlNet \d+", k)),
        clip_skip=_convert(values, "Clip skip", int, 1),
        hires=hires,
        **_seed_fields(values),
    )
    # keep every field sdkit will not write itself: unknown ones, and known ones whose value means "unused"
    written = {k for k, _ in params._fields()} | {"Prompt", "Negative prompt", "First pass size"}
    extra = tuple((k, raw) for k, raw in pairs if k not in _KNOWN or k not in written)
    return replace(params, extra=extra)


def _old_first_pass(width: int, height: int) -> tuple[int, int]:
    """A1111's ``old_hires_fix_first_pass_dimensions``: the automatic first pass of about 512x512 pixels (sides
    rounded up to multiples of 64) for a "First pass size: 0x0" text."""
    scale = math.sqrt(512 * 512 / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def _hires(values: dict[str, str]) -> HiresFix | None:
    """A1111's txt2img Hires. fix, when the text has hires fields and a denoising strength (A1111's defaults for
    the missing ones: upscale 2, steps 0, upscaler "Latent")."""
    if "Denoising strength" not in values or not any(k in values for k in _HIRES_KEYS):
        return None
    resize = _convert(values, "Hires resize", _size)
    try:
        return HiresFix(
            scale=_convert(values, "Hires upscale", float, HiresFix.scale),
            steps=_convert(values, "Hires steps", int, 0),
            denoising_strength=_convert(values, "Denoising strength", float),
            upscaler=values.get("Hires upscaler", HiresFix.upscaler),
            resize_to=None if resize is None or resize == (0, 0) else resize,
        )
    except ValueError as e:
        raise ValueError(f"infotext: {e}") from None


def _seed_fields(values: dict[str, str]) -> dict[str, Any]:
    """Variation seed, its strength, "Seed resize from" and ENSD (A1111's names; absent or 0 when not used)."""
    strength = _convert(values, "Variation seed strength", float, 0.0)
    resize = _convert(values, "Seed resize from", _size)
    return {
        "subseed": _convert(values, "Variation seed", int) if strength else None,
        "subseed_strength": strength,
        "seed_resize_from": resize if resize is not None and min(resize) > 0 else None,
        "eta_noise_seed_delta": _convert(values, "ENSD", int, 0),
    }


def read(path: str | Path) -> dict[str, Any]:
    """``Kit.generate`` keyword arguments stored in an image written by sdkit (or A1111)."""
    from sdkit.image_files import read_png_parameters

    return parse(read_png_parameters(path)).generate_kwargs()
