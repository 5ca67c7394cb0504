"""Regenerate the README's pictures from the embedded shapes model (CPU, a few seconds).

    python docs/readme_images.py            # writes docs/images/hero.png and docs/images/controlnets.png

Each picture is a strip of 64x64 images shown at 2x, generated with 20 Euler steps at CFG 7.5.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from PIL import Image as PILImage

import sdkit
from sdkit.image import Image
from sdkit.models.shapes import world

IMAGES = Path(__file__).resolve().parent / "images"
HERO_PROMPTS = [
    "a large red circle on the left, yellow background",
    "a small blue square at the top, white background",
    "a large green triangle in the center, purple background",
    "a large orange circle on the right, black background",
]


def strip(tiles: list[PILImage.Image], scale: int = 2, gap: int = 8) -> PILImage.Image:
    """Tiles side by side, each enlarged ``scale`` times (nearest neighbour: the pixels as generated), with
    ``gap`` white pixels between them."""
    w, h = (scale * n for n in tiles[0].size)
    sheet = PILImage.new("RGB", (len(tiles) * (w + gap) - gap, h), "white")
    for k, tile in enumerate(tiles):
        sheet.paste(tile.convert("RGB").resize((w, h), PILImage.Resampling.NEAREST), (k * (w + gap), 0))
    return sheet


def control_picture(image: torch.Tensor) -> PILImage.Image:
    """A ``[c, h, w]`` control image in [0, 1] (1 or 3 channels) as an RGB picture."""
    return Image(image.expand(3, -1, -1)[None]).to_pil()[0]


def hero(kit: sdkit.Kit) -> PILImage.Image:
    return strip([kit.generate(p, seed=7, steps=20, cfg=7.5).images[0] for p in HERO_PROMPTS])


def controlnets(kit: sdkit.Kit) -> PILImage.Image:
    """Control image, then result: a depth map with a near disc on the left / right, and an OpenPose skeleton
    on the left / right. The prompts say nothing about where."""
    tiles = []
    for x in (16.0, 48.0):
        disc = world.Thing("circle", "red", "large", "left", x, 32.0, 11.0, 0.3)
        depth = world.render_depth([world.Scene((disc,), "yellow")])[0]
        gen = kit.generate("a large red circle, yellow background", control=("controlnet_depth", depth), seed=0)
        tiles += [control_picture(depth), gen.images[0]]
    for x in (18.0, 46.0):
        keypoints = world._person_keypoints(random.Random(0), x, 32.0, world.PERSON_RADIUS["large"])
        skeleton = world.render_pose(torch.tensor([keypoints]))[0]
        gen = kit.generate("a large blue person, yellow background", control=("controlnet_pose", skeleton), seed=0)
        tiles += [control_picture(skeleton), gen.images[0]]
    return strip(tiles)


def main() -> None:
    kit = sdkit.load("shapes")
    IMAGES.mkdir(parents=True, exist_ok=True)
    for name, make in (("hero", hero), ("controlnets", controlnets)):
        path = IMAGES / f"{name}.png"
        make(kit).save(path, optimize=True)
        print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
