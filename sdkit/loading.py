"""All of sdkit's I/O: loading models (embedded, diffusers folders, hub ids, single files), reading and
writing images with their parameters. Nothing else in sdkit opens files or the network.

Formats are recognised by their bytes, never by the extension: a safetensors header (length, JSON object, offsets
that fit the file) comes first, as reading one never runs code; then pickles (``.ckpt``/``.pt``/``.bin``, plain or
inside a zip), which can run code when unpickled, so they are refused unless the caller opts in, and then loaded
with ``weights_only=True`` passed explicitly (torch then ignores ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``). Diffusers
folders get the same rule (``check_weights_folder``): a component whose weights are pickles is refused without the
opt-in, and with it each pickle is first read weights-only by sdkit, so a payload is refused before diffusers or
transformers open the file. Annotators (MiDaS) load through ``read_state_dict`` too.

Everything a model is made of is checked when it is loaded, each refusal one ``ModelLoadError`` line naming the
file and the field: JSON configs (``model_index.json``, ``scheduler_config.json``, ``sdkit.json``), weights that
are not floating point or lack tensors the config needs. Loaded weights that are not finite are reported (a
warning naming the component).

Images are saved in the format their suffix names (PNG, JPEG, WebP) with their infotext where A1111 puts it,
exclusively unless ``overwrite=True``, and read back from sdkit's and A1111's files.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch

from sdkit.limits import MAX_STEPS, check_bool, check_int, check_number, check_size
from sdkit.names import IMAGE_FORMATS  # in a torch-free module, so the CLI checks -o before importing torch
from sdkit.quiet import quiet_libraries, to_device

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from sdkit.kit import Kit
    from sdkit.vae import VAE

FileFormat = Literal["safetensors", "pickle", "zip", "unknown"]
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".pkl")
SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library's own bound on the header length
INDEX_BUFFERS = ("position_ids", "num_batches_tracked", "num_updates")  # the integer tensors checkpoints may hold
EMBEDDED = {"shapes": Path(__file__).parent / "models" / "shapes" / "weights"}
COMPONENT_CLASSES = {
    "unet": ("diffusers", "UNet2DConditionModel"),
    "vae": ("diffusers", "AutoencoderKL"),
    "text_encoder": ("transformers", "CLIPTextModel"),
    "text_encoder_2": ("transformers", "CLIPTextModelWithProjection"),
    "tokenizer": ("transformers", "CLIPTokenizer"),
    "tokenizer_2": ("transformers", "CLIPTokenizer"),
}


class ModelLoadError(ValueError):
    """A model source that cannot be loaded, with one line saying why."""


def error_line(e: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message (libraries' span many)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:300]}" if lines else type(e).__name__


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


def _report_non_finite(modules: dict[str, Any], source: str) -> list[str]:
    found = non_finite_weights(modules)
    if found:
        warnings.warn(
            f"model: {source} has non-finite weights (NaN/inf) in {', '.join(found)}; its outputs will not be finite",
            RuntimeWarning,
            stacklevel=3,
        )
    return found


# ------------------------------------------------------------------------------------------- models
def from_pretrained(cls: Any, folder: Path, **kwargs: Any) -> Any:
    """``cls.from_pretrained(folder)``, refusing weights that lack tensors the config needs (diffusers would leave
    them on the meta device, transformers would fill them randomly) and turning any error into one line."""
    try:
        model, info = cls.from_pretrained(str(folder), output_loading_info=True, **kwargs)
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"model: {folder} could not be loaded ({error_line(e)})") from None
    missing, unexpected = sorted(info.get("missing_keys") or []), sorted(info.get("unexpected_keys") or [])
    if missing:
        raise ModelLoadError(
            f"model: the weights in {folder} lack {len(missing)} tensors its config.json needs, e.g. {missing[:2]} "
            f"({len(unexpected)} unexpected, e.g. {unexpected[:2]}): not weights of this architecture"
        )
    return model


def _component(folder: Path, name: str, *, allow_pickle: bool = False) -> Any:
    library, cls_name = COMPONENT_CLASSES[name]
    module = __import__(library, fromlist=[cls_name])
    cls = getattr(module, cls_name)
    if name.startswith("tokenizer"):
        try:
            return cls.from_pretrained(str(folder / name))
        except Exception as e:
            raise ModelLoadError(f"model: {folder / name} could not be loaded ({error_line(e)})") from None
    safe = check_weights_folder(folder / name, allow_pickle=allow_pickle)
    return from_pretrained(cls, folder / name, use_safetensors=safe)


def load_components(folder: str | Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """The modules of a diffusers folder, each through its own ``from_pretrained``."""
    check_bool("allow_pickle", allow_pickle)
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ModelLoadError(f"model: folder {folder} has no model_index.json (not a diffusers model folder)")
    index = read_json_object(index_path)
    parts: dict[str, Any] = {}
    for name in COMPONENT_CLASSES:
        entry = index.get(name)
        if entry is not None and not (isinstance(entry, list) and len(entry) == 2):
            raise ModelLoadError(f"model: {index_path}: {name} must be [library, class] or [null, null], got {entry!r}")
        if entry and entry[0] and (folder / name).is_dir():
            parts[name] = _component(folder, name, allow_pickle=allow_pickle)
    if "unet" not in parts or "vae" not in parts:
        raise ModelLoadError(f"model: folder {folder} lacks a unet/ or vae/ component")
    scheduler_path = folder / "scheduler" / "scheduler_config.json"
    parts["scheduler_config"] = read_json_object(scheduler_path)
    check_scheduler_config(parts["scheduler_config"], str(scheduler_path))
    parts["index"] = index
    extra = folder / "sdkit.json"
    parts["sdkit"] = read_json_object(extra) if extra.is_file() else {}
    check_sdkit_config(parts["sdkit"], extra)
    if "tokenizer" not in parts and parts["sdkit"].get("tokenizer") == "clip-vocabulary":
        # The embedded model ships no 3.6 MB tokenizer.json: its tokenizer is the exact CLIP one, which sdkit
        # builds from the vocabulary that open-clip-torch installs.
        from sdkit.text.vocabulary import hf_clip_tokenizer

        parts["tokenizer"] = hf_clip_tokenizer()
    for name in ("controlnet_depth", "controlnet_pose"):
        if (folder / name).is_dir():
            from diffusers import ControlNetModel

            safe = check_weights_folder(folder / name, allow_pickle=allow_pickle)
            parts[name] = from_pretrained(ControlNetModel, folder / name, use_safetensors=safe)
    return parts


def detect_family(parts: dict[str, Any]) -> str:
    """sd1 / sd2 / sdxl / shapes, from the components' configs (never from a file name)."""
    declared = parts.get("sdkit", {}).get("family")
    if declared:
        return str(declared)
    unet = parts["unet"].config
    if "text_encoder_2" in parts or unet.get("addition_embed_type") == "text_time":
        return "sdxl"
    text = parts.get("text_encoder")
    act = getattr(getattr(text, "config", None), "hidden_act", "quick_gelu")
    return "sd2" if act == "gelu" or unet.get("cross_attention_dim") == 1024 else "sd1"


def hub_snapshot(repo_id: str) -> Path:
    """Download a hub model (diffusers layout) and return its local folder; offline -> one clear error."""
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.txt", "*.safetensors", "tokenizer*/*", "*.model"]
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:
        reason = type(e).__name__
        raise ModelLoadError(
            f"model: could not fetch {repo_id!r} from the Hugging Face hub ({reason}: offline, not found, or "
            "gated). Download it where there is network and pass its local folder instead."
        ) from None


def resolve_source(source: str) -> tuple[str, Path]:
    """Classify a model source: ("embedded"|"folder"|"file"|"hub", path)."""
    if not isinstance(source, str):
        raise TypeError(f"model must be a str (name, folder, file or hub id), got {type(source).__name__}")
    if not source.strip():
        raise ModelLoadError("model: empty model source; use 'shapes', a diffusers folder, a file or a hub id")
    if source in EMBEDDED:
        folder = EMBEDDED[source]
        if not (folder / "model_index.json").is_file():
            raise ModelLoadError(f"model: the embedded {source!r} weights are not installed at {folder}")
        return "embedded", folder
    path = Path(source).expanduser()
    if path.is_dir():
        return "folder", path
    if path.is_file():
        return "file", path
    looks_local = (
        source.startswith((".", "/", "~"))
        or source.count("/") != 1
        or path.suffix in (".safetensors", ".ckpt", ".pt", ".bin", ".pth")
    )
    if looks_local:
        raise ModelLoadError(f"model: {source!r} does not exist (no such folder or file)")
    return "hub", Path(source)


def load(
    source: str,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    *,
    allow_pickle: bool = False,
    config: str | None = None,
) -> Kit:
    """Load a model into a ``Kit``. ``config``: for single files, a diffusers folder or hub id whose configs
    describe the checkpoint's architecture (defaults to the family's reference repository)."""
    from sdkit.kit import Kit

    device, dtype = check_device_dtype(device, dtype)
    check_bool("allow_pickle", allow_pickle)
    if config is not None and not isinstance(config, str):
        raise TypeError(f"config must be a str (a diffusers folder or hub id) or None, got {type(config).__name__}")
    kind, path = resolve_source(source)
    if kind == "hub":
        path = hub_snapshot(source)
    with quiet_libraries():  # transformers' "Loading weights" bar, diffusers' float32 note (sdkit.quiet)
        if kind == "file":
            from sdkit.single_file import load_single_file

            parts = load_single_file(path, allow_pickle=allow_pickle, config=config)
        else:
            parts = load_components(path, allow_pickle=allow_pickle)
        name = source if kind != "folder" else path.name
        bad = _report_non_finite(parts, repr(source))
        kit = Kit.from_components(parts, family=detect_family(parts), name=name, device=device, dtype=dtype)
    if bad:
        kit.info["non_finite_weights"] = bad
    return kit


def check_device_dtype(device: Any, dtype: Any) -> tuple[torch.device | None, torch.dtype | None]:
    """Validate ``device``/``dtype`` before any weights are read (one line naming the parameter)."""
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(f"device must be a torch.device or a name like 'cpu' or 'cuda', got {device!r}") from None
        if device.type == "meta":
            raise ValueError(f"device must hold real weights (cpu, cuda, mps, ...), got {str(device)!r}")
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype (torch.float32, torch.float16, ...), got {dtype!r}")
    return device, dtype


def load_vae(source: str, family: str = "sd1", device: Any = None, dtype: torch.dtype | None = None) -> VAE:
    """A VAE alone: a diffusers ``vae`` folder (or a model folder holding one), a hub id or a safetensors file."""
    from diffusers import AutoencoderKL

    from sdkit.vae import VAE

    device, dtype = check_device_dtype(device, dtype)
    kind, path = resolve_source(source)
    if kind == "hub":
        path = hub_snapshot(source)
    with quiet_libraries():
        if kind == "file":
            from sdkit.single_file import load_single_file_vae

            model = load_single_file_vae(path)
        else:
            folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
            model = from_pretrained(AutoencoderKL, folder, use_safetensors=check_weights_folder(folder))
    _report_non_finite({"vae": model}, repr(source))
    model = to_device(model, device, dtype or torch.float32).eval()
    return VAE.from_diffusers(model, family)


# ------------------------------------------------------------------------------------------- images
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286  # EXIF tags: the Exif sub-IFD pointer, and UserComment within it
UNICODE_PREFIX = b"UNICODE\0"  # EXIF's character-code prefix of a UTF-16 UserComment


def save_image(image: PILImage, path: str | Path, parameters: str, *, overwrite: bool = False) -> Path:
    """Save an image with its infotext as A1111 does: ``.png`` in a ``parameters`` text chunk, ``.jpg``/``.jpeg``/
    ``.webp`` in the EXIF UserComment. The file appears whole or not at all, with the permissions of any new file
    (the umask); ``overwrite=False`` never replaces a file, even one another process creates meanwhile."""
    from PIL import Image

    path = Path(path)
    check_bool("overwrite", overwrite)
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL image, got {type(image).__name__}")
    fmt = IMAGE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"output: {path} must end in {', '.join(IMAGE_FORMATS)} (the suffix sets the format)")
    if not isinstance(parameters, str) or not parameters.strip():
        raise ValueError(
            f"parameters must be the image's non-empty infotext (every saved image carries it), got {parameters!r}"
        )
    if path.exists() and not overwrite:  # the early answer; the exclusive link below is the guarantee
        raise FileExistsError(f"output: {path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output: cannot write {path}: folder {path.parent} does not exist")
    write_file(path, encode_image(image, fmt, parameters), overwrite=overwrite)
    return path


save_png = save_image  # the name Generation.save and older code call; the suffix chooses the format


def encode_image(image: PILImage, fmt: str, parameters: str) -> bytes:
    """The bytes of ``image`` in ``fmt`` (PNG, JPEG, WEBP), carrying ``parameters``."""
    import io

    from PIL.PngImagePlugin import PngInfo

    buffer = io.BytesIO()
    if fmt == "PNG":
        info = PngInfo()
        info.add_text("parameters", parameters)  # tEXt, or iTXt (UTF-8) when the text is not Latin-1
        image.save(buffer, format="PNG", pnginfo=info)
        return buffer.getvalue()
    if image.mode not in (("L", "RGB") if fmt == "JPEG" else ("RGB", "RGBA")):
        image = image.convert("RGBA" if fmt == "WEBP" and "A" in image.getbands() else "RGB")
    exif = exif_user_comment(parameters)
    if fmt == "JPEG" and len(exif) > 65533:  # one APP1 segment: 64 KiB, so about 32,000 characters of UTF-16
        raise ValueError(
            f"parameters: {len(parameters)} characters of infotext do not fit a JPEG's EXIF segment (64 KiB); "
            "save as .png or .webp"
        )
    image.save(buffer, format=fmt, quality=95, exif=exif)
    return buffer.getvalue()


def exif_user_comment(text: str) -> bytes:
    """EXIF holding ``text`` as the UserComment, as A1111 writes it (``piexif.dump`` of
    ``UserComment.dump(text, encoding="unicode")``): a big-endian TIFF whose IFD0 points to an Exif IFD with one
    UNDEFINED-typed (7) entry, 0x9286, whose value is ``UNICODE\\0`` and the text in UTF-16BE."""
    comment = UNICODE_PREFIX + text.encode("utf-16-be")
    ifd0 = struct.pack(">HHHII", 1, EXIF_IFD, 4, 1, 26) + b"\0\0\0\0"  # 1 entry (LONG offset of the Exif IFD)
    exif_ifd = struct.pack(">HHHII", 1, USER_COMMENT, 7, len(comment), 44) + b"\0\0\0\0"
    return b"Exif\0\0" + b"MM\0\x2a" + struct.pack(">I", 8) + ifd0 + exif_ifd + comment


def read_user_comment(exif: bytes) -> str | None:
    """The UserComment of an EXIF block as A1111 reads it, or None. The EXIF character codes: ``UNICODE\\0`` then
    UTF-16 (A1111/piexif write big-endian; some tools little-endian, told apart by where the zero bytes of
    ASCII text fall), ``ASCII\\0\\0\\0``, ``JIS\\0\\0\\0\\0\\0``; any other prefix is read as UTF-8, as A1111 does."""
    from PIL import Image

    data = Image.Exif()
    data.load(exif)
    raw = data.get_ifd(EXIF_IFD).get(USER_COMMENT)
    if isinstance(raw, tuple):  # written as BYTE rather than UNDEFINED
        raw = bytes(raw)
    if not isinstance(raw, bytes) or not raw:
        return raw if isinstance(raw, str) and raw else None
    prefix, body = raw[:8], raw[8:]
    if prefix == UNICODE_PREFIX:
        big_endian = body[0::2].count(0) >= body[1::2].count(0)
        text = body.decode("utf-16-be" if big_endian else "utf-16-le", errors="replace")
    elif prefix == b"ASCII\0\0\0":
        text = body.decode("ascii", errors="replace")
    elif prefix == b"JIS\0\0\0\0\0":
        text = body.decode("shift_jis", errors="replace")
    else:
        text = raw.decode("utf-8", errors="ignore")
    return text.rstrip("\0") or None


def write_file(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` to a temporary file beside ``path``, then move it into place: ``os.replace`` to overwrite,
    ``os.link`` (which fails if ``path`` exists, atomically) otherwise. The temporary file is created like any new
    file (mode 0o666 less the umask). A failure names ``path`` and leaves nothing behind."""
    import errno
    import secrets

    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError as e:  # a file system without hard links: exclusive creation of the target itself
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
                    raise
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
    except FileExistsError:
        raise FileExistsError(f"output: {path} exists (created meanwhile); pass overwrite=True to replace it") from None
    except OSError as e:
        raise OSError(e.errno, f"output: could not write {path} ({e.strerror or e})") from None
    finally:
        tmp.unlink(missing_ok=True)


def _opened(path: str | Path) -> PILImage:
    """The decoded image (file closed; ``.info`` holds its text chunks and EXIF). A missing, damaged or unknown
    file is one ValueError naming it, never a raw PIL error: PNG chunk checksums are verified first."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image: {path} does not exist (or is not a file)")
    try:
        with Image.open(path) as im:
            im.verify()  # PNG: every chunk's CRC up to IEND, without decoding
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, EOFError, struct/zlib errors, ...
        raise ValueError(f"image: {path} is not a readable image ({error_line(e)})") from None


def read_image_parameters(path: str | Path) -> str:
    """The infotext of an image written by sdkit or A1111: a PNG's ``parameters`` text chunk, or the EXIF
    UserComment of a JPEG or WebP (or a PNG)."""
    im = _opened(path)
    text = im.info.get("parameters")
    if text is None and im.info.get("exif"):
        try:
            text = read_user_comment(im.info["exif"])
        except Exception as e:
            raise ValueError(f"image: {path} has unreadable EXIF ({error_line(e)})") from None
    if not text:
        raise ValueError(
            f"image: {path} has no 'parameters' text chunk or EXIF UserComment (not written by sdkit/A1111?)"
        )
    return str(text)


read_png_parameters = read_image_parameters  # the name metadata.read and older code call


def open_image(path: str | Path) -> PILImage:
    """A PIL image read whole from ``path``; a damaged or unknown file is one ValueError naming it."""
    return _opened(path)


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Save tensors (e.g. a sampling trace, to resume later) as safetensors."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return Path(path)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


# ------------------------------------------------------------------------------------- image conditioners
def load_controlnet_model(source: str, *, allow_pickle: bool = False, config: str | None = None) -> Any:
    """A diffusers ``ControlNetModel``: a folder (itself or its ``controlnet/``), a hub id, or one file
    (safetensors; pickles only with ``allow_pickle``). A single file is converted with its config from
    ``config`` (a diffusers ControlNet folder or hub id; without it diffusers infers one, which may need the hub)."""
    from diffusers import ControlNetModel

    check_bool("allow_pickle", allow_pickle)
    kind, path = resolve_source(source)
    if kind == "hub":
        path = hub_snapshot(source)
    if kind == "file":
        check_weights_file(path, allow_pickle=allow_pickle)  # the refusal, or the unreadable/non-float error
        try:
            with named_for_diffusers(path) as named, quiet_libraries():
                model = ControlNetModel.from_single_file(str(named), config=config, local_files_only=config is not None)
        except Exception as e:
            raise ModelLoadError(f"controlnet: could not convert {path} ({error_line(e)})") from None
    else:
        folder = path / "controlnet" if (path / "controlnet" / "config.json").is_file() else path
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"controlnet: {folder} has no config.json (not a diffusers ControlNet folder)")
        safe = check_weights_folder(folder, allow_pickle=allow_pickle)
        with quiet_libraries():
            model = from_pretrained(ControlNetModel, folder, use_safetensors=safe)
    _report_non_finite({"controlnet": model}, repr(source))
    return model


MIDAS_CHECKPOINTS = {  # model_type -> (published file name, timm backbone of controlnet_aux's DPTDepthModel)
    "dpt_hybrid": ("dpt_hybrid-midas-501f0c75.pt", "vitb_rn50_384"),
    "dpt_large": ("dpt_large-midas-2f21e586.pt", "vitl16_384"),
}


def load_midas(source: str, model_type: str = "dpt_hybrid", *, allow_pickle: bool = False) -> Any:
    """controlnet_aux's ``MidasDetector`` from the published MiDaS checkpoint: a folder holding it (e.g.
    ``dpt_hybrid-midas-501f0c75.pt``), the file itself, or a hub id (``lllyasviel/Annotators``).

    The published checkpoints are pickles: they load only with ``allow_pickle=True``, and then through
    ``read_state_dict`` (weights only), never controlnet_aux's own bare ``torch.load``. The model is built on
    the meta device and filled from the checkpoint (no download of timm's initial weights)."""
    check_bool("allow_pickle", allow_pickle)
    if model_type not in MIDAS_CHECKPOINTS:
        raise ValueError(f"model_type must be one of {', '.join(MIDAS_CHECKPOINTS)}, got {model_type!r}")
    filename, backbone = MIDAS_CHECKPOINTS[model_type]
    kind, path = resolve_source(source)
    if kind == "hub":
        try:
            from huggingface_hub import hf_hub_download

            prefix = "annotator/ckpts/" if source == "lllyasviel/ControlNet" else ""
            path = Path(hf_hub_download(source, prefix + filename))
        except Exception as e:
            raise ModelLoadError(
                f"midas: could not fetch {filename} from {source!r} ({type(e).__name__}); pass a local folder holding "
                "the MiDaS checkpoint, or a depth map you made elsewhere (sdkit.conditioners.depth.depth_image)"
            ) from None
    elif kind != "file":
        path = path / filename
        if not path.is_file():
            raise ModelLoadError(f"midas: {path} does not exist (the folder must hold the {model_type} checkpoint)")
    state = read_state_dict(path, allow_pickle=allow_pickle)
    from controlnet_aux.midas import MidasDetector
    from controlnet_aux.midas.api import MiDaSInference
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

    with torch.device("meta"):
        model = DPTDepthModel(path=None, backbone=backbone, non_negative=True)
    model = model.to_empty(device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelLoadError(
            f"midas: {path} is not a MiDaS {model_type} checkpoint ({len(missing)} missing keys, e.g. "
            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})"
        )
    _report_non_finite({"midas": model}, repr(source))
    inference = MiDaSInference.__new__(MiDaSInference)  # its __init__ would torch.load the file itself
    torch.nn.Module.__init__(inference)
    inference.model = model.eval()
    return MidasDetector(inference)
