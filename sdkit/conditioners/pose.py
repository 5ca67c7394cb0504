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
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import UInt8

from sdkit import limits
from sdkit.image import Image, check_image_size
from sdkit.limits import check_bool, check_int, show

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

# Bounds on what a JSON document may ask for (assign them to raise them): its text, the people drawn, and how far a
# keypoint may lie from the canvas (cv2 draws in 32-bit fixed point; a limb to a far point is clipped anyway).
MAX_JSON_BYTES = 16 * 2**20
MAX_PEOPLE = 1000
MAX_COORDINATE = 1e6


def _number(value: Any, where: str) -> float:
    """A finite real number from a JSON document or a user (numpy scalars too, never booleans or strings)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_" or not isinstance(value, numbers.Real):
        raise TypeError(f"{where} must hold numbers, got {type(value).__name__} {show(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{where} must hold finite numbers, got {show(value)}")
    return number


def _point(point: Any, index: int) -> Point | None:
    if point is None:
        return None
    where = f"pose keypoint {index} ({KEYPOINTS[index]})"
    if not isinstance(point, Sequence) or isinstance(point, str) or len(point) != 2:
        raise TypeError(f"{where} must be None or an (x, y) pair, got {type(point).__name__}")
    x, y = _number(point[0], where), _number(point[1], where)
    if max(abs(x), abs(y)) > MAX_COORDINATE:
        raise ValueError(
            f"{where} at ({x:g}, {y:g}) lies beyond +-{MAX_COORDINATE:g} pixels "
            "(sdkit.conditioners.pose.MAX_COORDINATE; assign it to raise the bound)"
        )
    return (x, y)


def _canvas_size(width: Any, height: Any, what: str = "pose image") -> tuple[int, int]:
    """A drawing size: integers in [1, MAX_SIDE] whose product is within MAX_PIXELS (checked before drawing)."""
    w = check_int("width", width, maximum=limits.MAX_SIDE, bound="MAX_SIDE")
    h = check_int("height", height, maximum=limits.MAX_SIDE, bound="MAX_SIDE")
    check_image_size(what, w, h)
    return w, h


@dataclass(frozen=True)
class Pose:
    """One body: 18 keypoints as (x, y) pixels, ``None`` where a keypoint is missing."""

    keypoints: tuple[Point | None, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.keypoints, Sequence) or isinstance(self.keypoints, str):
            raise TypeError(f"pose keypoints must be a tuple of 18 (x, y) or None, got {type(self.keypoints).__name__}")
        if len(self.keypoints) != len(KEYPOINTS):
            raise ValueError(f"a pose has {len(KEYPOINTS)} keypoints (OpenPose COCO order), got {len(self.keypoints)}")
        object.__setattr__(self, "keypoints", tuple(_point(p, i) for i, p in enumerate(self.keypoints)))

    def moved(self, index: int | str, x: float | None, y: float | None = None) -> Pose:
        """This pose with keypoint ``index`` (or its name) at (x, y); ``x=None`` removes it."""
        if isinstance(index, str):
            if index not in KEYPOINTS:
                raise ValueError(f"keypoint name must be one of {', '.join(KEYPOINTS)}, got {index!r:.40}")
            i = KEYPOINTS.index(index)
        else:
            i = check_int("keypoint index", index, minimum=0, maximum=len(KEYPOINTS) - 1)
        points = list(self.keypoints)
        points[i] = None if x is None else (x, 0.0 if y is None else y)
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
    if normalized is not None:
        normalized = check_bool("normalized", normalized)
    doc = _document(data)
    canvas = None
    if "canvas_width" in doc and "canvas_height" in doc:
        w, h = (_integral(doc[k], k) for k in ("canvas_width", "canvas_height"))
        canvas = _canvas_size(w, h, "the JSON's canvas")
    people = doc.get("people", [])
    if not isinstance(people, list):
        raise TypeError(f"openpose JSON: people must be a list, got {type(people).__name__}")
    if len(people) > MAX_PEOPLE:
        raise ValueError(
            f"openpose JSON holds {len(people)} people, more than sdkit.conditioners.pose.MAX_PEOPLE = {MAX_PEOPLE}"
        )
    triples_of = [_triples(person, k) for k, person in enumerate(people)]
    seen = [c for person in triples_of for (x, y, conf) in person if conf > 0 for c in (x, y)]
    if normalized is None:
        normalized = bool(seen) and max(seen) <= 1.0
    if normalized and canvas is None:
        raise ValueError("normalized keypoints need the canvas size (canvas_width / canvas_height in the JSON)")
    sx, sy = canvas if normalized and canvas else (1, 1)
    poses = [Pose(tuple((x * sx, y * sy) if conf > 0 else None for x, y, conf in person)) for person in triples_of]
    return poses, canvas


def _document(data: Any) -> dict[str, Any]:
    """The JSON object of ``data`` (text, bytes or an already parsed dict; a list of frames gives its first)."""
    if isinstance(data, (str, bytes, bytearray)):
        if len(data) > MAX_JSON_BYTES:
            raise ValueError(
                f"openpose JSON is {len(data)} characters, more than sdkit.conditioners.pose.MAX_JSON_BYTES = "
                f"{MAX_JSON_BYTES}"
            )
        try:
            data = json.loads(data)
        except RecursionError:
            raise ValueError("openpose JSON is nested too deeply to be a pose document") from None
        except ValueError as e:  # JSONDecodeError, bad UTF-8, integers with too many digits
            raise ValueError(f"openpose JSON is not valid JSON: {' '.join(str(e).split())}") from None
    if isinstance(data, list):  # some tools write a list of frames
        if not data:
            raise ValueError("openpose JSON is an empty list of frames")
        data = data[0]
    if not isinstance(data, dict):
        raise TypeError(f"openpose JSON must be an object with 'people', got {type(data).__name__}")
    return data


def _integral(value: Any, name: str) -> int:
    """An integer from JSON, where writers may put 512.0 for 512."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {show(value)}")
    return int(value)


def _triples(person: Any, k: int) -> list[tuple[float, float, float]]:
    """One person's (x, y, confidence) per COCO keypoint (BODY_25 mapped onto COCO)."""
    if not isinstance(person, dict):
        raise TypeError(f"openpose JSON: person {k} must be an object, got {type(person).__name__}")
    flat = person.get("pose_keypoints_2d", [])
    if not isinstance(flat, (list, tuple)):
        raise TypeError(f"openpose JSON: person {k} pose_keypoints_2d must be a list, got {type(flat).__name__}")
    if len(flat) % 3:
        raise ValueError(f"pose_keypoints_2d must hold x, y, confidence triples, got {len(flat)} numbers")
    if len(flat) // 3 not in (18, 25):
        raise ValueError(f"expected 18 (COCO) or 25 (BODY_25) keypoints per person, got {len(flat) // 3}")
    values = [_number(v, f"openpose JSON: person {k} pose_keypoints_2d") for v in flat]
    triples = [(values[i], values[i + 1], values[i + 2]) for i in range(0, len(values), 3)]
    return [triples[i] for i in BODY25_TO_COCO18] if len(triples) == 25 else triples


def render_pose(poses: Pose | Sequence[Pose], width: int, height: int) -> UInt8[np.ndarray, "h w 3"]:
    """The skeleton image on black: each person's limbs (filled ellipses, 0.6 colour), then its joints."""
    import cv2

    width, height = _canvas_size(width, height)
    people = _poses(poses)
    canvas = np.zeros((height, width, 3), np.uint8)
    for pose in people:
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


def _poses(poses: Any) -> list[Pose]:
    people = [poses] if isinstance(poses, Pose) else poses
    if not isinstance(people, Sequence) or isinstance(people, str) or not all(isinstance(p, Pose) for p in people):
        raise TypeError(f"poses must be a Pose or a list of Poses, got {type(poses).__name__}")
    if len(people) > MAX_PEOPLE:
        raise ValueError(f"poses: {len(people)} people, more than sdkit.conditioners.pose.MAX_PEOPLE = {MAX_PEOPLE}")
    return list(people)


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
    if canvas is not None:
        width, height = canvas[0] if width is None else width, canvas[1] if height is None else height
    w, h = _canvas_size(width, height)
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

    width, height = _canvas_size(width, height)
    if not isinstance(pose, Pose):
        raise TypeError(f"pose must be a Pose, got {type(pose).__name__}")

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
