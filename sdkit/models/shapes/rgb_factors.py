"""Linear latent -> RGB preview factors for the embedded model's VAE, fitted by least squares on world scenes.

``Latents.preview`` shows latents without the VAE: ``rgb = latent_pixel @ factors + bias`` in [-1, 1], then
mapped to [0, 1]. Published factors for SD's VAE (ComfyUI's ``latent_formats.py``) are fitted the same way: pairs
of (one VAE latent pixel, the mean colour of the ``f x f`` image pixels it covers), one least-squares solve for
the ``[c, 3]`` matrix and the 3 biases. Here the images are rendered shapes-world scenes (``world.py``), encoded
with the model's own VAE (posterior mean); a held-out split measures the preview's error against the mean
colours, next to the error of the false-colour fallback (first 3 channels, min-max normalised).

The factors belong to the VAE's weights, so they are stored in its ``vae/config.json`` (keys
``sdkit.vae.RGB_FACTORS_KEY`` / ``RGB_BIAS_KEY``), where ``sdkit.vae`` reads them into the ``LatentSpace``; the
held-out errors go to ``sdkit.json``'s ``metrics``. A run that keeps the VAE frozen (``--init-from``) keeps
them; a retrained VAE is exported without them (previews fall back to false colour) until they are refitted.
Refit (deterministic: fixed scenes, fixed seed) with

    python -m sdkit.models.shapes.rgb_factors            # the shipped model; --dry-run to only print

How good a linear preview can be is limited by the VAE: this small VAE codes a thing's colour relative to its
surroundings (a red circle's latents on black and on white point in opposite directions), which no per-pixel
linear map can undo; it is close on dark backgrounds and wrong on light ones. ``previews.TinyDecoder`` or the
VAE itself are the faithful previews.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from sdkit.image import Image
from sdkit.latents import Latents, LatentSpace, RGBFactors
from sdkit.models.shapes import world

SCENES = 512  # 512 scenes x 64 latent pixels: 32768 pairs for 15 unknowns
HELD_OUT = 128  # the last scenes of the draw, never seen by the solve
SEED = 0
DECIMALS = 4  # as the published SD factors


@dataclass(frozen=True)
class RGBFit:
    """Fitted factors ``[c, 3]`` and bias, with the held-out mean absolute errors per channel (R, G, B, 0..1)."""

    factors: RGBFactors
    bias: tuple[float, float, float]
    held_out_mae: tuple[float, float, float]
    false_colour_mae: tuple[float, float, float]
    scenes: int
    held_out: int
    seed: int


def world_pairs(vae: Any, scenes: int, seed: int, batch: int = 64) -> tuple[Tensor, Tensor]:
    """``scenes`` world scenes (``world.sample_scenes(scenes, seed)``) encoded by ``vae`` (an ``sdkit.vae.VAE``):
    model-space latents ``[n, c, h, w]`` and the mean colour of each latent pixel's patch ``[n, 3, h, w]`` in [0, 1]."""
    images = world.render(world.sample_scenes(scenes, seed))
    latents = torch.cat([vae.encode(Image(images[i : i + batch])).tensor for i in range(0, scenes, batch)])
    return latents, F.avg_pool2d(images, vae.space.factor)


def solve(
    latents: Float[Tensor, "n c h w"], colours: Float[Tensor, "n 3 h w"]
) -> tuple[RGBFactors, tuple[float, float, float]]:
    """Least squares for ``colours * 2 - 1 ~ latents @ factors + bias`` over all latent pixels (float64)."""
    x = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).double()
    y = colours.permute(0, 2, 3, 1).reshape(-1, 3).double() * 2 - 1
    a = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    solution = torch.linalg.lstsq(a, y).solution.round(decimals=DECIMALS)  # [c + 1, 3]
    factors = tuple(tuple(float(v) for v in row) for row in solution[:-1])
    bias = tuple(float(v) for v in solution[-1])
    return factors, bias  # type: ignore[return-value]


def preview_mae(
    space: LatentSpace, latents: Float[Tensor, "n c h w"], colours: Float[Tensor, "n 3 h w"]
) -> tuple[float, float, float]:
    """Mean absolute error (R, G, B, in 0..1 units) of ``Latents.preview`` in ``space`` against ``colours``."""
    error = (Latents(latents, space).preview() - colours.float()).abs().mean(dim=(0, 2, 3))
    return tuple(round(float(e), 4) for e in error)  # type: ignore[return-value]


def fit_rgb_factors(vae: Any, scenes: int = SCENES, held_out: int = HELD_OUT, seed: int = SEED) -> RGBFit:
    """Fit on the first ``scenes - held_out`` scenes of the draw, measure on the rest."""
    if not 0 < held_out < scenes:
        raise ValueError(f"held_out must be in 1..{scenes - 1} (scenes={scenes}), got {held_out}")
    latents, colours = world_pairs(vae, scenes, seed)
    n = scenes - held_out
    factors, bias = solve(latents[:n], colours[:n])
    false_colour = replace(vae.space, rgb_factors=None, rgb_bias=(0.0, 0.0, 0.0))
    fitted = replace(false_colour, rgb_factors=factors, rgb_bias=bias)
    errors = [preview_mae(space, latents[n:], colours[n:]) for space in (fitted, false_colour)]
    return RGBFit(factors, bias, errors[0], errors[1], scenes, held_out, seed)


def write(folder: Path, fit: RGBFit) -> None:
    """Store ``fit`` with the model in ``folder``: factors in ``vae/config.json``, errors in ``sdkit.json``."""
    from sdkit.vae import RGB_BIAS_KEY, RGB_FACTORS_KEY

    config_path = folder / "vae" / "config.json"
    config = json.loads(config_path.read_text())
    config[RGB_FACTORS_KEY] = [list(row) for row in fit.factors]
    config[RGB_BIAS_KEY] = list(fit.bias)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    meta_path = folder / "sdkit.json"
    meta = json.loads(meta_path.read_text())
    # "vae_" metrics describe the VAE: a training run that keeps the VAE frozen keeps them (and its config)
    meta.setdefault("metrics", {}).update(
        vae_rgb_preview_mae=list(fit.held_out_mae), vae_false_colour_preview_mae=list(fit.false_colour_mae)
    )
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    from sdkit.loading import EMBEDDED, load_vae

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default=str(EMBEDDED["shapes"]), help="the model folder (default: shipped)")
    parser.add_argument("--scenes", type=int, default=SCENES)
    parser.add_argument("--held-out", type=int, default=HELD_OUT)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--dry-run", action="store_true", help="print the fit, write nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a few hundred 64 px images: threads only contend
    vae = load_vae(args.folder, family="shapes")
    fit = fit_rgb_factors(vae, args.scenes, args.held_out, args.seed)
    print("factors (rows: latent channels; columns: R, G, B):")
    for row in fit.factors:
        print("  ", row)
    print("bias:", fit.bias)
    print("held-out mean abs error (R, G, B):", fit.held_out_mae, "false colour:", fit.false_colour_mae)
    if not args.dry_run:
        write(Path(args.folder), fit)
        print(f"wrote {Path(args.folder) / 'vae' / 'config.json'} and sdkit.json")


if __name__ == "__main__":
    main()
