"""Single-file checkpoints (the original LDM layout A1111 and ComfyUI use), through diffusers' converters.

The family is recognised from the checkpoint's keys; the architecture configs come from ``config`` (a
diffusers folder or hub id) or, by default, the family's reference repository on the hub. sdkit checks the file
first (its format from its bytes, pickles refused or read weights-only, floating-point weights) and hands
diffusers a path named by that format, so both read the same bytes the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdkit.errors import ModelLoadError, error_line
from sdkit.model_files import check_scheduler_config, check_weights_file, named_for_diffusers

REFERENCE_CONFIGS = {
    "sd1": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd2": "stabilityai/stable-diffusion-2-1",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}


def family_of_checkpoint(keys: set[str] | dict[str, Any], path: Path | None = None) -> str:
    """sd1 / sd2 / sdxl from an LDM-layout state dict's keys."""
    where = f"{path}: " if path is not None else ""
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return "sd1"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        raise ModelLoadError(f"model: {where}checkpoint has a UNet but no recognised text encoder (SD1/SD2/SDXL)")
    raise ModelLoadError(f"model: {where}not a Stable Diffusion checkpoint (no model.diffusion_model.* keys)")


def load_single_file(path: Path, *, allow_pickle: bool = False, config: str | None = None) -> dict[str, Any]:
    """The components of a single-file checkpoint, keyed like a diffusers folder's."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    family = family_of_checkpoint(check_weights_file(path, allow_pickle=allow_pickle), path)
    pipeline_cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    source = config or REFERENCE_CONFIGS[family]
    local = Path(source).expanduser().is_dir()
    extra: dict[str, Any] = {} if family == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    try:
        with named_for_diffusers(path) as named:
            pipe = pipeline_cls.from_single_file(str(named), config=source, **extra)
    except ModelLoadError:
        raise
    except Exception as e:
        if local:  # the configs are at hand: what failed is the conversion of this checkpoint with them
            raise ModelLoadError(
                f"model: could not convert {path} with the {family} configs of {source} ({error_line(e)})"
            ) from None
        raise ModelLoadError(
            f"model: could not read the {family} architecture configs from {source!r} ({error_line(e)}); "
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
    check_scheduler_config(parts["scheduler_config"], f"the scheduler config of {source}")
    parts["sdkit"] = {"family": family}
    return parts


def load_single_file_vae(path: Path) -> Any:
    """A VAE from a single safetensors file (LDM ``first_stage_model.*``/``encoder.*`` keys or diffusers keys)."""
    from diffusers import AutoencoderKL

    check_weights_file(path)  # refuses pickles, bad files and non-float weights before diffusers opens it
    try:
        with named_for_diffusers(path) as named:
            return AutoencoderKL.from_single_file(str(named))
    except Exception as e:
        raise ModelLoadError(f"model: could not load a VAE from {path} ({error_line(e)})") from None
