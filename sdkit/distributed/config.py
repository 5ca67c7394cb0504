"""The sweep file: a small JSON or TOML document naming the model, the prompt, the fixed parameters and the axes.

    model = "shapes"
    prompt = "a large red circle on the left, yellow background"
    max_batch = 8                      # optional: cells per batch (default: the grid split evenly, at most 16)
    scores = ["prompt_following"]      # optional: scorers for the table (sdkit.distributed.scores)

    [fixed]
    steps = 20
    sampler = "euler"

    [x]
    param = "cfg"
    values = [1.0, 3.0, 7.5, 12.0]

    [y]
    param = "seed"
    values = [1, 2, 3, 4]

An axis may vary two parameters together: ``param = ["steps", "seed"]``, ``values = [[10, 1], [20, 1]]``. Other
keys: ``out`` (the output folder; default: the config file's name without its suffix, next to it), ``lockstep``
(default true), ``latents`` (also keep each cell's latents, default false).

Everything is checked here, without torch, so that the CLI reports a bad file at once (``tests/test_cli_startup.py``
keeps the CLI torch-free up to that point); the model itself checks the rest when it plans the cells. Seeds must be
explicit: a resumed sweep must render the cells it left out with the seeds of the first run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdkit.distributed.scores import SCORERS
from sdkit.limits import MAX_STEPS, check_bool, check_int, check_number, check_size, show
from sdkit.names import SCHEDULE_NAMES, resolve, schedule_key

AXIS_PARAMS = ("prompt", "negative_prompt", "seed", "cfg", "sampler", "schedule", "steps", "width", "height")
"""What an axis may vary: ``sdkit.sweep.SWEEPABLE`` (a test keeps the two equal)."""
FIXED_PARAMS = AXIS_PARAMS[1:]
"""``Kit.generate`` arguments a sweep file may fix (the prompt has its own key)."""
KEYS = ("model", "prompt", "fixed", "x", "y", "out", "max_batch", "lockstep", "latents", "scores")
SEED_LIMIT = 2**64  # sdkit.noise.SEED_LIMIT


@dataclass(frozen=True)
class SweepConfig:
    """A checked sweep file. ``x``/``y`` are axes as ``sdkit.sweep.sweep`` takes them."""

    model: str
    prompt: str
    x: tuple[Any, list[Any]] | None = None
    y: tuple[Any, list[Any]] | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    out: str | None = None
    max_batch: int | None = None
    lockstep: bool = True
    latents: bool = False
    scores: tuple[str, ...] = ()


def load_config(path: str | Path) -> SweepConfig:
    """Read and check a ``.json`` or ``.toml`` sweep file; a relative ``out`` is taken from the file's folder."""
    path = Path(path)
    if path.suffix.lower() not in (".json", ".toml"):
        raise ValueError(f"config must be a .json or .toml file, got {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"config: no such file {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"config: cannot read {path}: {e}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except ValueError as e:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
        raise ValueError(f"config {path} is not valid {path.suffix[1:].upper()}: {e}") from None
    config = parse_config(data)
    out = Path(config.out) if config.out is not None else path.with_suffix("")
    return SweepConfig(**{**config.__dict__, "out": str(out if out.is_absolute() else path.parent / out)})


def parse_config(data: Any) -> SweepConfig:
    """Check a sweep file's content (a dict as JSON or TOML gives it); errors name the key and the value."""
    if not isinstance(data, dict):
        raise TypeError(f"config must be a table (a dict) of keys {', '.join(KEYS)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ValueError(f"config: unknown key {unknown[0]!r}; allowed keys: {', '.join(KEYS)}")
    for key in ("model", "prompt"):
        if not isinstance(data.get(key), str):
            raise TypeError(f"config: {key} must be a string, got {show(data.get(key))}")
    if not data["model"].strip():
        raise ValueError(f"config: model must name 'shapes', a folder, a file or a hub id, got {data['model']!r}")
    fixed = data.get("fixed", {})
    if not isinstance(fixed, dict):
        raise TypeError(f"config: fixed must be a table of parameters, got {show(fixed)}")
    for name, value in fixed.items():
        if name not in FIXED_PARAMS:
            allowed = ", ".join(FIXED_PARAMS)
            raise ValueError(f"config: fixed.{name} is not a parameter a sweep can fix; allowed: {allowed}")
        check_value(f"fixed.{name}", name, value)
    x, y = (_axis(key, data.get(key)) for key in ("x", "y"))
    given = [n for axis in (x, y) if axis for n in _names(axis)] + list(fixed)
    twice = sorted({n for n in given if given.count(n) > 1})
    if twice:
        raise ValueError(f"config: {twice[0]} is given twice (on an axis and/or in fixed)")
    if not data["prompt"].strip() and "prompt" not in given:
        raise ValueError("config: prompt must not be empty (or put prompt on an axis)")
    if "seed" not in given:
        raise ValueError("config: seed is missing; a resumable sweep needs explicit seeds (fixed.seed or an axis)")
    scores = data.get("scores", [])
    if isinstance(scores, str):
        scores = [scores]
    if not isinstance(scores, list) or any(s not in SCORERS for s in scores):
        raise ValueError(f"config: scores must be a list of {', '.join(SCORERS)}, got {show(data.get('scores'))}")
    max_batch = data.get("max_batch")
    out = data.get("out")
    if out is not None and (not isinstance(out, str) or not out.strip()):
        raise TypeError(f"config: out must be a folder name, got {show(out)}")
    return SweepConfig(
        model=data["model"],
        prompt=data["prompt"],
        x=x,
        y=y,
        fixed=dict(fixed),
        out=out,
        max_batch=None if max_batch is None else check_int("config: max_batch", max_batch),
        lockstep=check_bool("config: lockstep", data.get("lockstep", True)),
        latents=check_bool("config: latents", data.get("latents", False)),
        scores=tuple(scores),
    )


def check_value(where: str, name: str, value: Any) -> Any:
    """One parameter value as a sweep file may give it (names, not functions or tensors)."""
    if name in ("prompt", "negative_prompt", "sampler", "schedule") and not isinstance(value, str):
        raise TypeError(f"config: {where} ({name}) must be a string, got {type(value).__name__} {show(value)}")
    if name == "seed":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"config: {where} (seed) must be an integer in [0, 2^64), got {show(value)}")
        if not 0 <= value < SEED_LIMIT:
            raise ValueError(f"config: {where} (seed) must be in [0, 2^64) (no random seeds: -1), got {value}")
    elif name == "cfg":
        check_number(f"config: {where} (cfg)", value)
    elif name == "steps":
        check_int(f"config: {where} (steps)", value, maximum=MAX_STEPS, bound="MAX_STEPS")
    elif name in ("width", "height"):
        check_size(f"config: {where} ({name})", value, 8)
    elif name == "clip_skip":
        check_int(f"config: {where} (clip_skip)", value)
    elif name == "sampler":
        try:
            resolve(value)
        except ValueError as e:
            raise ValueError(f"config: {where}: {e}") from None
    elif name == "schedule" and schedule_key(value) not in SCHEDULE_NAMES:
        raise ValueError(f"config: {where}: unknown schedule {value!r}; valid names: {', '.join(SCHEDULE_NAMES)}")
    return value


def _names(axis: tuple[Any, list[Any]]) -> tuple[str, ...]:
    return (axis[0],) if isinstance(axis[0], str) else tuple(axis[0])


def _axis(key: str, raw: Any) -> tuple[Any, list[Any]] | None:
    """``{"param": name or [names], "values": [...]}`` -> ``(name, values)`` / ``((names), [(v1, v2), ...])``."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"param", "values"}:
        raise ValueError(f"config: {key} must be a table with keys param and values, got {show(raw)}")
    param, values = raw["param"], raw["values"]
    names = [param] if isinstance(param, str) else param
    if not isinstance(names, list) or not names or any(not isinstance(n, str) for n in names):
        raise TypeError(f"config: {key}.param must be a parameter name or a list of them, got {show(param)}")
    bad = [n for n in names if n not in AXIS_PARAMS]
    if bad or len(set(names)) < len(names):
        raise ValueError(f"config: {key}.param: cannot sweep over {show(param)}; sweepable: {', '.join(AXIS_PARAMS)}")
    if not isinstance(values, list) or not values:
        raise ValueError(f"config: {key}.values must be a non-empty list, got {show(values)}")
    rows = []
    for i, value in enumerate(values):
        row = [value] if isinstance(param, str) else value
        if not isinstance(row, list) or len(row) != len(names):
            raise ValueError(f"config: {key}.values[{i}] must be a list of {len(names)} values, got {show(value)}")
        rows.append(tuple(check_value(f"{key}.values[{i}]", n, v) for n, v in zip(names, row, strict=True)))
    if isinstance(param, str):
        return param, [r[0] for r in rows]
    return tuple(names), rows
