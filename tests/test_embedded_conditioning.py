"""Measured effect of image conditioning on the embedded "shapes" model: inpainting "a green square" puts
green in the hole, and the depth / pose ControlNets move the object / figure to where their control image
puts it. They run on the weights that ship in the package (marker ``embedded``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.embedded

YELLOW = (245, 220, 40)  # the shapes world's palette (sdkit.models.shapes.captions.COLORS)


@pytest.fixture(scope="module")
def shapes():
    import sdkit

    return sdkit.load("shapes")


def centroid_x(image, color, tolerance: float = 80.0) -> float:
    """Mean x of the pixels near ``color`` (Euclidean distance in RGB)."""
    a = np.asarray(image).astype(np.float32)
    near = np.linalg.norm(a - np.array(color, np.float32), axis=2) < tolerance
    assert near.sum() >= 10, f"too few pixels of colour {color} ({near.sum()})"
    return float(np.nonzero(near)[1].mean())


def hole_colour(shapes, prompt: str, seed: int) -> str:
    """Inpaint the centre of a plain yellow picture; the palette colour of the object painted in the hole."""
    from sdkit.models.shapes.captions import COLORS

    init = np.zeros((64, 64, 3), np.uint8) + np.array(YELLOW, np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[20:44, 20:44] = True
    out = np.asarray(shapes.generate(prompt, init_image=init, mask=mask, seed=seed).images[0]).astype(np.float32)
    grown = torch.nn.functional.max_pool2d(torch.from_numpy(mask).float()[None, None], 25, 1, 12)[0, 0] > 0
    keep = ~grown.numpy()  # beyond the default mask blur's reach (4 px * 3)
    assert np.array_equal(out[keep], init[keep].astype(np.float32))  # outside: untouched
    # The painted object's colour: the palette colour nearest to most of its interior, i.e. the hole pixels at
    # least 75% as far from the yellow background as the farthest one. Its anti-aliased rim (red blended into
    # yellow looks orange) is left out.
    hole = out[mask]
    distance = np.linalg.norm(hole - np.array(YELLOW, np.float32), axis=1)
    assert distance.max() > 60, "nothing was painted in the hole"
    interior = hole[distance >= 0.75 * distance.max()]
    names = list(COLORS)
    palette = np.array([COLORS[n] for n in names], np.float32)
    votes = np.bincount(np.linalg.norm(interior[:, None] - palette[None], axis=2).argmin(1), minlength=len(names))
    return names[int(votes.argmax())]


def test_inpainting_a_green_square_puts_green_in_the_hole(shapes):
    green = [hole_colour(shapes, "a large green square in the center, yellow background", s) for s in range(4)]
    red = [hole_colour(shapes, "a large red square in the center, yellow background", s) for s in range(4)]
    orange = [hole_colour(shapes, "a large orange square in the center, yellow background", s) for s in range(4)]
    assert green.count("green") >= 3, green
    assert red.count("red") >= 3 and orange.count("orange") >= 3, (red, orange)  # the colour follows the prompt


def test_depth_controlnet_moves_the_object(shapes):
    from sdkit.models.shapes.world import Scene, Thing, render_depth

    assert "controlnet_depth" in shapes.extras
    xs = {}
    for side, x in (("left", 16.0), ("right", 48.0)):
        disc = Thing("circle", "red", "large", side, x, 32.0, 11.0, 0.3)
        depth = render_depth([Scene((disc,), "yellow")])[0]
        gens = [
            shapes.generate("a large red circle, yellow background", control=("controlnet_depth", depth), seed=s)
            for s in range(3)
        ]
        xs[side] = np.mean([centroid_x(g.images[0], (225, 35, 35)) for g in gens])
    assert xs["left"] < 26 < 38 < xs["right"], xs


def test_pose_controlnet_moves_the_figure(shapes):
    """Over 6 seeds, the generated figure covers the limbs of the skeleton it was given far more than those of the
    same skeleton on the other side (the evaluator's pose coverage). One seed's starting noise can still outvote
    the skeleton (measured: about 1 in 4), so single seeds are not asserted."""
    import random

    from sdkit.models.shapes import evaluate, world

    assert "controlnet_pose" in shapes.extras
    keypoints = {
        side: torch.tensor([world._person_keypoints(random.Random(0), x, 32.0, world.PERSON_RADIUS["large"])])
        for side, x in (("left", 18.0), ("right", 46.0))
    }
    for side, other in (("left", "right"), ("right", "left")):
        skeleton = world.render_pose(keypoints[side])[0]
        images = [
            shapes.generate(
                "a large blue person, yellow background", control=("controlnet_pose", skeleton), seed=s
            ).images[0]
            for s in range(6)
        ]
        x = evaluate.to_tensor(images)
        own = float(evaluate.pose_coverage(x, keypoints[side].expand(6, -1, -1)).mean())
        elsewhere = float(evaluate.pose_coverage(x, keypoints[other].expand(6, -1, -1)).mean())
        assert own >= 0.5 and own - elsewhere >= 0.4, (side, own, elsewhere)  # measured 0.77/0.15, 0.68/0.07
