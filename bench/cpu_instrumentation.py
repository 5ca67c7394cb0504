"""What looking inside costs: ``Kit.generate`` with and without each instrument, on the embedded model.

    python bench/cpu_instrumentation.py [--repeats 15] [--threads N] [--steps 20]

- attention capture: ``with capture_attention(kit): kit.generate(...)`` (every cross-attention layer, every
  step, heads kept) vs a plain ``kit.generate``; also with ``layers=["mid_block"]`` (the lowest resolution);
- linear previews: an ``on_step`` hook computing ``Latents(step.x, space).preview()`` at every step (through
  ``sdkit.recipes.txt2img``, which takes the hook) vs the same recipe with no hook;
- trace: ``kit.generate(trace=True)`` vs ``trace=False``.

Each pair alternates round by round; medians and ratios (with / without) are printed, plus README table rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from common import cpu_parser, interleaved, markdown_row, parse_cpu_args

import sdkit
from sdkit.attention import capture_attention
from sdkit.latents import Latents
from sdkit.recipes import txt2img
from sdkit.schedules import make_sigmas
from sdkit.types import Step

PROMPT = "a large red circle on the left, yellow background"


def pairs(kit: Any, steps: int) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    """name -> (with the instrument, without it)."""

    def plain() -> Any:
        return kit.generate(PROMPT, seed=1, steps=steps, cfg=7.5, sampler="euler")

    def captured() -> Any:
        with capture_attention(kit) as maps:
            plain()
        assert len(maps) > 0
        return maps

    def captured_mid() -> Any:
        with capture_attention(kit, layers=["mid_block"]) as maps:
            plain()
        assert len(maps) > 0
        return maps

    def traced() -> Any:
        return kit.generate(PROMPT, seed=1, steps=steps, cfg=7.5, sampler="euler", trace=True)

    space = kit.latent_space or kit.vae.space
    cond, uncond = kit.prompts.encode_pair(PROMPT, "")
    sigmas = make_sigmas("normal", steps, kit.denoiser.schedule, family=kit.family)
    previews: list[torch.Tensor] = []

    def recipe(on_step: Callable[[Step], None] | None) -> Any:
        with torch.no_grad():
            return txt2img(
                kit.denoiser, space, cond, uncond, sigmas=sigmas, sampler="euler", cfg_scale=7.5, seed=1,
                width=kit.defaults.width, height=kit.defaults.height, on_step=on_step,
            )  # fmt: skip

    def preview_hook(step: Step) -> None:
        previews.append(Latents(step.x, space).preview())

    def with_previews() -> Any:
        previews.clear()
        out = recipe(preview_hook)
        assert len(previews) == steps
        return out

    return {
        "attention capture, all layers": (captured, plain),
        "attention capture, mid_block": (captured_mid, plain),
        "linear preview every step": (with_previews, lambda: recipe(None)),
        "trace=True": (traced, plain),
    }


def main() -> None:
    args = parse_cpu_args(cpu_parser(__doc__, repeats=15))
    kit = sdkit.load("shapes")
    rows = []
    for name, (on, off) in pairs(kit, args.steps).items():
        t = interleaved({"on": on, "off": off}, args.repeats)
        ratio = t["on"] / t["off"]
        print(f"{name}: with {t['on'] * 1e3:.1f} ms, without {t['off'] * 1e3:.1f} ms, ratio {ratio:.3f}")
        rows.append(
            markdown_row(
                f"{name} (shapes 64px, {args.steps} steps)",
                f"python bench/cpu_instrumentation.py --threads {args.threads}",
                f"CPU, {args.threads} threads",
                f"{t['on'] * 1e3:.0f} ms (with)",
                f"{t['off'] * 1e3:.0f} ms (without)",
                ratio,
            )
        )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
