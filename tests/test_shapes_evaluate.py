"""The evaluator scores the world's own renders ~100% and wrong prompts low."""

from __future__ import annotations

import torch
from PIL import Image

from sdkit.models.shapes import evaluate as ev
from sdkit.models.shapes import world


def test_rendered_scenes_score_full_marks() -> None:
    scenes = world.sample_scenes(200, 11, full_caption=True)
    result = ev.evaluate(world.render(scenes), scenes)
    for key in ("color", "shape", "size", "position", "background", "two_objects", "all"):
        assert result[key] >= 0.98, (key, result[key])
    short = world.sample_scenes(100, 12)  # captions that leave attributes out
    result = ev.evaluate(world.render(short), [world.caption(s) for s in short])
    assert result["all"] >= 0.98


def test_wrong_prompts_score_low() -> None:
    scenes = world.sample_scenes(100, 13, full_caption=True)
    images = world.render(scenes)
    shuffled = [scenes[(i + 1) % len(scenes)] for i in range(len(scenes))]
    result = ev.evaluate(images, shuffled)
    assert result["color"] < 0.5 and result["all"] < 0.1
    assert len(result["items"]) == 100


def test_pil_input_and_single_prompt() -> None:
    img = world.render(world.sample_scenes(1, 0, full_caption=True, two_fraction=0.0, person_fraction=0.0))
    scene = world.sample_scenes(1, 0, full_caption=True, two_fraction=0.0, person_fraction=0.0)[0]
    pil = Image.fromarray((img[0].permute(1, 2, 0) * 255).round().byte().numpy())
    assert ev.evaluate([pil], [world.caption(scene)])["all"] == 1.0
    blank = torch.ones(1, 3, 64, 64)
    assert ev.evaluate(blank, ["a red circle"])["color"] == 0.0


def test_controlnet_metrics() -> None:
    scenes = world.sample_scenes(32, 14)
    images, depth = world.render(scenes), world.render_depth(scenes)
    assert ev.depth_iou(images, depth).mean() > 0.85
    assert ev.depth_iou(images.roll(1, 0), depth).mean() < 0.4
    people = world.sample_scenes(32, 15, person_fraction=1.0)
    kp, figures = world.pose_keypoints(people), world.render(people)
    assert ev.pose_coverage(figures, kp).mean() > 0.9
    assert ev.pose_coverage(figures.flip(-1).roll(20, -2), kp).mean() < 0.4


def test_a_scene_is_judged_on_what_its_caption_names() -> None:
    """Scenes whose caption leaves attributes out ("a red circle") are judged on colour and shape only, exactly as
    their caption text is; full-caption scenes on everything."""
    import dataclasses

    from sdkit.models.shapes import evaluate, world

    scenes = world.sample_scenes(40, 3, person_fraction=0.0, full_caption=True)
    short = [dataclasses.replace(s, say_size=False, say_position=False, say_background=False) for s in scenes]
    for scene in short:
        request = evaluate.request_of(scene)
        assert request == evaluate.request_of(world.caption(scene)), world.caption(scene)
        assert request.background is None and all(t.size is None and t.position is None for t in request.things)

    def other_background(s: world.Scene) -> world.Scene:
        used = {s.background, *(t.color for t in s.things)}
        return dataclasses.replace(s, background=next(c for c in world.COLORS if c not in used))

    wrong_place = world.render([other_background(s) for s in short])
    assert evaluate.evaluate(wrong_place, short)["all"] == 1.0  # the background was never asked for
    assert evaluate.evaluate(world.render(scenes), scenes)["all"] >= 0.95
