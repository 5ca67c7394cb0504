"""Tiny random Stable Diffusion components, built offline, for tests and examples.

They have the real architectures (diffusers ``UNet2DConditionModel``/``AutoencoderKL``, transformers
``CLIPTextModel``) at toy sizes, and are saved the way real weights are published (``save_pretrained``
folders), so tests exercise the exact code path real weights take. Nothing here touches the network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch

Family = Literal["sd1", "sd2", "sdxl"]

SCHEDULER_CONFIG: dict[str, Any] = {
    # Stable Diffusion's training schedule (as published in its scheduler configs).
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "timestep_spacing": "leading",
    "steps_offset": 1,
}


def _text_config(hidden: int, *, gelu: bool, projection_dim: int = 32) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=0 if gelu else 49407,
        hidden_act="gelu" if gelu else "quick_gelu",  # OpenCLIP (SD2, SDXL's second encoder) uses gelu
        projection_dim=projection_dim,
    )


def tiny_vae(seed: int = 0) -> Any:
    """An f=8, 4-channel ``AutoencoderKL`` (four blocks, as SD's) with a few thousand parameters."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.18215,
    )


def tiny_unet(family: Family = "sd1", seed: int = 0, in_channels: int = 4) -> Any:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    common: dict[str, Any] = dict(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=8,
    )
    if family == "sd1":
        return UNet2DConditionModel(**common, cross_attention_dim=32, attention_head_dim=4)
    if family == "sd2":
        return UNet2DConditionModel(
            **common, cross_attention_dim=48, attention_head_dim=(2, 4), use_linear_projection=True
        )
    # SDXL: concatenated text embeddings (32 + 48; the encoders differ in width, as 768 and 1280 do, which is how
    # diffusers' single-file loader tells them apart), pooled embedding (32) + 6 micro-conditioning numbers.
    return UNet2DConditionModel(
        **common,
        cross_attention_dim=80,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,
        transformer_layers_per_block=(1, 2),
    )


def tiny_components(family: Family = "sd1", seed: int = 0) -> dict[str, Any]:
    """The modules of a tiny pipeline, keyed like a diffusers ``model_index.json``."""
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from sdkit.text.vocabulary import hf_clip_tokenizer

    torch.manual_seed(seed + 1)
    parts: dict[str, Any] = {"unet": tiny_unet(family, seed), "vae": tiny_vae(seed)}
    scheduler = dict(SCHEDULER_CONFIG)
    if family == "sd1":
        parts["text_encoder"] = CLIPTextModel(_text_config(32, gelu=False))
        parts["tokenizer"] = hf_clip_tokenizer()
    elif family == "sd2":
        parts["text_encoder"] = CLIPTextModel(_text_config(48, gelu=True))
        parts["tokenizer"] = hf_clip_tokenizer(pad_token="!")
        scheduler["prediction_type"] = "v_prediction"
    else:
        parts["text_encoder"] = CLIPTextModel(_text_config(32, gelu=False))
        parts["tokenizer"] = hf_clip_tokenizer()
        parts["text_encoder_2"] = CLIPTextModelWithProjection(_text_config(48, gelu=True, projection_dim=32))
        parts["tokenizer_2"] = hf_clip_tokenizer(pad_token="!")
        parts["vae"].register_to_config(scaling_factor=0.13025)  # SDXL's VAE scale
    parts["scheduler"] = EulerDiscreteScheduler(**scheduler)
    for module in parts.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    return parts


_PIPELINE_CLASSES = {
    "sd1": "StableDiffusionPipeline",
    "sd2": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
}


def save_tiny_model(path: str | Path, family: Family = "sd1", seed: int = 0) -> Path:
    """Save tiny random components as a diffusers folder (``model_index.json`` + one folder each)."""
    path = Path(path)
    parts = tiny_components(family, seed)
    index: dict[str, Any] = {"_class_name": _PIPELINE_CLASSES[family], "_diffusers_version": "0.42.1"}
    libraries = {
        "tokenizer": "transformers",
        "tokenizer_2": "transformers",
        "text_encoder": "transformers",
        "text_encoder_2": "transformers",
    }
    for name, module in parts.items():
        module.save_pretrained(path / name)
        index[name] = [libraries.get(name, "diffusers"), type(module).__name__]
    if family != "sdxl":
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    else:
        index["force_zeros_for_empty_prompt"] = True
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path


# ------------------------------------------------------------------------------ single-file checkpoints
# The original LDM layout of SD1 checkpoints (the published key scheme of CompVis' stable-diffusion code),
# written from diffusers modules so tests can load it back through diffusers' single-file converters.
_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_key(key: str, layers: int) -> str:
    parts = key.split(".")
    head = parts[0]
    if head in ("conv_in",):
        return "input_blocks.0.0." + ".".join(parts[1:])
    if head == "add_embedding":  # SDXL's pooled-text + time_ids embedding
        return {"linear_1": "label_emb.0.0", "linear_2": "label_emb.0.2"}[parts[1]] + "." + ".".join(parts[2:])
    if head == "time_embedding":
        return {"linear_1": "time_embed.0", "linear_2": "time_embed.2"}[parts[1]] + "." + ".".join(parts[2:])
    if head == "conv_norm_out":
        return "out.0." + ".".join(parts[1:])
    if head == "conv_out":
        return "out.2." + ".".join(parts[1:])
    if head in ("down_blocks", "up_blocks"):
        i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        if head == "down_blocks":
            if kind == "downsamplers":
                return f"input_blocks.{(layers + 1) * (i + 1)}.0.op." + ".".join(rest[1:])
            block = (layers + 1) * i + j + 1
        else:
            if kind == "upsamplers":
                return f"output_blocks.{(layers + 1) * i + layers}.UPSAMPLE." + ".".join(rest[1:])
            block = (layers + 1) * i + j
        sub = 0 if kind == "resnets" else 1
        prefix = "input_blocks" if head == "down_blocks" else "output_blocks"
        return f"{prefix}.{block}.{sub}." + _rename(rest, _RESNET if kind == "resnets" else {})
    if head == "mid_block":
        kind, j, rest = parts[1], int(parts[2]), parts[3:]
        block = 1 if kind == "attentions" else 2 * j
        return f"middle_block.{block}." + _rename(rest, _RESNET if kind == "resnets" else {})
    raise KeyError(key)


def _rename(rest: list[str], names: dict[str, str]) -> str:
    name, tail = rest[0], rest[1:]
    return ".".join([names.get(name, name), *tail])


def _vae_key(key: str, n_blocks: int) -> str:
    key = key.replace("mid_block.resnets.0", "mid.block_1").replace("mid_block.resnets.1", "mid.block_2")
    key = key.replace("mid_block.attentions.0", "mid.attn_1").replace("conv_norm_out", "norm_out")
    parts = key.split(".")
    if len(parts) > 2 and parts[1] in ("down_blocks", "up_blocks"):
        i = int(parts[2]) if parts[1] == "down_blocks" else n_blocks - 1 - int(parts[2])
        kind = parts[3]
        base = f"{parts[0]}.{'down' if parts[1] == 'down_blocks' else 'up'}.{i}"
        if kind in ("downsamplers", "upsamplers"):
            return f"{base}.{'downsample' if kind == 'downsamplers' else 'upsample'}." + ".".join(parts[5:])
        return f"{base}.block.{parts[4]}." + ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
    if "mid.attn_1." in key:
        head, tail = key.split("mid.attn_1.")
        for new, old in _VAE_ATTN.items():
            if tail.startswith(new + "."):
                tail = old + tail[len(new) :]
        return head + "mid.attn_1." + tail
    return key.replace("conv_shortcut", "nin_shortcut")


def ldm_state_dict(parts: dict[str, Any]) -> dict[str, torch.Tensor]:
    """SD1 or SDXL components as one LDM-layout state dict (``model.diffusion_model.*`` etc.)."""
    unet, vae, text = parts["unet"], parts["vae"], parts["text_encoder"]
    layers = unet.config.layers_per_block
    out: dict[str, torch.Tensor] = {}
    up_attn = {i for i, t in enumerate(unet.config.up_block_types) if "CrossAttn" in t}
    for k, v in unet.state_dict().items():
        key = _unet_key(k, layers)
        if ".UPSAMPLE." in key:  # the upsampler sits after the attention layer when the block has one
            block = int(k.split(".")[1])
            key = key.replace(".UPSAMPLE.", ".2.conv." if block in up_attn else ".1.conv.")
        out["model.diffusion_model." + key] = v.clone()
    n_blocks = len(vae.config.block_out_channels)
    for k, v in vae.state_dict().items():
        key = _vae_key(k, n_blocks)
        if "mid.attn_1." in key and v.ndim == 2:
            v = v[:, :, None, None]  # LDM's VAE attention uses 1x1 convolutions
        out["first_stage_model." + key] = v.clone()
    sdxl = "text_encoder_2" in parts
    prefix = "conditioner.embedders.0.transformer." if sdxl else "cond_stage_model.transformer."
    for k, v in text.state_dict().items():
        # Checkpoints keep the transformers 4 layout "text_model.*" (transformers >= 5.6 flattened it away).
        key = k if k.startswith("text_model.") else "text_model." + k
        out[prefix + key] = v.clone()
    if sdxl:
        out.update(_openclip_state_dict(parts["text_encoder_2"], "conditioner.embedders.1.model."))
    return out


def _openclip_state_dict(text_model: Any, prefix: str) -> dict[str, torch.Tensor]:
    """A transformers CLIP text model in OpenCLIP's layout (SDXL's second encoder): ``resblocks``, fused
    ``attn.in_proj_weight`` (q, k, v stacked), ``c_fc``/``c_proj``, and ``text_projection`` as ``x @ P``."""
    sd = {k.removeprefix("text_model."): v for k, v in text_model.state_dict().items()}
    out = {
        prefix + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        prefix + "positional_embedding": sd["embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": sd["final_layer_norm.weight"],
        prefix + "ln_final.bias": sd["final_layer_norm.bias"],
        prefix + "text_projection": sd["text_projection.weight"].T,
    }
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    names["self_attn.out_proj"] = "attn.out_proj"
    for i in range(text_model.config.num_hidden_layers):
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for p in ("weight", "bias"):
            for ours, theirs in names.items():
                out[f"{dst}{theirs}.{p}"] = sd[f"{src}{ours}.{p}"]
            out[f"{dst}attn.in_proj_{p}"] = torch.cat([sd[f"{src}self_attn.{q}_proj.{p}"] for q in "qkv"])
    return {k: v.clone().contiguous() for k, v in out.items()}


def save_single_file(path: str | Path, family: Family = "sd1", seed: int = 0) -> Path:
    """Tiny random SD1 or SDXL components saved as one LDM-layout ``.safetensors`` checkpoint."""
    from safetensors.torch import save_file

    if family not in ("sd1", "sdxl"):
        raise ValueError(f"family: single-file test checkpoints are written for sd1 and sdxl, got {family!r}")
    path = Path(path)
    save_file({k: v.contiguous() for k, v in ldm_state_dict(tiny_components(family, seed)).items()}, str(path))
    return path


# ------------------------------------------------------------------------------ SDXL refiner
def tiny_refiner_components(seed: int = 0) -> dict[str, Any]:
    """A tiny SDXL-refiner-like set: only the OpenCLIP-style second encoder (``text_encoder_2``), a UNet whose
    added embedding takes the pooled text (32) + 5 micro-conditioning numbers (original size, crop, aesthetic
    score: ``projection_class_embeddings_input_dim = 5 * 8 + 32``), and the SDXL-scaled VAE of the base."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModelWithProjection

    from sdkit.text.vocabulary import hf_clip_tokenizer

    base = tiny_components("sdxl", seed)
    torch.manual_seed(seed + 7)
    config = dict(base["unet"].config)
    config.update(cross_attention_dim=48, projection_class_embeddings_input_dim=5 * 8 + 32)
    unet = UNet2DConditionModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    torch.manual_seed(seed + 8)
    parts: dict[str, Any] = {
        "unet": unet.eval(),
        "vae": base["vae"],
        "text_encoder_2": CLIPTextModelWithProjection(_text_config(48, gelu=True, projection_dim=32)).eval(),
        "tokenizer_2": hf_clip_tokenizer(pad_token="!"),
        "scheduler": EulerDiscreteScheduler(**SCHEDULER_CONFIG),
    }
    return parts


def save_tiny_refiner(path: str | Path, seed: int = 0) -> Path:
    """Save ``tiny_refiner_components`` as a diffusers ``StableDiffusionXLImg2ImgPipeline`` folder, with the
    refiner's published ``model_index.json`` flags (no first text encoder, aesthetic-score conditioning)."""
    path = Path(path)
    index: dict[str, Any] = {"_class_name": "StableDiffusionXLImg2ImgPipeline", "_diffusers_version": "0.42.1"}
    for name, module in tiny_refiner_components(seed).items():
        module.save_pretrained(path / name)
        library = "transformers" if "text" in name or "token" in name else "diffusers"
        index[name] = [library, type(module).__name__]
    index.update(
        text_encoder=[None, None],
        tokenizer=[None, None],
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path
