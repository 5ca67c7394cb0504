"""Single-file checkpoints (the original LDM layout A1111 and ComfyUI use), through diffusers' converters.

The family is recognised from the checkpoint's keys; the architecture configs come from ``config`` (a
diffusers folder or hub id) or, by default, the family's reference repository on the hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdkit.loading import ModelLoadError, read_state_dict

REFERENCE_CONFIGS = {
    "sd1": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd2": "stabilityai/stable-diffusion-2-1",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}


def family_of_checkpoint(keys: set[str]) -> str:
    """sd1 / sd2 / sdxl from an LDM-layout state dict's keys."""
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return "sd1"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        raise ModelLoadError("model: checkpoint has a UNet but no recognised text encoder (SD1/SD2/SDXL)")
    raise ModelLoadError("model: not a Stable Diffusion checkpoint (no model.diffusion_model.* keys)")


def load_single_file(path: Path, *, allow_pickle: bool = False, config: str | None = None) -> dict[str, Any]:
    """The components of a single-file checkpoint, keyed like a diffusers folder's."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    state = read_state_dict(path, allow_pickle=allow_pickle)
    family = family_of_checkpoint(set(state))
    pipeline_cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    source = config or REFERENCE_CONFIGS[family]
    extra: dict[str, Any] = {} if family == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    try:
        pipe = pipeline_cls.from_single_file(str(path), config=source, **extra)
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"model: could not read the {family} architecture configs from {source!r} ({type(e).__name__}); "
            "offline, pass config= a local diffusers folder of the same architecture"
        ) from None
    parts = {name: getattr(pipe, name) for name in ("unet", "vae", "text_encoder", "tokenizer") if getattr(pipe, name)}
    if family == "sdxl":
        parts.update(text_encoder_2=pipe.text_encoder_2, tokenizer_2=pipe.tokenizer_2)
        # as a folder's model_index.json would say: an empty negative prompt gives zero embeddings
        parts["index"] = {
            "force_zeros_for_empty_prompt": bool(getattr(pipe.config, "force_zeros_for_empty_prompt", True))
        }
    parts["scheduler_config"] = dict(pipe.scheduler.config)
    parts["sdkit"] = {"family": family}
    return parts


def load_single_file_vae(path: Path) -> Any:
    """A VAE from a single safetensors file (LDM ``first_stage_model.*``/``encoder.*`` keys or diffusers keys)."""
    from diffusers import AutoencoderKL

    read_state_dict(path)  # refuses pickles and bad files before diffusers opens it
    try:
        return AutoencoderKL.from_single_file(str(path))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"model: could not load a VAE from {path} ({type(e).__name__}: {e})") from None
