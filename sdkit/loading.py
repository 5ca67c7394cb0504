"""All of sdkit's I/O: loading models (embedded, diffusers folders, hub ids, single files), reading and
writing images with their parameters. Nothing else in sdkit opens files or the network.

Formats are recognised by their first bytes, never by the extension: safetensors is the default;
pickles (``.ckpt``/``.pt``/``.bin``, plain or inside a zip) can run code when unpickled, so they are refused
unless the caller opts in, and then loaded with ``weights_only=True`` passed explicitly (torch then ignores
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``). Diffusers folders get the same rule (``check_weights_folder``): a component
whose weights are pickles is refused without the opt-in, and with it each pickle is first read weights-only by
sdkit, so a payload is refused before diffusers or transformers open the file. Annotators (MiDaS) load through
``read_state_dict`` too. Loaded weights that are not finite are reported (a warning naming the component).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from sdkit.kit import Kit
    from sdkit.vae import VAE

FileFormat = Literal["safetensors", "pickle", "zip", "unknown"]
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".pkl")
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


# ------------------------------------------------------------------------------------------- formats
def detect_format(path: str | Path) -> FileFormat:
    """What a weights file really is, from its first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:2] == b"PK":
        return "zip"  # torch.save's zip container (holds a pickle) or any other archive
    if head[:1] == b"\x80" or head[:1] in (b"(", b"}", b"]"):
        return "pickle"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        return "zip"
    return "unknown"


def read_state_dict(path: str | Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a single weights file. Pickles only with ``allow_pickle=True``, and then ``weights_only``."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # truncated or corrupt header/data
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
        return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    raise ModelLoadError(f"model: {path} is not a safetensors or checkpoint file (unrecognised header)")


def check_safetensors(path: Path) -> None:
    """Read a safetensors header only, checking that the data it describes is all there (not truncated)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt"):
            pass
    except Exception as e:
        raise ModelLoadError(f"model: {path} is not a readable safetensors file ({e})") from None


def check_weights_folder(folder: Path, *, allow_pickle: bool = False) -> bool | None:
    """Guard a component folder before ``from_pretrained`` opens it; returns its ``use_safetensors`` argument.

    A ``.safetensors`` file whose first bytes say otherwise is refused. Without safetensors weights, pickled
    weights (``.bin``/``.pt``/...) are refused unless ``allow_pickle``, and with it each is first read by
    ``read_state_dict`` (weights only), so a code-running payload never reaches diffusers' or transformers' loader.
    """
    weights = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    for p in weights:
        fmt = detect_format(p)
        if p.suffix == ".safetensors" and fmt != "safetensors":
            raise ModelLoadError(f"model: {p} is named .safetensors but its first bytes say {fmt}; refused")
        if fmt == "safetensors":
            check_safetensors(p)
    if any(p.suffix == ".safetensors" for p in weights):
        return True  # diffusers/transformers then never fall back to a pickle beside it
    for p in weights:
        read_state_dict(p, allow_pickle=allow_pickle)  # the refusal, or a weights-only pre-read
    return None if allow_pickle else True


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
def _component(folder: Path, name: str, *, allow_pickle: bool = False, **kwargs: Any) -> Any:
    library, cls_name = COMPONENT_CLASSES[name]
    module = __import__(library, fromlist=[cls_name])
    cls = getattr(module, cls_name)
    if not name.startswith("tokenizer"):
        kwargs["use_safetensors"] = check_weights_folder(folder / name, allow_pickle=allow_pickle)
    return cls.from_pretrained(str(folder / name), **kwargs)


def load_components(folder: str | Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """The modules of a diffusers folder, each through its own ``from_pretrained``."""
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ModelLoadError(f"model: folder {folder} has no model_index.json (not a diffusers model folder)")
    index = json.loads(index_path.read_text())
    parts: dict[str, Any] = {}
    for name in COMPONENT_CLASSES:
        if isinstance(index.get(name), list) and index[name][0] and (folder / name).is_dir():
            parts[name] = _component(folder, name, allow_pickle=allow_pickle)
    if "unet" not in parts or "vae" not in parts:
        raise ModelLoadError(f"model: folder {folder} lacks a unet/ or vae/ component")
    parts["scheduler_config"] = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    parts["index"] = index
    extra = folder / "sdkit.json"
    parts["sdkit"] = json.loads(extra.read_text()) if extra.is_file() else {}
    if "tokenizer" not in parts and parts["sdkit"].get("tokenizer") == "clip-vocabulary":
        # The embedded model ships no 3.6 MB tokenizer.json: its tokenizer is the exact CLIP one, which sdkit
        # builds from the vocabulary that open-clip-torch installs.
        from sdkit.text.vocabulary import hf_clip_tokenizer

        parts["tokenizer"] = hf_clip_tokenizer()
    for name in ("controlnet_depth", "controlnet_pose"):
        if (folder / name).is_dir():
            from diffusers import ControlNetModel

            safe = check_weights_folder(folder / name, allow_pickle=allow_pickle)
            parts[name] = ControlNetModel.from_pretrained(str(folder / name), use_safetensors=safe)
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
    kind, path = resolve_source(source)
    if kind == "hub":
        path = hub_snapshot(source)
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
    if kind == "file":
        from sdkit.single_file import load_single_file_vae

        model = load_single_file_vae(path)
    else:
        folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
        model = AutoencoderKL.from_pretrained(str(folder), use_safetensors=check_weights_folder(folder))
    _report_non_finite({"vae": model}, repr(source))
    model = model.to(device=device, dtype=dtype or torch.float32).eval()
    return VAE.from_diffusers(model, family)


# ------------------------------------------------------------------------------------------- images
def save_png(image: PILImage, path: str | Path, parameters: str, *, overwrite: bool = False) -> Path:
    """Save a PNG with its A1111-style ``parameters`` text chunk, atomically (temp file + rename)."""
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    if not isinstance(parameters, str) or not parameters.strip():
        raise ValueError(
            f"parameters must be the image's non-empty infotext (every saved image carries it), got {parameters!r}"
        )
    if path.exists() and not overwrite:
        raise FileExistsError(f"output: {path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output: folder {path.parent} does not exist")
    info = PngInfo()
    info.add_text("parameters", parameters)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG", pnginfo=info)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_png_parameters(path: str | Path) -> str:
    """The ``parameters`` text chunk of a PNG written by sdkit or A1111."""
    from PIL import Image

    with Image.open(path) as im:
        text = im.info.get("parameters")
    if text is None:
        raise ValueError(f"{path} has no 'parameters' text chunk (not written by sdkit/A1111?)")
    return str(text)


def open_image(path: str | Path) -> PILImage:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return im.copy()


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

    kind, path = resolve_source(source)
    if kind == "hub":
        path = hub_snapshot(source)
    if kind == "file":
        fmt = detect_format(path)
        if fmt != "safetensors":
            read_state_dict(path, allow_pickle=allow_pickle)  # raises the refusal/unreadable error
        else:
            check_safetensors(path)
        try:
            model = ControlNetModel.from_single_file(str(path), config=config, local_files_only=config is not None)
        except Exception as e:
            raise ModelLoadError(f"controlnet: could not convert {path} ({type(e).__name__}: {e})") from None
    else:
        folder = path / "controlnet" if (path / "controlnet" / "config.json").is_file() else path
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"controlnet: {folder} has no config.json (not a diffusers ControlNet folder)")
        safe = check_weights_folder(folder, allow_pickle=allow_pickle)
        model = ControlNetModel.from_pretrained(str(folder), use_safetensors=safe)
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
