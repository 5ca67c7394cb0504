"""The sampling loop alone: sdkit's ``txt2img`` recipe vs diffusers' pipeline denoising loop, same UNet, same
text embeddings (encoded once, outside the timing), same sigmas, same starting noise.

    python bench/cpu_sampling_loop.py [--repeats 15] [--sd-repeats 5] [--steps 20] [--threads N] [--models ...]

- ``shapes``: the embedded model, 64x64 pixels (8x8 latents);
- ``small-sd``: SD 1.x's UNet layout at block_out_channels (32, 64, 64), random weights, 768-wide context,
  256x256 pixels (32x32 latents);
- ``stub``: the embedded model with its UNet replaced by a stub (``0.1 * x``): what remains is each library's
  own per-step work (guidance, timestep map, input scaling, sampler update), which the UNet otherwise hides.

diffusers runs ``StableDiffusionPipeline(prompt_embeds=..., negative_prompt_embeds=..., latents=...,
output_type="latent")``: its loop plus what the pipeline does around it without the text encoder or the VAE.
Both run 20 Euler steps with CFG 7.5 (batch 2 through the UNet). Prints the per-step medians (rounds
interleaved), their ratio, the largest difference between the two final latents, and README table rows.
"""

from __future__ import annotations

from typing import Any

import torch
from common import cpu_parser, euler_scheduler, interleaved, markdown_row, parse_cpu_args, sd_pipeline, small_sd_kit

import sdkit
from sdkit.noise import randn
from sdkit.recipes import txt2img
from sdkit.types import TextConditioning

PROMPT = "a large red circle on the left, yellow background"


class StubUNet(torch.nn.Module):
    """Stands in for a UNet (same config, so both pipelines accept it) at almost no cost: ``0.1 * sample``."""

    def __init__(self, unet: Any) -> None:
        super().__init__()
        self.config = unet.config
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)  # gives the pipeline a device

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: Any = None, **_: Any) -> Any:
        return (sample * 0.1,)


def setup(model: str) -> tuple[Any, TextConditioning, TextConditioning, int]:
    """The kit, (cond, uncond) on the kit's device, and the image size in pixels."""
    if model in ("shapes", "stub"):
        kit = sdkit.load("shapes")
        if model == "stub":
            kit.denoiser.model.unet = StubUNet(kit.denoiser.model.unet)
        cond, uncond = kit.prompts.encode_pair(PROMPT, "")
        return kit, cond, uncond, kit.defaults.width
    kit = small_sd_kit()
    g = torch.Generator().manual_seed(0)
    cond = TextConditioning(torch.randn(1, 77, 768, generator=g))
    uncond = TextConditioning(torch.randn(1, 77, 768, generator=g))
    return kit, cond, uncond, 256


def compare(model: str, steps: int, repeats: int) -> dict[str, float]:
    kit, cond, uncond, size = setup(model)
    scheduler = euler_scheduler()
    pipe = sd_pipeline(kit, scheduler)
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas.clone().float()  # both sides walk the same sigmas
    space = kit.latent_space or kit.vae.space
    noise = randn([1], (space.channels, size // space.factor, size // space.factor))
    out: dict[str, Any] = {}

    def ours() -> None:
        with torch.no_grad():
            out["ours"] = txt2img(
                kit.denoiser, space, cond, uncond, sigmas=sigmas, sampler="euler", cfg_scale=7.5, seed=1,
                width=size, height=size,
            ).tensor  # fmt: skip

    def theirs() -> None:
        with torch.no_grad():
            out["theirs"] = pipe(
                prompt_embeds=cond.embeds,
                negative_prompt_embeds=uncond.embeds,
                latents=noise.clone(),
                num_inference_steps=steps,
                guidance_scale=7.5,
                height=size,
                width=size,
                output_type="latent",
            ).images

    t = interleaved({"sdkit": ours, "diffusers": theirs}, repeats)
    diff = (out["ours"] - out["theirs"]).abs().max().item()
    return {"sdkit": t["sdkit"] / steps, "diffusers": t["diffusers"] / steps, "max_abs_diff": diff, "size": size}


def main() -> None:
    p = cpu_parser(__doc__, repeats=15, repeats_help="timed rounds on shapes (x5 on stub)")
    models = ["shapes", "small-sd", "stub"]
    p.add_argument("--models", nargs="+", default=models, choices=models)
    p.add_argument("--sd-repeats", type=int, default=5, help="timed rounds on small-sd (about 15 s each)")
    args = parse_cpu_args(p)
    rows = []
    for model in args.models:
        repeats = {"small-sd": args.sd_repeats, "stub": 5 * args.repeats}.get(model, args.repeats)
        r = compare(model, args.steps, repeats)
        ratio = r["sdkit"] / r["diffusers"]
        size = int(r["size"])
        print(
            f"{model} {size}x{size}, {args.steps} Euler steps, CFG 7.5, median of {repeats}: "
            f"sdkit {r['sdkit'] * 1e3:.3f} ms/step, diffusers {r['diffusers'] * 1e3:.3f} ms/step, "
            f"ratio {ratio:.3f}, max |latents diff| {r['max_abs_diff']:.2e}",
            flush=True,
        )
        rows.append(
            markdown_row(
                f"sampling loop, {model} {size}px",
                f"python bench/cpu_sampling_loop.py --models {model} --threads {args.threads}",
                f"CPU, {args.threads} threads",
                f"{r['sdkit'] * 1e3:.3f} ms/step",
                f"{r['diffusers'] * 1e3:.3f} ms/step",
                ratio,
            )
        )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
