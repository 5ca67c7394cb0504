"""Loading models: the embedded model, diffusers folders, hub ids and single-file checkpoints into a ``Kit``; a VAE,
ControlNets and the MiDaS depth annotator on their own; tensors (traces) to and from safetensors.

Every file is checked before a library opens it (``sdkit.model_files``: formats by their bytes, pickles refused
unless the caller opts in, JSON configs, floating-point weights); each refusal is one ``ModelLoadError`` line naming
the file and the field. Loaded weights that are not finite are reported (a warning naming the component).

Image files (saving with infotext, reading it back) are ``sdkit.image_files``; their names are also importable from
here, as are those of ``sdkit.model_files``, where they lived before.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sdkit.errors import ModelLoadError as ModelLoadError
from sdkit.errors import error_line as error_line
from sdkit.image_files import EXIF_IFD as EXIF_IFD
from sdkit.image_files import UNICODE_PREFIX as UNICODE_PREFIX
from sdkit.image_files import USER_COMMENT as USER_COMMENT
from sdkit.image_files import encode_image as encode_image
from sdkit.image_files import exif_user_comment as exif_user_comment
from sdkit.image_files import open_image as open_image
from sdkit.image_files import read_image_parameters as read_image_parameters
from sdkit.image_files import read_png_parameters as read_png_parameters
from sdkit.image_files import read_user_comment as read_user_comment
from sdkit.image_files import save_image as save_image
from sdkit.image_files import save_png as save_png
from sdkit.image_files import write_file as write_file
from sdkit.limits import check_bool
from sdkit.model_files import INDEX_BUFFERS as INDEX_BUFFERS
from sdkit.model_files import SAFETENSORS_MAX_HEADER as SAFETENSORS_MAX_HEADER
from sdkit.model_files import WEIGHT_SUFFIXES as WEIGHT_SUFFIXES
from sdkit.model_files import FileFormat as FileFormat
from sdkit.model_files import check_safetensors as check_safetensors
from sdkit.model_files import check_scheduler_config as check_scheduler_config
from sdkit.model_files import check_sdkit_config as check_sdkit_config
from sdkit.model_files import check_weights_file as check_weights_file
from sdkit.model_files import check_weights_folder as check_weights_folder
from sdkit.model_files import detect_format as detect_format
from sdkit.model_files import named_for_diffusers as named_for_diffusers
from sdkit.model_files import non_finite_weights as non_finite_weights
from sdkit.model_files import read_json_object as read_json_object
from sdkit.model_files import read_state_dict as read_state_dict
from sdkit.model_files import safetensors_header as safetensors_header
from sdkit.quiet import quiet_libraries, to_device

if TYPE_CHECKING:
    from sdkit.kit import Kit
    from sdkit.vae import VAE

EMBEDDED = {"shapes": Path(__file__).parent / "models" / "shapes" / "weights"}
COMPONENT_CLASSES = {
    "unet": ("diffusers", "UNet2DConditionModel"),
    "vae": ("diffusers", "AutoencoderKL"),
    "text_encoder": ("transformers", "CLIPTextModel"),
    "text_encoder_2": ("transformers", "CLIPTextModelWithProjection"),
    "tokenizer": ("transformers", "CLIPTokenizer"),
    "tokenizer_2": ("transformers", "CLIPTokenizer"),
}


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
    kit.load_controlnet = load_controlnet  # generate(control=(source, image)) loads a ControlNet not in kit.extras
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


# ------------------------------------------------------------------------------------------- tensors
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


def load_controlnet(
    source: str,
    *,
    allow_pickle: bool = False,
    config: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Any:
    """A diffusers ``ControlNetModel`` from a folder, hub id or single file (safetensors unless
    ``allow_pickle``), on ``device`` in ``dtype`` (CPU float32 by default), ready for ``Control``."""
    model = load_controlnet_model(source, allow_pickle=allow_pickle, config=config)
    return to_device(model, device or "cpu", dtype or torch.float32).eval().requires_grad_(False)


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
