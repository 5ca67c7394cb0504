"""Test images and tiny ControlNets for the image-conditioning tests (never the network)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage


def gradient_image(width: int = 64, height: int = 64, seed: int = 0) -> PILImage.Image:
    """A deterministic RGB test picture: two gradients and a bright square, plus mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    a = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 5.0)], axis=-1)
    a[height // 4 : height // 2, width // 4 : width // 2] = (0.9, 0.2, 0.1)
    a = (a * 255 + rng.normal(0, 4, a.shape)).clip(0, 255).astype(np.uint8)
    return PILImage.fromarray(a)


def tiny_controlnet(unet: Any, seed: int = 0) -> Any:
    """A ControlNet copied from a tiny UNet (diffusers' ``from_unet``), its zero convolutions made non-zero so
    that it actually changes the result (trained ControlNets have left zero long ago)."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(
                ("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")
            ):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return net.eval()


def random_midas_detector(seed: int = 0) -> Any:
    """controlnet_aux's ``MidasDetector`` around its real DPT-Hybrid model class (``DPTDepthModel``, timm
    backbone ``vitb_rn50_384``) with random weights, built without the download its ``from_pretrained`` does.

    The 123M-parameter model is built on the meta device and filled from one small random block (fan-in
    scaled), which takes about a second instead of the half minute of timm's initialisation."""
    from controlnet_aux.midas import MidasDetector
    from controlnet_aux.midas.api import MiDaSInference
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

    with torch.device("meta"):
        model = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)
    model = model.to_empty(device="cpu")
    base = torch.randn(65537, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for k, (name, p) in enumerate(model.named_parameters()):
            if p.ndim >= 2:
                n = p.numel()
                block = base.roll(k * 7919).repeat(math.ceil(n / base.numel()))[:n]
                p.copy_(block.view(p.shape) / math.sqrt(p[0].numel()))
            else:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
        for name, b in model.named_buffers():
            if b.is_floating_point():
                b.fill_(1.0 if "running_var" in name else 0.0)
    inference = MiDaSInference.__new__(MiDaSInference)  # its __init__ would download the published weights
    torch.nn.Module.__init__(inference)
    inference.model = model.eval()
    return MidasDetector(inference)


def save_model_with_controlnets(path: Path, seed: int = 0) -> Path:
    """A tiny SD1 diffusers folder with ``controlnet_depth`` and ``controlnet_pose`` beside its components,
    the layout of the embedded model (``sdkit.loading.load_components`` picks them up)."""
    from diffusers import UNet2DConditionModel

    from sdkit.testing import save_tiny_model

    save_tiny_model(path, "sd1", seed)
    unet = UNet2DConditionModel.from_pretrained(str(path / "unet"))
    tiny_controlnet(unet, seed=10).save_pretrained(path / "controlnet_depth")
    tiny_controlnet(unet, seed=20).save_pretrained(path / "controlnet_pose")
    return path
