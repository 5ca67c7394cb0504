"""txt2img with Euler equals diffusers' StableDiffusionPipeline + EulerDiscreteScheduler on the same tiny
random SD1 components, the same starting noise and the same sigmas."""

from __future__ import annotations

import torch

from sdkit.noise import randn


def test_txt2img_euler_matches_diffusers_pipeline(tiny_sd1_folder, tiny_sd1_kit):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(tiny_sd1_folder), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    # "linspace" spacing: diffusers then starts from sigma_max itself (with "leading" it uses sqrt(sigma^2+1)).
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    steps, seed = 12, 4376845645
    pipe.scheduler.set_timesteps(steps)
    sigmas = pipe.scheduler.sigmas.clone().float()
    noise = randn([seed], (4, 8, 8))
    with torch.no_grad():
        theirs = pipe(
            "a red circle above a blue square",
            negative_prompt="blurry",
            num_inference_steps=steps,
            guidance_scale=7.5,
            latents=noise.clone(),
            height=64,
            width=64,
            output_type="pt",
        ).images
    gen = tiny_sd1_kit.generate(
        "a red circle above a blue square",
        "blurry",
        seed=seed,
        sampler="euler",
        schedule=sigmas,
        cfg=7.5,
        width=64,
        height=64,
    )
    ours = tiny_sd1_kit.vae.decode(gen.latents).tensor
    assert ours.shape == theirs.shape == (1, 3, 64, 64)
    diff = (ours - theirs).abs().max().item()
    assert diff <= 1e-4, f"max abs difference {diff:.3g} > 1e-4"
    assert theirs.std() > 1e-3  # the images are not flat: the comparison is meaningful
