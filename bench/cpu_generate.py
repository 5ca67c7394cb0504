"""Time one 64x64 image, 20 Euler steps with CFG, on the embedded model: sdkit vs diffusers, same process.

    python bench/cpu_generate.py [--model shapes] [--repeats 5] [--threads 2] [--size 128]

Reports the median of ``repeats`` timed runs after one warm-up, for sdkit's ``Kit.generate`` and for diffusers'
``StableDiffusionPipeline`` built from the very same modules and sigmas, and their ratio. The two alternate run by
run (``common.interleaved``), so drift on a shared machine hits both alike. Both encode the prompt, sample,
decode and convert to PIL.
"""

from __future__ import annotations

import torch
from common import cpu_parser, euler_scheduler, interleaved, markdown_row, parse_cpu_args, sd_pipeline


def main() -> None:
    import sdkit

    p = cpu_parser(__doc__, repeats=15)
    p.add_argument("--model", default="shapes")
    p.add_argument("--size", type=int, default=None, help="image side (default: the model's; the cost of a design)")
    args = parse_cpu_args(p)

    kit = sdkit.load(args.model)
    size, prompt = args.size or kit.defaults.width, "a large red circle on the left, yellow background"
    scheduler = euler_scheduler()
    pipe = sd_pipeline(kit, scheduler)
    scheduler.set_timesteps(args.steps)
    sigmas = scheduler.sigmas.clone().float()  # both sides walk the same sigmas

    def ours() -> None:
        kit.prompts.clear_cache()  # encode the prompt every run, as diffusers does
        kit.generate(prompt, seed=1, steps=args.steps, cfg=7.5, sampler="euler", schedule=sigmas, width=size,
                     height=size)  # fmt: skip

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

    t = interleaved({"sdkit": ours, "diffusers": theirs}, args.repeats)
    t_ours, t_theirs = t["sdkit"], t["diffusers"]
    print(
        f"model {args.model}, {size}x{size}, {args.steps} Euler steps, CFG 7.5, {args.threads} threads, "
        f"median of {args.repeats} (interleaved)"
    )
    print(f"sdkit     {t_ours:.3f} s/image")
    print(f"diffusers {t_theirs:.3f} s/image")
    print(f"ratio sdkit/diffusers {t_ours / t_theirs:.3f}")
    print(
        markdown_row(
            f"end to end, {args.model} {size}px, {args.steps} steps",
            f"python bench/cpu_generate.py --threads {args.threads}",
            f"CPU, {args.threads} threads",
            f"{t_ours:.3f} s",
            f"{t_theirs:.3f} s",
            t_ours / t_theirs,
        )
    )


if __name__ == "__main__":
    main()
