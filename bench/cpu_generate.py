"""Time one 64x64 image, 20 Euler steps with CFG, on the embedded model: sdkit vs diffusers, same process.

    python bench/cpu_generate.py [--model shapes] [--repeats 5] [--threads 2]

Reports the median of ``repeats`` timed runs after one warm-up, for sdkit's ``Kit.generate`` and for diffusers'
``StableDiffusionPipeline`` built from the very same modules and sigmas, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    import sdkit

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="shapes")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    kit = sdkit.load(args.model)
    size, prompt = kit.defaults.width, "a large red circle on the left, yellow background"
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="linspace", steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        vae=kit.vae.model,
        text_encoder=kit.prompts.encoders[0].model,
        tokenizer=kit.prompts.tokenizers[0].hf,
        unet=kit.denoiser.model.unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    scheduler.set_timesteps(args.steps)
    sigmas = scheduler.sigmas.clone().float()  # both sides walk the same sigmas

    def ours() -> None:
        kit.prompts.clear_cache()  # encode the prompt every run, as diffusers does
        kit.generate(prompt, seed=1, steps=args.steps, cfg=7.5, sampler="euler", schedule=sigmas)

    def theirs() -> None:
        with torch.no_grad():
            pipe(
                prompt,
                num_inference_steps=args.steps,
                guidance_scale=7.5,
                height=size,
                width=size,
                generator=torch.Generator().manual_seed(1),
                output_type="pil",
            )

    t_ours, t_theirs = median_time(ours, args.repeats), median_time(theirs, args.repeats)
    print(
        f"model {args.model}, {size}x{size}, {args.steps} Euler steps, CFG 7.5, {args.threads} threads, "
        f"median of {args.repeats}"
    )
    print(f"sdkit     {t_ours:.3f} s/image")
    print(f"diffusers {t_theirs:.3f} s/image")
    print(f"ratio sdkit/diffusers {t_ours / t_theirs:.3f}")


if __name__ == "__main__":
    main()
