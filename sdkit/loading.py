"""All of sdkit's I/O: loading models (embedded, diffusers folders, hub ids, single files), reading and
writing images with their parameters. Nothing else in sdkit opens files or the network.

Formats are recognised by their first bytes, never by the extension: safetensors is the default;
pickles (``.ckpt``/``.pt``/``.bin``, plain or inside a zip) can run code when unpickled, so they are refused
unless the caller opts in, and then loaded with ``weights_only=True`` passed explicitly.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from sdkit.kit import Kit
    from sdkit.vae import VAE

FileFormat = Literal["safetensors", "pickle", "zip", "unknown"]
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
            raise ModelLoadError(f"model: {path} could not be loaded safely with weights_only=True ({e})") from None
        if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
            data = data["state_dict"]
        return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    raise ModelLoadError(f"model: {path} is not a safetensors or checkpoint file (unrecognised header)")


# ------------------------------------------------------------------------------------------- models
def _component(folder: Path, name: str, **kwargs: Any) -> Any:
    library, cls_name = COMPONENT_CLASSES[name]
    module = __import__(library, fromlist=[cls_name])
    cls = getattr(module, cls_name)
    return cls.from_pretrained(str(folder / name), **kwargs)


def load_components(folder: str | Path) -> dict[str, Any]:
    """The modules of a diffusers folder, each through its own ``from_pretrained``."""
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ModelLoadError(f"model: folder {folder} has no model_index.json (not a diffusers model folder)")
    index = json.loads(index_path.read_text())
    parts: dict[str, Any] = {}
    for name in COMPONENT_CLASSES:
        if isinstance(index.get(name), list) and index[name][0] and (folder / name).is_dir():
            parts[name] = _component(folder, name)
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

            parts[name] = ControlNetModel.from_pretrained(str(folder / name))
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

    kind, path = resolve_source(source)
    if kind == "hub":
        path = hub_snapshot(source)
    if kind == "file":
        from sdkit.single_file import load_single_file

        parts = load_single_file(path, allow_pickle=allow_pickle, config=config)
    else:
        parts = load_components(path)
    name = source if kind != "folder" else path.name
    return Kit.from_components(parts, family=detect_family(parts), name=name, device=device, dtype=dtype)


def load_vae(source: str, family: str = "sd1", device: Any = None, dtype: torch.dtype | None = None) -> VAE:
    """A VAE alone: a diffusers ``vae`` folder (or a model folder holding one), a hub id or a safetensors file."""
    from diffusers import AutoencoderKL

    from sdkit.vae import VAE

    kind, path = resolve_source(source)
    if kind == "hub":
        path = hub_snapshot(source)
    if kind == "file":
        from sdkit.single_file import load_single_file_vae

        model = load_single_file_vae(path)
    else:
        folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
        model = AutoencoderKL.from_pretrained(str(folder))
    model = model.to(device=device, dtype=dtype or torch.float32).eval()
    return VAE.from_diffusers(model, family)


# ------------------------------------------------------------------------------------------- images
def save_png(image: PILImage, path: str | Path, parameters: str, *, overwrite: bool = False) -> Path:
    """Save a PNG with its A1111-style ``parameters`` text chunk, atomically (temp file + rename)."""
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
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
        try:
            return ControlNetModel.from_single_file(str(path), config=config, local_files_only=config is not None)
        except Exception as e:
            raise ModelLoadError(f"controlnet: could not convert {path} ({type(e).__name__}: {e})") from None
    folder = path / "controlnet" if (path / "controlnet" / "config.json").is_file() else path
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"controlnet: {folder} has no config.json (not a diffusers ControlNet folder)")
    return ControlNetModel.from_pretrained(str(folder))


def load_midas(source: str, model_type: str = "dpt_hybrid") -> Any:
    """controlnet_aux's ``MidasDetector`` from a folder holding the published MiDaS checkpoint (e.g.
    ``dpt_hybrid-midas-501f0c75.pt``, a trusted pickle as published by lllyasviel/Annotators) or a hub id."""
    try:
        from controlnet_aux import MidasDetector

        return MidasDetector.from_pretrained(source, model_type=model_type)
    except Exception as e:
        raise ModelLoadError(
            f"midas: could not load {source!r} ({type(e).__name__}); pass a local folder holding the MiDaS "
            "checkpoint, or a depth map you made elsewhere (sdkit.conditioners.depth.depth_image)"
        ) from None
