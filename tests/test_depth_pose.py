"""Depth maps (8/16-bit, MiDaS through controlnet_aux's real call path) and OpenPose skeletons
(pixel-stable, equal to controlnet_aux's rendering), plus the pose editor's wiring."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from image_fixtures import gradient_image, random_midas_detector
from PIL import Image as PILImage

from sdkit.conditioners.depth import MidasDepth, depth_image
from sdkit.conditioners.pose import COLORS, KEYPOINTS, Pose, openpose_image, parse_openpose, pose_editor, render_pose

# A standing figure on a 128 x 128 canvas, pixel coordinates, as OpenPose writes them (x, y, confidence).
FIGURE = [
    (64, 20), (64, 36), (48, 36), (40, 56), (36, 76), (80, 36), (88, 56), (92, 76), (54, 76),
    (52, 100), (50, 122), (74, 76), (76, 100), (78, 122), (60, 16), (68, 16), (56, 18), (72, 18),
]  # fmt: skip
FIGURE_SHA256 = "0896d2251ef5ce783a88a0158e2f64cc9a4e3cc5df294cb5230bd2681a1fc713"  # sdkit 0.1, opencv 4.11


def figure_json(**extra) -> str:
    flat = [v for x, y in FIGURE for v in (x, y, 0.9)]
    return json.dumps({"people": [{"pose_keypoints_2d": flat}], "canvas_width": 128, "canvas_height": 128, **extra})


def test_openpose_json_renders_the_standard_skeleton():
    img = openpose_image(figure_json())
    arr = (img.tensor[0].permute(1, 2, 0) * 255).round().byte().numpy()
    assert arr.shape == (128, 128, 3)
    assert tuple(arr[36, 64]) == COLORS[1]  # the neck joint, full colour
    assert tuple(arr[36, 56]) == (153, 0, 0)  # mid neck -> right shoulder: limb 0, 0.6 x (255, 0, 0)
    assert tuple(arr[66, 38]) == (153, 153, 0)  # right forearm: limb 3, 0.6 x (255, 255, 0)
    assert tuple(arr[111, 77]) == (0, 51, 153)  # left shin: limb 11, 0.6 x (0, 85, 255)
    assert tuple(arr[5, 5]) == (0, 0, 0)
    assert hashlib.sha256(arr.tobytes()).hexdigest() == FIGURE_SHA256


def test_rendering_equals_controlnet_aux():
    from controlnet_aux.open_pose.body import Keypoint
    from controlnet_aux.open_pose.util import draw_bodypose

    pose = parse_openpose(figure_json())[0][0]
    theirs = draw_bodypose(np.zeros((128, 128, 3), np.uint8), [Keypoint(x / 128, y / 128) for x, y in FIGURE])
    assert np.array_equal(render_pose(pose, 128, 128), theirs)
    gone = pose.moved("right_elbow", None)  # a missing keypoint drops its joint and both limbs
    points = [None if k == 3 else Keypoint(x / 128, y / 128) for k, (x, y) in enumerate(FIGURE)]
    assert np.array_equal(render_pose(gone, 128, 128), draw_bodypose(np.zeros((128, 128, 3), np.uint8), points))


def test_parsing_variants():
    poses, canvas = parse_openpose(figure_json())
    assert canvas == (128, 128) and poses[0].keypoints[1] == (64.0, 36.0)
    normalized = json.loads(figure_json())
    flat = normalized["people"][0]["pose_keypoints_2d"]
    normalized["people"][0]["pose_keypoints_2d"] = [v / 128 if k % 3 < 2 else v for k, v in enumerate(flat)]
    assert parse_openpose(normalized)[0][0] == poses[0]
    order = [0, 1, 2, 3, 4, 5, 6, 7, 0, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17] + [0] * 6  # MidHip, feet: ignored
    body25 = [v for k in order for v in (*FIGURE[k], 1.0)]
    assert parse_openpose({"people": [{"pose_keypoints_2d": body25}]})[0][0] == poses[0]
    half = openpose_image(figure_json(), 64, 64)
    assert half.size == (64, 64) and tuple((half.tensor[0, :, 18, 32] * 255).round().int().tolist()) == COLORS[1]
    with pytest.raises(ValueError, match="18 .COCO. or 25"):
        parse_openpose({"people": [{"pose_keypoints_2d": [1.0, 2.0, 1.0] * 7}]})
    with pytest.raises(ValueError, match="18 keypoints"):
        Pose(((1.0, 1.0),) * 5)


def test_pose_editor_is_thin_wiring():
    pytest.importorskip("ipywidgets")
    pose = parse_openpose(figure_json())[0][0]
    editor = pose_editor(pose, 128, 128)
    joint, xs, ys, view = editor.children
    first = view.value
    joint.value = KEYPOINTS.index("left_wrist")
    assert (xs.value, ys.value) == (92, 76)  # selecting shows the keypoint's position
    xs.value = 100
    ys.value = 40
    assert editor.pose == pose.moved("left_wrist", 100, 40)
    assert view.value != first
    rendered = np.asarray(PILImage.open(__import__("io").BytesIO(view.value)))
    assert np.array_equal(rendered, render_pose(editor.pose, 128, 128))


def test_depth_from_16_and_8_bit_grayscale(tmp_path):
    a = np.tile(np.arange(0, 1000, 1000 / 64, dtype=np.float32), (32, 1)).astype(np.uint16)  # values < 1000
    PILImage.fromarray(a).save(tmp_path / "d16.png")
    loaded = PILImage.open(tmp_path / "d16.png")
    assert loaded.mode.startswith("I")
    img = depth_image(loaded)
    assert img.size == (64, 32) and torch.equal(img.tensor[:, 0], img.tensor[:, 2])
    expected = torch.from_numpy((a - a.min()) / (a.max() - a.min()).astype(np.float32)).float()
    assert torch.allclose(img.tensor[0, 0], expected, atol=1e-6)  # not misread as 8-bit
    eight = depth_image(PILImage.fromarray((a // 4).astype(np.uint8)), normalize=False)
    assert eight.tensor[0, 0, 0, 63] == pytest.approx(float(a[0, 63] // 4) / 255, abs=1e-6)
    assert torch.equal(depth_image(a, normalize=False).tensor[0, 0], torch.from_numpy(a / 65535).float())
    inverted = depth_image(loaded, invert=True)
    assert torch.allclose(inverted.tensor, 1 - img.tensor)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        depth_image(np.full((4, 4), 3.0), normalize=False)


def test_midas_detector_call_path_with_random_weights():
    detector = random_midas_detector()
    photo = gradient_image(64, 64)
    depth = MidasDepth(detector, detect_resolution=64)(photo)
    assert depth.size == (64, 64) and torch.equal(depth.tensor[:, 0], depth.tensor[:, 1])
    assert depth.tensor.min() < 0.05 and depth.tensor.max() > 0.95  # the detector stretches depth to 0..255
    direct = detector(np.asarray(photo), detect_resolution=64, image_resolution=64, output_type="np")
    assert torch.allclose(depth.tensor[0, 0] * 255, torch.from_numpy(direct[..., 0]).float(), atol=0.5)
