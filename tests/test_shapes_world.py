"""The shapes world: deterministic scenes, captions that say what is drawn, depth occlusion, OpenPose."""

from __future__ import annotations

import torch

from sdkit.models.shapes import world
from sdkit.models.shapes.captions import COLORS, PLACES, format_request, parse_caption, token_ids


def test_same_seed_same_images() -> None:
    a = world.render(world.sample_scenes(16, 123))
    b = world.render(world.sample_scenes(16, 123))
    c = world.render(world.sample_scenes(16, 124))
    assert a.shape == (16, 3, 64, 64) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert world.sample_scenes(4, g1) == world.sample_scenes(4, g2)


def test_captions_name_what_is_drawn() -> None:
    for scene in world.sample_scenes(100, 7, full_caption=True):
        text = world.caption(scene)
        assert f"{scene.background} background" in text
        for t in scene.things:
            assert t.kind in text and PLACES[t.position] in text and t.size in text
            assert t.kind == "person" or t.color in text
            assert t.color != scene.background  # the background never hides a thing
            assert world.position_of(t.x, t.y) == t.position  # position = region of the centre
        assert format_request(parse_caption(text)) == text


def test_short_captions_are_in_the_distribution() -> None:
    texts = [world.caption(s) for s in world.sample_scenes(300, 1)]
    assert "a red circle" in texts or any(len(t.split()) == 3 for t in texts)
    assert any("background" not in t for t in texts) and any(" person" in t for t in texts)
    assert any(r in t for t in texts for r in ("above", "below", "left of", "right of"))


def test_token_ids_match_the_real_clip_tokenizer() -> None:
    from sdkit.text.vocabulary import hf_clip_tokenizer

    texts = [world.caption(s) for s in world.sample_scenes(200, 3)] + [""]
    ref = hf_clip_tokenizer()(texts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert torch.equal(token_ids(texts), ref)


def _overlapping(near_first: bool) -> world.Scene:
    red = world.Thing("circle", "red", "large", "center", 32, 32, 11, 0.2 if near_first else 0.7)
    blue = world.Thing("square", "blue", "large", "center", 36, 32, 11, 0.7 if near_first else 0.2)
    return world.Scene((red, blue), "white")


def test_nearer_things_occlude_and_depth_is_bright_near() -> None:
    img = world.render([_overlapping(True), _overlapping(False)])
    red, blue = torch.tensor(COLORS["red"]) / 255, torch.tensor(COLORS["blue"]) / 255
    assert torch.allclose(img[0, :, 32, 34], red) and torch.allclose(img[1, :, 32, 34], blue)
    depth = world.render_depth([_overlapping(True)])
    assert depth.shape == (1, 1, 64, 64)
    assert abs(float(depth[0, 0, 32, 34]) - 0.8) < 1e-5  # the near circle (depth 0.2) in front
    assert abs(float(depth[0, 0, 32, 44]) - 0.3) < 1e-5  # the far square's visible edge
    assert float(depth[0, 0, 2, 2]) == 0.0  # background is farthest


def test_pose_skeleton_has_the_standard_openpose_colours() -> None:
    scene = world.sample_scenes(1, 0, person_fraction=1.0, two_fraction=0.0)[0]
    kp = world.pose_keypoints([scene])
    assert kp.shape == (1, 18, 2) and not kp.isnan().any()
    img = world.render_pose(kp)
    colors = torch.tensor(world.POSE_COLORS, dtype=torch.float32) / 255
    nose = kp[0, 0].long()
    assert torch.allclose(img[0, :, nose[1], nose[0]], colors[0])  # keypoint 0 (nose): full red
    # Middle of the left upper leg (limb 11: l_hip -> l_knee) away from joints: 0.6 x its colour.
    mid = ((kp[0, 11] + kp[0, 12]) / 2).long()
    assert torch.allclose(img[0, :, mid[1], mid[0]], 0.6 * colors[10])
    allowed = torch.cat([torch.zeros(1, 3), colors, 0.6 * colors])
    pixels = img[0].permute(1, 2, 0).reshape(-1, 3)
    assert torch.cdist(pixels, allowed).min(1).values.max() < 1e-5  # nothing but the standard colours
    assert (pixels.sum(1) > 0).sum() > 100  # the figure is drawn
    empty = world.render_pose(world.pose_keypoints(world.sample_scenes(1, 0, person_fraction=0.0)))
    assert empty.abs().sum() == 0  # no person: black
    figure = world.render([scene])
    bg = torch.tensor(COLORS[scene.background]) / 255
    assert ((figure[0] - bg[:, None, None]).abs().sum(0) > 0.1).sum() > 60  # the person is painted


def test_any_resolution_draws_the_same_scene() -> None:
    """At 128 pixels the world draws the same scenes: area-averaged back to 64 they match the 64-pixel renders except
    along anti-aliased edges, and the evaluator (which looks at 64 pixels) scores them all right."""
    import torch.nn.functional as F

    from sdkit.models.shapes import evaluate

    scenes = world.sample_scenes(100, 5, person_fraction=0.2)
    small, large = world.render(scenes), world.render(scenes, size=128)
    assert large.shape == (100, 3, 128, 128)
    difference = (F.interpolate(large, size=64, mode="area") - small).abs()
    assert float(difference.mean()) < 1e-3 and float((difference > 0.05).float().mean()) < 0.01
    depth = world.render_depth(scenes, size=128)
    assert torch.allclose(F.interpolate(depth, size=64, mode="area"), world.render_depth(scenes), atol=0.35)
    full = world.sample_scenes(100, 6, person_fraction=0.0, full_caption=True)
    assert evaluate.evaluate(world.render(full, size=128), full)["all"] == 1.0
