"""Speed options for a kit's torch models, by role (``Kit.modules()``): device and dtype, channels-last weights and
``torch.compile``. ``Kit.to``, ``Kit.channels_last`` and ``Kit.compile`` call these on their kit's models; images
are unchanged up to float rounding (``bench/`` measures what each option gains).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from sdkit.quiet import to_device


def move(modules: Mapping[str, torch.nn.Module], device: torch.device, dtype: torch.dtype) -> None:
    """Move every model to ``device`` and ``dtype`` in place (``torch.float16`` on a GPU, ``torch.bfloat16`` on a
    GPU or a CPU)."""
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating point dtype, got {dtype}")
    for module in modules.values():
        to_device(module, device, dtype)


def channels_last(modules: Mapping[str, torch.nn.Module], enabled: bool = True) -> None:
    """Store the UNet's (and ControlNets') conv weights channels-last (NHWC), which cuDNN and oneDNN often run
    faster; ``enabled=False`` restores the default layout."""
    fmt = torch.channels_last if enabled else torch.contiguous_format
    for name, module in modules.items():
        if name == "unet" or name.startswith("controlnet"):
            module.to(memory_format=fmt)


def compile_unet(unet: torch.nn.Module, mode: str | None = "default", **options: Any) -> None:
    """``torch.compile`` the UNet in place (``nn.Module.compile``, so every holder of it, a diffusers pipeline too,
    runs the compiled forward). The first generation pays the compile time; a new image size recompiles.
    ``options`` go to ``torch.compile`` (``backend=``, ``dynamic=``, ``fullgraph=``)."""
    unet.compile(mode=mode, **options)
