"""Write the trained shapes model as a diffusers-format folder (fp16 safetensors), the layout real SD uses:

    model_index.json  sdkit.json  vae/  text_encoder/  tokenizer/  unet/  scheduler/
    controlnet_depth/  controlnet_pose/

Each subfolder loads on its own with ``from_pretrained(folder, subfolder=...)``, and the folder as a whole
with ``StableDiffusionPipeline.from_pretrained``. The export is atomic: it is written next to ``out`` and
renamed into place, so a run killed mid-export still leaves the previous export intact.

``python -m sdkit.models.shapes.export --add-tokenizer DIR`` adds ``tokenizer/`` to an export made on a
machine without open-clip (the CLIP vocabulary file ships with it).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from sdkit.models.shapes.architecture import IMAGE_SIZE

# Stable Diffusion's noise schedule: 1000 steps, "scaled_linear" betas from 0.00085 to 0.012.
SCHEDULER_CONFIG: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    timestep_spacing="leading",
    steps_offset=1,
)
DEFAULTS = {"family": "shapes", "default_size": IMAGE_SIZE, "default_steps": 20, "default_cfg": 7.5}


def _save_fp16(module: Any, folder: Path) -> None:  # a diffusers / transformers model
    half = copy.deepcopy(module).to(device="cpu", dtype=torch.float16)
    half.save_pretrained(folder, safe_serialization=True)


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from sdkit.text.vocabulary import hf_clip_tokenizer

    return hf_clip_tokenizer()  # several seconds to build: once per process


def save_tokenizer(folder: Path) -> bool:
    """Write SD1's CLIP tokenizer (built offline by ``sdkit.text``) to ``folder``; False without open-clip."""
    try:
        tokenizer = _tokenizer()
    except ImportError:
        return False
    tokenizer.save_pretrained(folder)
    return True


def export(
    out: str | Path,
    *,
    vae: Any,
    text_encoder: Any,
    unet: Any,
    controlnets: dict[str, Any],
    latent_scale: float,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write the diffusers folder ``out``; ``controlnets`` maps a name (``depth``, ``pose``) to a model."""
    from diffusers import EulerDiscreteScheduler
    from diffusers.utils import logging

    logging.set_verbosity_error()  # the fp16 cast warns about modules kept in fp32; the tiny model has none
    logging.disable_progress_bar()
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    vae.register_to_config(scaling_factor=float(latent_scale))
    _save_fp16(vae, tmp / "vae")
    _save_fp16(text_encoder, tmp / "text_encoder")
    _save_fp16(unet, tmp / "unet")
    for name, model in controlnets.items():
        _save_fp16(model, tmp / f"controlnet_{name}")
    scheduler: Any = EulerDiscreteScheduler(**SCHEDULER_CONFIG)
    scheduler.save_pretrained(tmp / "scheduler")
    has_tokenizer = save_tokenizer(tmp / "tokenizer")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": _diffusers_version(),
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
    }
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    meta = dict(DEFAULTS, latent_scale=float(latent_scale), controlnets=sorted(controlnets))
    meta.update(info or {})
    if not has_tokenizer:
        meta["tokenizer_missing"] = True
    (tmp / "sdkit.json").write_text(json.dumps(meta, indent=2) + "\n")
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def fp16_megabytes(folder: str | Path) -> float:
    """Total size of the weight files in an export, in MB."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*.safetensors")) / 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--add-tokenizer", metavar="DIR", required=True, help="an export without tokenizer/")
    args = parser.parse_args(argv)
    folder = Path(args.add_tokenizer)
    if not save_tokenizer(folder / "tokenizer"):
        raise SystemExit("open-clip-torch is needed to build the CLIP tokenizer")
    meta = json.loads((folder / "sdkit.json").read_text())
    meta.pop("tokenizer_missing", None)
    (folder / "sdkit.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {folder / 'tokenizer'}")


if __name__ == "__main__":
    main()
