"""Shared helpers of the CPU benchmarks: interleaved timing, the diffusers peer built from a kit's own modules,
and a small SD-architecture model with random weights.

Timings on a shared machine drift, so every benchmark alternates its contestants round by round (the order
flips every round) and reports medians and their ratio, never a lone absolute number.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternating order (ABAB..., then BA on odd rounds)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_line(threads: int) -> str:
    return f"CPU: {cpu_name()}, {threads} threads, torch {torch.__version__}"


def cpu_parser(doc: str, repeats: int, repeats_help: str | None = None) -> argparse.ArgumentParser:
    """The options every CPU benchmark takes: ``--repeats``, ``--steps`` (20) and ``--threads``."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--repeats", type=int, default=repeats, help=repeats_help)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    return p


def parse_cpu_args(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, set torch's thread count and print the device line that heads every result."""
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(device_line(args.threads))
    return args


def euler_scheduler() -> Any:
    """diffusers' Euler with "linspace" spacing: it starts at sigma_max itself, as sdkit's schedules do."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="linspace", steps_offset=1
    )


def sd_pipeline(kit: Any, scheduler: Any | None = None) -> Any:
    """diffusers' ``StableDiffusionPipeline`` over the very modules of ``kit`` (one UNet, one VAE, one encoder)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=kit.vae.model,
        text_encoder=kit.prompts.encoders[0].model,
        tokenizer=kit.prompts.tokenizers[0].hf,
        unet=kit.denoiser.model.unet,
        scheduler=scheduler or euler_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def small_sd_unet(seed: int = 0) -> Any:
    """SD 1.x's UNet layout (3 levels, 2 resnets per level, cross-attention at the two upper levels, 768-wide
    text context) at 1/10 of the width: block_out_channels (32, 64, 64), random weights."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=8,
        norm_num_groups=32,
    ).eval()


def small_sd_kit(seed: int = 0) -> Any:
    """A ``Kit`` over sdkit's tiny random SD1 components with ``small_sd_unet`` as its UNet; the text encoder stays
    tiny (32 wide), so callers hand the UNet 768-wide embeddings themselves."""
    from sdkit.kit import Kit
    from sdkit.testing import tiny_components

    parts = tiny_components("sd1", seed)
    parts["unet"] = small_sd_unet(seed)
    return Kit.from_components(parts, family="sd1", name="small-sd (32,64,64)")


def markdown_row(benchmark: str, command: str, device: str, ours: str, peer: str, ratio: float) -> str:
    return f"| {benchmark} | `{command}` | {device} | {ours} | {peer} | {ratio:.3f} |"
