"""OpenPose body poses: 18-keypoint JSON -> the standard coloured skeleton image pose ControlNets take.

Published facts used here (not code):
- The 18 keypoints are OpenPose's COCO body model order (CMU OpenPose, ``doc/02_output.md``, "Pose Output
  Format (COCO)"): nose, neck, right shoulder/elbow/wrist, left shoulder/elbow/wrist, right hip/knee/ankle,
  left hip/knee/ankle, right eye, left eye, right ear, left ear. BODY_25 files are mapped onto it.
- The 17 limbs, the 18 colours, the stick half-width 4 and joint radius 4, and limbs drawn at 0.6 of their
  colour under full-colour joints are the rendering of ControlNet 1.1's OpenPose annotator
  (lllyasviel/ControlNet-v1-1-nightly, ``annotator/openpose/util.py``, ``draw_bodypose``), which
  controlnet_aux reproduces. Matching it pixel for pixel matters: the pose ControlNets were trained on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import UInt8

from sdkit.image import Image

KEYPOINTS = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
# 0-based pairs of KEYPOINTS (the annotator lists them 1-based)
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
# limb i and keypoint i are drawn in COLORS[i]
COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
STICK_WIDTH = 4
JOINT_RADIUS = 4
LIMB_SHADE = 0.6
BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)  # drops MidHip (8) and feet

Point = tuple[float, float]


@dataclass(frozen=True)
class Pose:
    """One body: 18 keypoints as (x, y) pixels, ``None`` where a keypoint is missing."""

    keypoints: tuple[Point | None, ...]

    def __post_init__(self) -> None:
        if len(self.keypoints) != len(KEYPOINTS):
            raise ValueError(f"a pose has {len(KEYPOINTS)} keypoints (OpenPose COCO order), got {len(self.keypoints)}")

    def moved(self, index: int | str, x: float | None, y: float | None = None) -> Pose:
        """This pose with keypoint ``index`` (or its name) at (x, y); ``x=None`` removes it."""
        i = KEYPOINTS.index(index) if isinstance(index, str) else index
        if not 0 <= i < len(KEYPOINTS):
            raise IndexError(f"keypoint index must be in 0..{len(KEYPOINTS) - 1}, got {index}")
        points = list(self.keypoints)
        points[i] = None if x is None else (float(x), float(y if y is not None else 0.0))
        return Pose(tuple(points))

    def to_openpose(self) -> list[float]:
        """``pose_keypoints_2d``: x, y, confidence per keypoint (0, 0, 0 where missing)."""
        out: list[float] = []
        for p in self.keypoints:
            out += [0.0, 0.0, 0.0] if p is None else [p[0], p[1], 1.0]
        return out


def parse_openpose(
    data: str | bytes | dict[str, Any], *, normalized: bool | None = None
) -> tuple[list[Pose], tuple[int, int] | None]:
    """People of an OpenPose JSON document and its canvas (width, height) if it names one.

    Keypoints with confidence 0 are missing. Coordinates are pixels unless ``normalized`` (fractions of the
    canvas, as controlnet_aux writes them); ``None`` decides by whether all of them lie in [0, 1]."""
    doc = json.loads(data) if isinstance(data, (str, bytes)) else data
    if isinstance(doc, list):  # some tools write a list of frames
        doc = doc[0]
    canvas = None
    if "canvas_width" in doc and "canvas_height" in doc:
        canvas = (int(doc["canvas_width"]), int(doc["canvas_height"]))
    people = []
    for person in doc.get("people", []):
        flat = [float(v) for v in person.get("pose_keypoints_2d", [])]
        if len(flat) % 3:
            raise ValueError(f"pose_keypoints_2d must hold x, y, confidence triples, got {len(flat)} numbers")
        triples = [tuple(flat[k : k + 3]) for k in range(0, len(flat), 3)]
        if len(triples) == 25:
            triples = [triples[k] for k in BODY25_TO_COCO18]
        if len(triples) != len(KEYPOINTS):
            raise ValueError(f"expected 18 (COCO) or 25 (BODY_25) keypoints per person, got {len(triples)}")
        people.append(triples)
    seen = [c for person in people for (x, y, conf) in person if conf > 0 for c in (x, y)]
    if normalized is None:
        normalized = bool(seen) and max(seen) <= 1.0
    if normalized and canvas is None:
        raise ValueError("normalized keypoints need the canvas size (canvas_width / canvas_height in the JSON)")
    sx, sy = canvas if normalized and canvas else (1, 1)
    poses = [Pose(tuple((x * sx, y * sy) if conf > 0 else None for x, y, conf in person)) for person in people]
    return poses, canvas


def render_pose(poses: Pose | Sequence[Pose], width: int, height: int) -> UInt8[np.ndarray, "h w 3"]:
    """The skeleton image on black: each person's limbs (filled ellipses, 0.6 colour), then its joints."""
    import cv2

    canvas = np.zeros((height, width, 3), np.uint8)
    for pose in [poses] if isinstance(poses, Pose) else poses:
        for (a, b), color in zip(LIMBS, COLORS, strict=False):
            p, q = pose.keypoints[a], pose.keypoints[b]
            if p is None or q is None:
                continue
            mx, my = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
            length = math.hypot(p[0] - q[0], p[1] - q[1])
            angle = math.degrees(math.atan2(p[1] - q[1], p[0] - q[0]))
            polygon = cv2.ellipse2Poly((int(mx), int(my)), (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, np.asarray(polygon, np.int32), [int(c * LIMB_SHADE) for c in color])
        for point, color in zip(pose.keypoints, COLORS, strict=True):
            if point is not None:
                cv2.circle(canvas, (int(point[0]), int(point[1])), JOINT_RADIUS, color, thickness=-1)
    return canvas


def pose_image(poses: Pose | Sequence[Pose], width: int, height: int) -> Image:
    """``render_pose`` as an ``Image`` (the control image of a pose ControlNet)."""
    arr = render_pose(poses, width, height)
    return Image(torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255.0)


def openpose_image(data: str | bytes | dict[str, Any], width: int | None = None, height: int | None = None) -> Image:
    """OpenPose JSON -> skeleton image, at the JSON's canvas size unless ``width``/``height`` are given
    (keypoints are then scaled from the canvas to that size)."""
    poses, canvas = parse_openpose(data)
    if canvas is None and (width is None or height is None):
        raise ValueError("the JSON names no canvas size; pass width= and height=")
    w, h = width or canvas[0], height or canvas[1]  # type: ignore[index]
    if canvas is not None and (w, h) != canvas:
        sx, sy = w / canvas[0], h / canvas[1]
        poses = [Pose(tuple(None if p is None else (p[0] * sx, p[1] * sy) for p in pose.keypoints)) for pose in poses]
    return pose_image(poses, w, h)


def pose_editor(pose: Pose, width: int, height: int) -> Any:
    """An ipywidgets editor: pick a keypoint, move it with two sliders, see the skeleton. The editor's
    ``.pose`` is the edited pose; all drawing is ``render_pose`` (this is only wiring)."""
    import io

    import ipywidgets as widgets
    from PIL import Image as PILImage

    joint = widgets.Dropdown(options=[(name, i) for i, name in enumerate(KEYPOINTS)], value=1, description="keypoint")
    xs = widgets.IntSlider(min=0, max=width - 1, description="x")
    ys = widgets.IntSlider(min=0, max=height - 1, description="y")
    view = widgets.Image(format="png")
    box = widgets.VBox([joint, xs, ys, view])
    box.pose = pose

    def draw() -> None:
        buf = io.BytesIO()
        PILImage.fromarray(render_pose(box.pose, width, height)).save(buf, format="PNG")
        view.value = buf.getvalue()

    def select(_: Any = None) -> None:
        point = box.pose.keypoints[joint.value] or (width / 2, height / 2)
        box.syncing = True
        xs.value, ys.value = int(point[0]), int(point[1])
        box.syncing = False

    def move(_: Any = None) -> None:
        if not getattr(box, "syncing", False):
            box.pose = box.pose.moved(joint.value, xs.value, ys.value)
            draw()

    joint.observe(select, names="value")
    xs.observe(move, names="value")
    ys.observe(move, names="value")
    select()
    draw()
    return box
