"""The evaluator's ceiling: how the scorecard's own scenes score when rendered exactly, and after a VAE round trip.

    python -m sdkit.models.shapes.ceiling                    # the shipped VAE, 200 scenes per scorecard row
    python -m sdkit.models.shapes.ceiling --model runs/v2/model -n 500

For each scorecard row (``scorecard.row_scenes``, seed 0: the scenes the scorecard's prompts describe) the scenes are
rendered by the world's renderer, scored by the evaluator (``clean``: the evaluator's own error, ~0), then encoded and
decoded by the model's VAE (posterior mean, 8-bit like a saved image) and scored again (``vae``). No UNet can score
above the ``vae`` row on the same scenes, since every generated image passes through the same decoder; ``psnr`` is the
round trip's mean PSNR in dB.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from sdkit.models.shapes import world
from sdkit.models.shapes.evaluate import psnr
from sdkit.models.shapes.scorecard import ROWS, row_scenes, score

WEIGHTS = Path(__file__).resolve().parent / "weights"


@torch.no_grad()
def round_trip(vae: Any, images: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """``images`` in [0, 1] through the VAE (posterior mean, no sampling) and back, rounded to 8 bits."""
    out = []
    for part in images.split(chunk):
        z = vae.encode(part * 2 - 1).latent_dist.mean
        out.append(((vae.decode(z).sample.float() + 1) / 2).clamp(0, 1))
    return (torch.cat(out) * 255).round() / 255


def ceiling(
    vae: Any, *, n: int = 200, seed: int = 0, rows: tuple[str, ...] = ROWS, size: int = world.SIZE
) -> list[dict[str, Any]]:
    """One dict per row: ``row``, ``n``, ``clean`` and ``vae`` (the evaluator's accuracies) and ``psnr``. ``size``:
    render the scenes at this many pixels (the evaluator looks at them area-averaged to 64)."""
    results = []
    for row in rows:
        scenes = row_scenes(row, n, seed)
        clean = (world.render(scenes, size=size) * 255).round() / 255
        trip = round_trip(vae, clean)
        results.append({"row": row, "n": n, "clean": score(clean, scenes), "vae": score(trip, scenes),
                        "psnr": round(psnr(trip, clean), 2)})  # fmt: skip
    return results


def load_vae(folder: str | Path = WEIGHTS) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(Path(folder) / "vae", torch_dtype=torch.float32).eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(WEIGHTS), help="an exported shapes model folder")
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--size", type=int, default=world.SIZE, help="render the scenes at this many pixels")
    args = parser.parse_args(argv)
    from sdkit.limits import default_threads

    torch.set_num_threads(args.threads or default_threads())
    for result in ceiling(load_vae(args.model), n=args.n, seed=args.seed, size=args.size):
        print(json.dumps(result), flush=True)


__all__ = ["ceiling", "round_trip", "psnr", "load_vae"]

if __name__ == "__main__":
    main()
