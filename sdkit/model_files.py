"""Model files checked before any library opens them: weights formats, the guards on weights, and JSON configs.

Formats are recognised by their bytes, never by the extension: a safetensors header (length, JSON object, offsets
that fit the file) comes first, as reading one never runs code; then pickles (``.ckpt``/``.pt``/``.bin``, plain or
inside a zip), which can run code when unpickled, so they are refused unless the caller opts in, and then loaded
with ``weights_only=True`` passed explicitly (torch then ignores ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``). Diffusers
folders get the same rule (``check_weights_folder``): a component whose weights are pickles is refused without the
opt-in, and with it each pickle is first read weights-only by sdkit, so a payload is refused before diffusers or
transformers open the file. Annotators (MiDaS) load through ``read_state_dict`` too.

Everything a model is made of is checked when it is loaded, each refusal one ``ModelLoadError`` line naming the
file and the field: JSON configs (``model_index.json``, ``scheduler_config.json``, ``sdkit.json``), weights that
are not floating point or lack tensors the config needs. ``sdkit.loading`` and ``sdkit.single_file`` build models
from files checked here.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from sdkit.errors import ModelLoadError
from sdkit.limits import MAX_STEPS, check_bool, check_int, check_number, check_size

FileFormat = Literal["safetensors", "pickle", "zip", "unknown"]
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".pkl")
SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library's own bound on the header length
INDEX_BUFFERS = ("position_ids", "num_batches_tracked", "num_updates")  # the integer tensors checkpoints may hold


# ------------------------------------------------------------------------------------------- formats
def safetensors_header(path: str | Path) -> dict[str, Any] | str | None:
    """The JSON header of a safetensors file, read as the published format lays it out: an 8-byte little-endian
    length N, then N bytes of JSON (an object; writers pad it with whitespace), then the tensors' bytes, which the
    header's ``data_offsets`` cover exactly. None when the first bytes are not that layout; a string saying why when
    they are but the file is damaged (header cut short or not JSON, offsets that disagree with the file's size).

    The header length is checked before any pickle opcode: its first byte is 0x80 or 0x28 (``(``) for 1 file in 16.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return None
        (n,) = struct.unpack("<Q", head)
        if not 2 <= n <= SAFETENSORS_MAX_HEADER:
            return None
        text = f.read(min(n, 4096))
        if not text.lstrip(b" \t\r\n").startswith(b"{") and (text.strip() or len(text) == n):
            return None
        text += f.read(n - len(text))
    if len(text) < n:
        return f"its header of {n} bytes is cut short at {len(text)} (truncated file)"
    try:
        header = json.loads(text)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        return f"its header is not valid JSON: {e}"
    if not isinstance(header, dict):
        return f"its header is a JSON {type(header).__name__}, not an object"
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            return f"tensor {name!r} has no valid data_offsets"
        end = max(end, offsets[1])
    if end != size - 8 - n:
        return f"its tensors span {end} bytes but {size - 8 - n} follow the header (truncated or padded file)"
    return header


def detect_format(path: str | Path) -> FileFormat:
    """What a weights file really is, from its bytes, never its name: a safetensors header wins over everything
    (reading one never runs code), then zip containers and pickle opcodes."""
    if safetensors_header(path) is not None:
        return "safetensors"
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:2] == b"PK" or head[:6] == b"7z\xbc\xaf\x27\x1c":
        return "zip"  # torch.save's zip container (holds a pickle) or any other archive
    if head[:1] == b"\x80" or head[:1] in (b"(", b"}", b"]"):
        return "pickle"
    return "unknown"


def read_state_dict(path: str | Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a single weights file. Pickles only with ``allow_pickle=True``, and then ``weights_only``."""
    check_bool("allow_pickle", allow_pickle)
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "safetensors":
        from safetensors.torch import load_file

        check_safetensors(path)
        try:
            return load_file(str(path))
        except Exception as e:  # corrupt data the header did not reveal
            raise ModelLoadError(f"model: {path} is not a readable safetensors file ({e})") from None
    if fmt in ("pickle", "zip"):
        if not allow_pickle:
            raise ModelLoadError(
                f"model: {path} is a pickle ({fmt}) file, which can run code when loaded; refused. "
                "Convert it to .safetensors, or pass allow_pickle=True if you trust its author "
                "(it is then loaded with weights_only=True)."
            )
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            # torch's message spans many lines (and suggests weights_only=False): keep the line that says why
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            why = next((ln for ln in lines if ln.startswith(("Unsupported", "Trying to"))), lines[0] if lines else "")
            raise ModelLoadError(
                f"model: {path} could not be loaded safely with weights_only=True (it holds more than tensors, "
                f"or is not a torch checkpoint: {type(e).__name__}: {why[:200]})"
            ) from None
        if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
            data = data["state_dict"]
        if not isinstance(data, dict):
            raise ModelLoadError(f"model: {path} holds a {type(data).__name__}, not a dict of tensors")
        return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    raise ModelLoadError(f"model: {path} is not a safetensors or checkpoint file (unrecognised header)")


def check_safetensors(path: Path) -> dict[str, Any]:
    """The header of a safetensors file, checked by our reading of the format and by the safetensors library's
    own (every tensor's bytes present, no overlaps), without reading the tensors."""
    from safetensors import safe_open

    header = safetensors_header(path)
    if not isinstance(header, dict):
        raise ModelLoadError(f"model: {path} is not a readable safetensors file ({header or 'no safetensors header'})")
    try:
        with safe_open(str(path), "pt"):
            pass
    except Exception as e:
        raise ModelLoadError(f"model: {path} is not a readable safetensors file ({e})") from None
    return header


def check_weights_file(path: Path, *, allow_pickle: bool = False) -> dict[str, str]:
    """Guard one weights file before a library opens it; returns its tensors' names and dtypes.

    Safetensors: the header is checked (no tensor is read). Pickles: refused unless ``allow_pickle``, and with it
    read weights-only first. Either way every tensor must be floating point, as every layer of a Stable Diffusion
    component is: an int8 or bool tensor where a float is expected would be cast silently (a flat grey image). Only
    integer index buffers (``position_ids`` and counters) may be integers."""
    if detect_format(path) == "safetensors":
        header = check_safetensors(path)
        dtypes = {k: str(v.get("dtype")) for k, v in header.items() if k != "__metadata__"}
    else:
        dtypes = {k: str(v.dtype) for k, v in read_state_dict(path, allow_pickle=allow_pickle).items()}
    for name, dtype in dtypes.items():
        floating = dtype.startswith(("F", "BF", "torch.float", "torch.bfloat", "torch.half"))
        if not floating and not name.endswith(INDEX_BUFFERS):
            raise ModelLoadError(
                f"model: {path} holds tensor {name!r} as {dtype}; weights must be floating point "
                "(F16, BF16, F32, ...), as the layers of the config are; refused"
            )
    return dtypes


def check_weights_folder(folder: Path, *, allow_pickle: bool = False) -> bool | None:
    """Guard a component folder before ``from_pretrained`` opens it; returns its ``use_safetensors`` argument.

    A ``.safetensors`` file whose bytes say otherwise is refused. Without safetensors weights, pickled
    weights (``.bin``/``.pt``/...) are refused unless ``allow_pickle``, and with it each is first read by
    ``read_state_dict`` (weights only), so a code-running payload never reaches diffusers' or transformers' loader.
    """
    check_bool("allow_pickle", allow_pickle)
    weights = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    safe = [p for p in weights if p.suffix == ".safetensors"]
    for p in safe:
        fmt = detect_format(p)
        if fmt != "safetensors":
            raise ModelLoadError(f"model: {p} is named .safetensors but its first bytes say {fmt}; refused")
        check_weights_file(p)
    if safe:
        return True  # diffusers/transformers then never fall back to a pickle beside it
    for p in weights:
        check_weights_file(p, allow_pickle=allow_pickle)  # the refusal, or a weights-only pre-read
    return None if allow_pickle else True


@contextlib.contextmanager
def named_for_diffusers(path: Path) -> Iterator[Path]:
    """``path``, or a link to it named by its real format: diffusers' single-file loaders choose between
    safetensors and ``torch.load`` by the file's extension, and must read what sdkit checked."""
    is_safetensors = detect_format(path) == "safetensors"
    if (path.name.split(".")[-1] == "safetensors") == is_safetensors:  # diffusers' own test of the name
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="sdkit-") as tmp:
        link = Path(tmp) / ("model.safetensors" if is_safetensors else "model.ckpt")
        try:
            os.symlink(path.resolve(), link)
        except OSError:
            try:
                os.link(path, link)
            except OSError:
                raise ModelLoadError(
                    f"model: {path} is a {'safetensors' if is_safetensors else 'pickle'} file under another "
                    "extension; rename it to match"
                ) from None
        yield link


# ------------------------------------------------------------------------------------------- configs
def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON config file that must hold an object; anything else is one line naming the file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"model: {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"model: {path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"model: {path} could not be read ({type(e).__name__}: {e})") from None
    if not isinstance(value, dict):
        raise ModelLoadError(f"model: {path} must hold a JSON object, got a {type(value).__name__}")
    return value


def check_scheduler_config(config: dict[str, Any], where: str) -> None:
    """The training noise schedule a model was trained with, checked when it is loaded (not at the first
    ``generate``): ``where`` names the file in the message."""
    from sdkit.denoisers import PredictionType, alphas_cumprod_from_betas

    with _blaming(where):
        steps = check_int("num_train_timesteps", config.get("num_train_timesteps", 1000), minimum=2, maximum=100_000)
        start, end = config.get("beta_start", 0.00085), config.get("beta_end", 0.012)
        for name, beta in (("beta_start", start), ("beta_end", end)):
            if not 0 < check_number(name, beta) < 1:
                raise ValueError(f"{name} must be a number in (0, 1), got {beta!r}")
        alphas_cumprod_from_betas(steps, start, end, config.get("beta_schedule", "scaled_linear"))  # checks the name
        prediction, allowed = config.get("prediction_type", "epsilon"), get_args(PredictionType)
        if prediction not in allowed:
            raise ValueError(f"prediction_type must be one of {', '.join(allowed)}, got {prediction!r}")


def check_sdkit_config(config: dict[str, Any], where: Path) -> None:
    """A model folder's ``sdkit.json`` (family and generation defaults), checked when it is loaded: a bad default
    would otherwise fail later, as an error about a width or step count the caller never passed."""
    from sdkit.families import FAMILIES

    with _blaming(str(where)):
        family = config.get("family")
        if family is not None and family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
        if "default_size" in config:
            check_size("default_size", config["default_size"], 8)
        if "default_steps" in config:
            check_int("default_steps", config["default_steps"], maximum=MAX_STEPS, bound="MAX_STEPS")
        if "default_cfg" in config:
            check_number("default_cfg", config["default_cfg"])
        if config.get("tokenizer", "clip-vocabulary") != "clip-vocabulary":
            raise ValueError(f"tokenizer must be 'clip-vocabulary' or absent, got {config['tokenizer']!r}")


@contextlib.contextmanager
def _blaming(where: str) -> Iterator[None]:
    """Turn a field check's ValueError/TypeError into a ModelLoadError naming the file it came from."""
    try:
        yield
    except (ValueError, TypeError) as e:
        raise ModelLoadError(f"model: {where}: {e}") from None


# ------------------------------------------------------------------------------------------- checks
def non_finite_weights(modules: dict[str, Any]) -> list[str]:
    """``component.parameter`` of the first non-finite (NaN/inf) parameter or buffer of each module."""
    found = []
    for name, module in modules.items():
        if not isinstance(module, torch.nn.Module):
            continue
        for pname, t in [*module.named_parameters(), *module.named_buffers()]:
            if t.is_floating_point() and t.device.type != "meta" and not bool(torch.isfinite(t).all()):
                found.append(f"{name}.{pname}")
                break
    return found
