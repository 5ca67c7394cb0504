"""sdkit vs diffusers on full-size SD 1.5 and SDXL architectures (random weights), on one GPU, in one run.

    python bench/gpu_benchmark.py                      # CUDA, fp16, SD 1.5 512px + SDXL 1024px, 30 steps, CFG 7.5
    python bench/gpu_benchmark.py --tiny --device cpu  # the same code path on tiny configs (a smoke test, ~1 min)

Both sides run the very same modules (UNet, VAE, text encoders built once from the published configs with random
weights; tokenizers from ``sdkit.text.vocabulary``), the same Euler sigmas and the same starting noise:
``StableDiffusion(XL)Pipeline`` is built from the kit's modules. Stages, in order (each skipped once
``--budget-s`` is spent; the JSON is rewritten after every stage, so a cut-off run keeps what it measured):

1. sampling loop: sdkit's ``txt2img`` recipe vs the pipeline with ``prompt_embeds`` and ``output_type="latent"``
   (text encoded once, outside the timing): per-step time and ratio; plus the host-device syncs counted with
   ``torch.cuda.set_sync_debug_mode("warn")`` during sdkit's loop, ``Kit.generate`` and diffusers' loop;
2. end to end: ``Kit.generate`` vs ``pipe(prompt)`` to PIL images: time, peak ``torch.cuda.max_memory_allocated``;
3. a 4 x 4 seed x CFG ``sdkit.sweep.sweep`` vs 16 sequential ``Kit.generate`` (SD 1.5 only);
4. ``Kit.channels_last().compile()`` (torch.compile, mode "default", in place): compile time, then sdkit's
   compiled loop vs diffusers' eager loop from stage 1 (SD 1.5 only).

Writes ``gpu_benchmark.json`` to ``--out`` (default: ``$OUT`` if set, else the current folder). Needs only torch,
transformers, diffusers and sdkit.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import device_line, euler_scheduler, interleaved

PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed"
NEGATIVE = "blurry, low quality"


# ------------------------------------------------------------------------------------------ models
def _text_model(hidden: int, layers: int, heads: int, *, gelu: bool, projection: int | None = None) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=1 if gelu else 49407, hidden_act="gelu" if gelu else "quick_gelu",
        projection_dim=projection or hidden,
    )  # fmt: skip
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _vae(tiny: bool, scaling: float) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16) if tiny else (128, 256, 512, 512),
        layers_per_block=1 if tiny else 2,
        norm_num_groups=8 if tiny else 32,
        latent_channels=4,
        scaling_factor=scaling,
        force_upcast=False,  # both sides decode in the model dtype (diffusers' SDXL pipeline would upcast to fp32)
    )


def _unet(family: str, tiny: bool) -> Any:
    from diffusers import UNet2DConditionModel

    if family == "sd1":
        if tiny:
            return UNet2DConditionModel(
                block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, cross_attention_dim=64,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8,
            )  # fmt: skip
        return UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)  # SD 1.5's config
    common: dict[str, Any] = dict(
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        use_linear_projection=True, addition_embed_type="text_time",
    )  # fmt: skip
    if tiny:
        return UNet2DConditionModel(
            **common, block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8,
            cross_attention_dim=64 + 96, attention_head_dim=(2, 4, 4), transformer_layers_per_block=(1, 1, 2),
            addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 96,
        )  # fmt: skip
    return UNet2DConditionModel(  # SDXL base 1.0's config
        **common, sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2,
        cross_attention_dim=2048, attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10),
        addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
    )  # fmt: skip


def build(family: str, tiny: bool, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """(kit, pipeline) over one set of modules, created on ``device`` directly (fast random init)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from sdkit.kit import Kit
    from sdkit.text.vocabulary import hf_clip_tokenizer

    torch.manual_seed(0)
    with torch.device(device):
        parts: dict[str, Any] = {"unet": _unet(family, tiny), "tokenizer": hf_clip_tokenizer()}
        if family == "sd1":
            parts["vae"] = _vae(tiny, 0.18215)
            parts["text_encoder"] = _text_model(64, 2, 4, gelu=False) if tiny else _text_model(768, 12, 12, gelu=False)
        else:
            parts["vae"] = _vae(tiny, 0.13025)
            parts["text_encoder"] = _text_model(64, 2, 4, gelu=False) if tiny else _text_model(768, 12, 12, gelu=False)
            parts["text_encoder_2"] = (
                _text_model(96, 2, 4, gelu=True, projection=96)
                if tiny
                else _text_model(1280, 32, 20, gelu=True, projection=1280)
            )
            parts["tokenizer_2"] = hf_clip_tokenizer(pad_token="!")
            parts["index"] = {"force_zeros_for_empty_prompt": True}
    parts["scheduler"] = euler_scheduler()
    kit = Kit.from_components(parts, family=family, name=f"random {family}", device=device, dtype=dtype)
    common = dict(vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"])
    if family == "sd1":
        pipe = StableDiffusionPipeline(
            **common, unet=parts["unet"], scheduler=parts["scheduler"], safety_checker=None,
            feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
    else:
        pipe = StableDiffusionXLPipeline(
            **common, text_encoder_2=parts["text_encoder_2"], tokenizer_2=parts["tokenizer_2"], unet=parts["unet"],
            scheduler=parts["scheduler"], force_zeros_for_empty_prompt=True, add_watermarker=False,
        )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return kit, pipe


# ------------------------------------------------------------------------------------------ measuring
def synced(device: torch.device, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` followed by a device synchronisation, so wall time covers the queued kernels."""

    def run() -> Any:
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return run


def count_syncs(device: torch.device, fn: Callable[[], Any]) -> int | None:
    """Host-device synchronisations during ``fn`` (``torch.cuda.set_sync_debug_mode("warn")``); None off CUDA."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def peak_memory(device: torch.device, fn: Callable[[], Any]) -> float | None:
    """Peak ``torch.cuda.max_memory_allocated`` during ``fn``, in GiB; None off CUDA."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


class Runner:
    """The callables one model is measured with: sdkit's loop and generate, diffusers' loop and pipeline."""

    def __init__(self, family: str, kit: Any, pipe: Any, size: int, steps: int, device: torch.device) -> None:
        from sdkit.noise import randn

        self.family, self.kit, self.pipe, self.size, self.steps, self.device = family, kit, pipe, size, steps, device
        scheduler = euler_scheduler()
        scheduler.set_timesteps(steps)
        self.sigmas = scheduler.sigmas.clone().float()  # diffusers' own sigmas, walked by both
        self.space = kit.latent_space or kit.vae.space
        latent = size // self.space.factor
        self.noise = randn([1], (self.space.channels, latent, latent), device=device, dtype=kit.dtype)
        cond, uncond = kit.prompts.encode_pair(PROMPT, NEGATIVE)
        if family == "sdxl":
            from sdkit.sdxl import add_time_ids

            cond, uncond = add_time_ids(kit.denoiser.model.unet, cond, uncond, size, size)
        self.cond, self.uncond = cond.to(device, kit.dtype), uncond.to(device, kit.dtype)

    def sdkit_loop(self) -> Any:
        from sdkit.recipes import txt2img

        with torch.no_grad():
            return txt2img(
                self.kit.denoiser, self.space, self.cond, self.uncond, sigmas=self.sigmas, sampler="euler",
                cfg_scale=7.5, seed=1, width=self.size, height=self.size, device=self.device, dtype=self.kit.dtype,
            ).tensor  # fmt: skip

    def diffusers_loop(self) -> Any:
        embeds: dict[str, Any] = dict(prompt_embeds=self.cond.embeds, negative_prompt_embeds=self.uncond.embeds)
        if self.family == "sdxl":
            embeds.update(pooled_prompt_embeds=self.cond.pooled, negative_pooled_prompt_embeds=self.uncond.pooled)
        with torch.no_grad():
            return self.pipe(
                **embeds, latents=self.noise.clone(), num_inference_steps=self.steps, guidance_scale=7.5,
                height=self.size, width=self.size, output_type="latent",
            ).images  # fmt: skip

    def sdkit_generate(self) -> Any:
        self.kit.prompts.clear_cache()  # encode the prompt every run, as diffusers does
        return self.kit.generate(
            PROMPT, NEGATIVE, seed=1, steps=self.steps, cfg=7.5, sampler="euler", schedule=self.sigmas,
            width=self.size, height=self.size,
        ).images  # fmt: skip

    def diffusers_generate(self) -> Any:
        with torch.no_grad():
            return self.pipe(
                PROMPT, negative_prompt=NEGATIVE, num_inference_steps=self.steps, guidance_scale=7.5,
                height=self.size, width=self.size, generator=torch.Generator().manual_seed(1), output_type="pil",
            ).images  # fmt: skip


def loop_stage(r: Runner, repeats: int) -> dict[str, Any]:
    t = interleaved({"sdkit": synced(r.device, r.sdkit_loop), "diffusers": synced(r.device, r.diffusers_loop)}, repeats)
    ours, theirs = r.sdkit_loop(), r.diffusers_loop()
    return {
        "sdkit_ms_per_step": 1e3 * t["sdkit"] / r.steps,
        "diffusers_ms_per_step": 1e3 * t["diffusers"] / r.steps,
        "ratio": t["sdkit"] / t["diffusers"],
        "max_abs_latent_diff": float((ours.float() - theirs.float()).abs().max()),
        "syncs_sdkit_loop": count_syncs(r.device, r.sdkit_loop),
        "syncs_sdkit_generate": count_syncs(r.device, r.sdkit_generate),
        "syncs_diffusers_loop": count_syncs(r.device, r.diffusers_loop),
    }


def end_to_end_stage(r: Runner, repeats: int) -> dict[str, Any]:
    fns = {"sdkit": synced(r.device, r.sdkit_generate), "diffusers": synced(r.device, r.diffusers_generate)}
    t = interleaved(fns, repeats)
    return {
        "sdkit_s": t["sdkit"],
        "diffusers_s": t["diffusers"],
        "ratio": t["sdkit"] / t["diffusers"],
        "sdkit_peak_gib": peak_memory(r.device, r.sdkit_generate),
        "diffusers_peak_gib": peak_memory(r.device, r.diffusers_generate),
        "sdkit_notes": r.kit.vae.last_decode_note,
    }


def sweep_stage(r: Runner) -> dict[str, Any]:
    from sdkit.sweep import sweep

    seeds, cfgs = [1, 2, 3, 4], [1.0, 3.0, 7.5, 12.0]
    opts = dict(steps=r.steps, sampler="euler", schedule=r.sigmas, width=r.size, height=r.size)

    def grid() -> Any:
        return sweep(r.kit, PROMPT, x=("cfg", cfgs), y=("seed", seeds), **opts)

    def sequential() -> Any:
        return [r.kit.generate(PROMPT, seed=s, cfg=c, **opts) for s in seeds for c in cfgs]

    synced(r.device, grid)()  # warm-up at the sweep's batch size (generate is warm from the earlier stages)
    t = interleaved({"sweep": synced(r.device, grid), "sequential": synced(r.device, sequential)}, 1, warmup=0)
    return {"sweep_s": t["sweep"], "sequential_s": t["sequential"], "speedup": t["sequential"] / t["sweep"]}


def compile_stage(r: Runner, repeats: int, eager_diffusers_ms: float) -> dict[str, Any]:
    """sdkit's speed options together: channels-last UNet weights, then ``torch.compile`` (mode "default", no
    autotuning: it compiles in about a minute), with inductor turning 1x1 convolutions into matrix products (the
    setting diffusers' own torch.compile guide uses)."""
    import torch._inductor.config as inductor

    previous, inductor.conv_1x1_as_mm = inductor.conv_1x1_as_mm, True
    start = time.perf_counter()
    r.kit.channels_last().compile(mode="default")
    try:
        synced(r.device, r.sdkit_loop)()  # the first call compiles
    finally:
        inductor.conv_1x1_as_mm = previous
    compile_s = time.perf_counter() - start
    t = interleaved({"sdkit_compiled": synced(r.device, r.sdkit_loop)}, repeats, warmup=0)
    per_step = 1e3 * t["sdkit_compiled"] / r.steps
    return {
        "options": "channels_last + torch.compile(mode='default') with inductor conv_1x1_as_mm",
        "compile_s": compile_s,
        "sdkit_compiled_ms_per_step": per_step,
        "diffusers_eager_ms_per_step": eager_diffusers_ms,
        "ratio_vs_eager_diffusers": per_step / eager_diffusers_ms,
    }


# ------------------------------------------------------------------------------------------ driver
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default=None, help="default: fp16 on CUDA, else fp32")
    p.add_argument("--tiny", action="store_true", help="tiny configs at 64 px, 4 steps: a smoke test (CPU)")
    p.add_argument("--steps", type=int, default=None, help="default 30 (4 with --tiny)")
    p.add_argument("--repeats", type=int, default=7, help="rounds per stage (SDXL: 2 fewer); medians are reported")
    p.add_argument("--models", nargs="+", default=["sd1", "sdxl"], choices=["sd1", "sdxl"])
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--budget-s", type=float, default=240.0, help="skip the stages that start after this many seconds")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    args = p.parse_args()
    start = time.perf_counter()
    device = torch.device(args.device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[
        args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    ]
    steps = args.steps or (4 if args.tiny else 30)
    env = device_line(torch.get_num_threads()) if device.type == "cpu" else torch.cuda.get_device_name(device)
    import diffusers
    import transformers

    versions = {"torch": torch.__version__, "diffusers": diffusers.__version__}
    versions["transformers"] = transformers.__version__
    results: dict[str, Any] = {"device": env, "versions": versions, "dtype": str(dtype), "steps": steps, "cfg": 7.5}
    results["tiny"] = args.tiny
    out = Path(args.out) / "gpu_benchmark.json"

    def save() -> None:
        results["elapsed_s"] = time.perf_counter() - start
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))

    def stage(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        if time.perf_counter() - start > args.budget_s:
            results[name] = {"skipped": f"time budget of {args.budget_s:.0f} s spent"}
        else:
            t = time.perf_counter()
            try:
                results[name] = {**fn(), "stage_s": time.perf_counter() - t}
            except Exception as e:  # a stage that fails (e.g. out of memory) must not lose the others
                results[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        print(name, json.dumps(results[name]), flush=True)
        save()
        return results[name]

    pending_compile: tuple[Runner, int, float] | None = None
    for family in args.models:
        size = 64 if args.tiny else 512 if family == "sd1" else 1024
        t = time.perf_counter()
        kit, pipe = build(family, args.tiny, device, dtype)
        results[f"{family}_build_s"] = time.perf_counter() - t
        r = Runner(family, kit, pipe, size, steps, device)
        repeats = args.repeats if family == "sd1" else max(1, args.repeats - 2)
        loop = stage(f"{family}_{size}_loop", lambda r=r, n=repeats: loop_stage(r, n))
        stage(f"{family}_{size}_end_to_end", lambda r=r, n=repeats: end_to_end_stage(r, n))
        if family == "sd1" and not args.no_sweep:
            stage(f"{family}_{size}_sweep_4x4", lambda r=r: sweep_stage(r))
        if family == "sd1" and not args.no_compile and loop and "diffusers_ms_per_step" in loop:
            pending_compile = (r, repeats, float(loop["diffusers_ms_per_step"]))  # last: the slowest stage
        del kit, pipe, r
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if pending_compile is not None:
        stage("sd1_compile", lambda: compile_stage(*pending_compile))
    save()
    print(f"wrote {out} ({results['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
