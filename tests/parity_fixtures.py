"""The txt2img-vs-diffusers comparison shared by the SD1 and SD2 parity tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sdkit.noise import randn

PROMPT, NEGATIVE = "a red circle above a blue square", "blurry"


def euler_txt2img_vs_diffusers(folder: Path, kit: Any, seed: int, steps: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded images ``(ours, theirs)`` of sdkit's Euler txt2img and diffusers' StableDiffusionPipeline with
    EulerDiscreteScheduler, both on the components saved in ``folder``, the same starting noise and sigmas."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    # "linspace" spacing: diffusers then starts from sigma_max itself (with "leading" it uses sqrt(sigma^2+1)).
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    pipe.scheduler.set_timesteps(steps)
    sigmas = pipe.scheduler.sigmas.clone().float()
    noise = randn([seed], (4, 8, 8))
    with torch.no_grad():
        theirs = pipe(
            PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=7.5, latents=noise.clone(),
            height=64, width=64, output_type="pt",
        ).images  # fmt: skip
    gen = kit.generate(PROMPT, NEGATIVE, seed=seed, sampler="euler", schedule=sigmas, cfg=7.5, width=64, height=64)
    return kit.vae.decode(gen.latents).tensor, theirs
