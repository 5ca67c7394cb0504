"""Tiny random CLIP text models and diffusers pipelines for the text-conditioning tests (no downloads)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch


def tiny_text_model(seed: int = 0, layers: int = 2, projection: bool = False, **config: Any) -> Any:
    """A random CLIP text model with the real vocabulary size and 77 positions, hidden size 32.

    ``eos_token_id=49407`` (the real one) makes transformers pool at the first EOS; the legacy value 2
    would pool at the highest id, which is the same position for CLIP's ids.
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    options: dict[str, Any] = dict(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
        projection_dim=32,
    )
    options.update(config)
    torch.manual_seed(seed)
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(CLIPTextConfig(**options))
    return model.eval()


def _tiny_unet(cross_attention_dim: int, sdxl: bool = False) -> Any:
    from diffusers import UNet2DConditionModel

    extra: dict[str, Any] = {}
    if sdxl:
        extra = dict(
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=32 + 6 * 8,
            attention_head_dim=(2, 4),
        )
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        sample_size=8,
        **extra,
    )


def _tiny_vae() -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8,),
        norm_num_groups=8,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
    )


@lru_cache(maxsize=4)
def sd_pipeline(pad_token: str = "<|endoftext|>", layers: int = 2) -> Any:
    """A diffusers ``StableDiffusionPipeline`` from tiny parts and the real (offline) tokenizer."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from sdkit.text.vocabulary import hf_clip_tokenizer

    return StableDiffusionPipeline(
        vae=_tiny_vae(),
        text_encoder=tiny_text_model(0, layers),
        tokenizer=hf_clip_tokenizer(pad_token),
        unet=_tiny_unet(32),
        scheduler=EulerDiscreteScheduler(steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@lru_cache(maxsize=1)
def sdxl_pipeline() -> Any:
    """A diffusers ``StableDiffusionXLPipeline``: encoder 1 (d=32, plain), encoder 2 (d=32, projected)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from sdkit.text.vocabulary import hf_clip_tokenizer

    return StableDiffusionXLPipeline(
        vae=_tiny_vae(),
        text_encoder=tiny_text_model(1, 3),
        text_encoder_2=tiny_text_model(2, 3, projection=True),
        tokenizer=hf_clip_tokenizer("<|endoftext|>"),
        tokenizer_2=hf_clip_tokenizer("!"),
        unet=_tiny_unet(64, sdxl=True),
        scheduler=EulerDiscreteScheduler(steps_offset=1),
        force_zeros_for_empty_prompt=True,
    )
