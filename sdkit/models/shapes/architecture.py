"""The configs of the embedded ``shapes`` model: Stable Diffusion's own component classes, made tiny.

Every component is the class SD 1.x uses (diffusers ``AutoencoderKL``, ``UNet2DConditionModel``,
``ControlNetModel``; transformers ``CLIPTextModel`` with the real CLIP tokenizer), so the embedded model
goes through exactly the code paths of real weights. Only the widths and depths shrink:

- VAE: 64x64x3 pixels <-> 8x8x4 latents (downsample factor 8 = three downsamplings, 4 latent channels).
- Text encoder: the full 49408-token CLIP vocabulary (its embedding table dominates the parameter count),
  hidden size 64, 4 layers, 77 positions.
- UNet: cross-attention blocks at 8x8 and 4x4, ``cross_attention_dim`` = the text hidden size.
- ControlNets (depth, pose): ``ControlNetModel.from_unet`` copies of the UNet's encoder half, with a small
  conditioning-image embedding (64x64 RGB -> 8x8).

Run ``python -m sdkit.models.shapes.architecture`` to print parameter counts and fp16 sizes.
"""

from __future__ import annotations

from typing import Any

import torch

IMAGE_SIZE = 64
LATENT_CHANNELS = 4
DOWNSAMPLE = 8
TEXT_HIDDEN = 64
MAX_TOKENS = 77
VOCAB_SIZE = 49408
MAX_FP16_MB = 25.0

VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(32, 64, 64, 64),  # 4 blocks -> 3 downsamplings -> factor 8
    layers_per_block=1,
    latent_channels=LATENT_CHANNELS,
    norm_num_groups=16,
    sample_size=IMAGE_SIZE,
    scaling_factor=1.0,  # replaced after VAE training by 1 / std(latents), as SD did (0.18215)
)

TEXT_CONFIG: dict[str, Any] = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=TEXT_HIDDEN,
    intermediate_size=4 * TEXT_HIDDEN,
    num_hidden_layers=4,
    num_attention_heads=4,
    max_position_embeddings=MAX_TOKENS,
    hidden_act="quick_gelu",  # SD1's CLIP ViT-L/14 activation
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
    projection_dim=TEXT_HIDDEN,
)

UNET_CONFIG: dict[str, Any] = dict(
    sample_size=IMAGE_SIZE // DOWNSAMPLE,
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(64, 96, 96),
    layers_per_block=1,
    attention_head_dim=8,  # diffusers' historic name: this is the number of heads
    cross_attention_dim=TEXT_HIDDEN,
    norm_num_groups=32,
)

CONTROLNET_EMBEDDING_CHANNELS = (16, 32, 64, 64)  # 3 stride-2 convs: 64x64 condition image -> 8x8


def make_vae(image_size: int = IMAGE_SIZE) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(**{**VAE_CONFIG, "sample_size": image_size})


def make_text_encoder() -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))


def make_unet(image_size: int = IMAGE_SIZE) -> Any:
    """The UNet for ``image_size``-pixel images (``image_size / 8`` latents; the same weights work at any size)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**{**UNET_CONFIG, "sample_size": image_size // DOWNSAMPLE})


def make_controlnet(unet: Any, seed: int = 0) -> Any:
    """A ControlNet initialised from the (trained) UNet's encoder, as in Zhang et al. 2023.

    One departure: the last convolution of the conditioning-image embedding starts random (PyTorch's default
    init) instead of zero. With it at zero the condition image reaches none of the ControlNet's features, and
    that convolution gets no gradient until the output "zero convolutions" have moved away from zero; random, it
    feeds the condition in from the first step. The output convolutions stay zero, so the untrained ControlNet
    still adds exactly nothing.
    """
    from diffusers import ControlNetModel

    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONTROLNET_EMBEDDING_CHANNELS)
        torch.manual_seed(seed)
        net.controlnet_cond_embedding.conv_out.reset_parameters()
    return net


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def size_report() -> dict[str, tuple[int, float]]:
    """``component -> (parameters, fp16 megabytes)`` for a freshly built model."""
    unet = make_unet()
    parts = {
        "vae": make_vae(),
        "text_encoder": make_text_encoder(),
        "unet": unet,
        "controlnet_depth": make_controlnet(unet),
        "controlnet_pose": make_controlnet(unet),
    }
    report = {k: (param_count(m), param_count(m) * 2 / 1e6) for k, m in parts.items()}
    total = sum(n for n, _ in report.values())
    report["total"] = (total, total * 2 / 1e6)
    return report


if __name__ == "__main__":
    for name, (n, mb) in size_report().items():
        print(f"{name:18s} {n / 1e6:7.3f} M params  {mb:6.2f} MB fp16")
