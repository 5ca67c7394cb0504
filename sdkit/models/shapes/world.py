"""The shapes world: random scenes of coloured shapes and stick-figure people, rendered in torch.

A ``Scene`` is one or two ``Thing``s (circle, square, triangle or person) of a palette colour, a size
and a position (the region of the thing's centre), at a depth, on a background colour that no thing
uses. Everything the model is trained on is generated here on the fly, on any device, with no dataset
on disk:

- ``sample_scenes(n, generator)`` draws scenes (deterministic given the generator's seed),
- ``render(scenes)`` paints them, ``[b, 3, 64, 64]`` in ``[0, 1]``, anti-aliased, nearer over farther,
- ``render_depth(scenes)`` gives the depth map, MiDaS convention (near = bright, background = 0),
- ``pose_keypoints(scenes)`` the people's 18 OpenPose keypoints and ``render_pose`` their skeleton image,
- ``caption(scene)`` its prompt (see ``captions.py`` for the grammar).

Rendering uses signed distance functions: a pixel's coverage is ``clamp(0.5 - sdf, 0, 1)`` (one-pixel
anti-aliasing), which keeps the images smooth enough for a tiny VAE to reconstruct.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit.models.shapes.captions import COLORS, POSITIONS, RELATIONS, SHAPES, SIZES, thing_phrase

SIZE = 64
RADIUS = {"small": 6.0, "large": 11.0}  # half the extent of a shape, in pixels
PERSON_RADIUS = {"small": 10.0, "large": 17.0}  # half the height of a person
CENTER_BOX = 8.0  # |dx|, |dy| < CENTER_BOX from the image centre is "center"

# OpenPose's COCO-18 body keypoints, in order (CMU OpenPose; controlnet_aux.open_pose.util.draw_bodypose).
KEYPOINTS = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)  # fmt: skip
# The 17 limbs OpenPose draws (1-based keypoint pairs in the reference code, 0-based here) and their
# colours, as published in CMU OpenPose and copied by ControlNet's annotator and controlnet_aux.
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
POSE_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
BODY_LIMBS = LIMBS[:13]  # what the stick figure itself is made of (the face limbs lie inside the head)


@dataclass(frozen=True)
class Thing:
    """One object: ``kind`` in circle/square/triangle/person, centre ``(x, y)`` in pixels, ``radius`` half
    its extent, ``depth`` in (0, 1) (smaller = nearer), ``keypoints`` (18 ``(x, y)``) for a person."""

    kind: str
    color: str
    size: str
    position: str
    x: float
    y: float
    radius: float
    depth: float
    keypoints: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True)
class Scene:
    """One or two things on a background; the ``say_*`` flags choose which attributes the caption names."""

    things: tuple[Thing, ...]
    background: str
    say_size: bool = True
    say_position: bool = True
    say_background: bool = True
    say_relation: bool = True


def position_of(x: float, y: float) -> str:
    """The named region that contains a centre ``(x, y)``: the rule the sampler and the evaluator share."""
    dx, dy = x - SIZE / 2, y - SIZE / 2
    if max(abs(dx), abs(dy)) < CENTER_BOX:
        return "center"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def relation_of(a: Thing, b: Thing) -> str:
    """How ``a`` lies relative to ``b`` along the axis where they are farther apart."""
    dx, dy = a.x - b.x, a.y - b.y
    if abs(dy) > abs(dx):
        return "above" if dy < 0 else "below"
    return "to the left of" if dx < 0 else "to the right of"


def caption(scene: Scene) -> str:
    """The scene's prompt, e.g. ``"a large red circle on the left above a small blue square, yellow background"``."""
    phrases = [
        thing_phrase(t.kind, t.color, t.size if scene.say_size else None, t.position if scene.say_position else None)
        for t in scene.things
    ]
    joiner = "and"
    if len(scene.things) == 2 and scene.say_relation:
        joiner = relation_of(*scene.things)
        assert joiner in RELATIONS
    text = f" {joiner} ".join(phrases)
    if scene.say_background:
        text += f", {scene.background} background"
    return text


# ---------------------------------------------------------------------------------------------- sampling
def _sample_center(rng: random.Random, position: str, rx: float, ry: float) -> tuple[float, float]:
    """A centre inside ``position``'s region, at least 4 px from the region borders, thing inside the image."""
    c = SIZE / 2
    if position == "center":
        return c + rng.uniform(-4, 4), c + rng.uniform(-4, 4)
    horizontal = position in ("left", "right")
    r_along = rx if horizontal else ry
    far = c - max(r_along + 1.0, 10.0)  # farthest offset from the centre that keeps the thing inside
    along = rng.uniform(CENTER_BOX + 4, max(far, CENTER_BOX + 4))
    across = rng.uniform(-1, 1) * min(6.0, along - 5)
    sign = -1 if position in ("left", "top") else 1
    return (c + sign * along, c + across) if horizontal else (c + across, c + sign * along)


def _person_keypoints(rng: random.Random, x: float, y: float, r: float) -> tuple[tuple[float, float], ...]:
    """18 keypoints of a standing stick figure of half-height ``r`` centred at ``(x, y)``, facing the viewer
    (so its right side is on the image's left), with random arm and leg angles."""
    pts: dict[str, tuple[float, float]] = {}

    def at(name: str, u: float, v: float) -> None:
        pts[name] = (x + u * r, y + v * r)

    at("nose", 0.0, -0.78)
    at("neck", 0.0, -0.52)
    for side, s in (("r", -1.0), ("l", 1.0)):
        at(f"{side}_shoulder", 0.24 * s, -0.5)
        a1 = math.radians(rng.uniform(10, 160))  # upper arm angle from hanging straight down, outwards
        a2 = a1 + math.radians(rng.uniform(-40, 40))
        sx, sy = pts[f"{side}_shoulder"]
        ex, ey = sx + s * 0.3 * r * math.sin(a1), sy + 0.3 * r * math.cos(a1)
        pts[f"{side}_elbow"] = (ex, ey)
        pts[f"{side}_wrist"] = (ex + s * 0.28 * r * math.sin(a2), ey + 0.28 * r * math.cos(a2))
        at(f"{side}_hip", 0.14 * s, 0.1)
        b = math.radians(rng.uniform(0, 30))
        hx, hy = pts[f"{side}_hip"]
        kx, ky = hx + s * 0.42 * r * math.sin(b), hy + 0.42 * r * math.cos(b)
        pts[f"{side}_knee"] = (kx, ky)
        pts[f"{side}_ankle"] = (kx + s * 0.05 * r, ky + 0.42 * r)
        at(f"{side}_eye", 0.07 * s, -0.84)
        at(f"{side}_ear", 0.14 * s, -0.8)
    return tuple(pts[k] for k in KEYPOINTS)


def _sample_thing(rng: random.Random, kind: str, color: str, size: str, position: str) -> Thing:
    if kind == "person":
        r = PERSON_RADIUS[size]
        x, y = _sample_center(rng, position, 0.55 * r, r)
        return Thing(kind, color, size, position, x, y, r, rng.uniform(0.2, 0.8), _person_keypoints(rng, x, y, r))
    r = RADIUS[size] * rng.uniform(0.9, 1.1)
    x, y = _sample_center(rng, position, r, r)
    return Thing(kind, color, size, position, x, y, r, rng.uniform(0.2, 0.8))


def _apart(a: Thing, b: Thing) -> bool:
    return math.hypot(a.x - b.x, a.y - b.y) > a.radius + b.radius + 2


def sample_scene(
    rng: random.Random, *, person_fraction: float = 0.15, two_fraction: float = 0.4, full_caption: bool = False
) -> Scene:
    """One random scene; things never overlap (so every attribute stays visible) and differ in colour."""
    n = 2 if rng.random() < two_fraction else 1
    kinds = [rng.choice(SHAPES) for _ in range(n)]
    if rng.random() < person_fraction:
        kinds[0] = "person"
    for _ in range(50):
        colors = rng.sample(list(COLORS), n + 1)
        positions = rng.sample(POSITIONS, n)
        things = [
            _sample_thing(rng, k, c, rng.choice(SIZES), p) for k, c, p in zip(kinds, colors, positions, strict=False)
        ]
        if n == 1 or _apart(*things):
            break
    else:  # nothing fitted: two small things at opposite sides always do
        things = [
            _sample_thing(rng, k, c, "small", p) for k, c, p in zip(kinds, colors, ("left", "right"), strict=False)
        ]
    rng.shuffle(things)
    if full_caption:
        return Scene(tuple(things), colors[-1])
    return Scene(
        tuple(things),
        colors[-1],
        say_size=rng.random() < 0.7,
        say_position=rng.random() < 0.7,
        say_background=rng.random() < 0.6,
        say_relation=rng.random() < 0.5,
    )


def sample_scenes(
    n: int,
    generator: torch.Generator | int | None = None,
    *,
    person_fraction: float = 0.15,
    two_fraction: float = 0.4,
    full_caption: bool = False,
) -> list[Scene]:
    """``n`` random scenes, the same for the same seed (an int, or a torch generator's next draw)."""
    if isinstance(generator, torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    else:
        seed = 0 if generator is None else int(generator)
    rng = random.Random(seed)
    return [
        sample_scene(rng, person_fraction=person_fraction, two_fraction=two_fraction, full_caption=full_caption)
        for _ in range(n)
    ]


# --------------------------------------------------------------------------------------------- rendering
def _grid(device: torch.device | str | None, size: int = SIZE) -> tuple[Tensor, Tensor]:
    """Pixel centres of a ``size``-pixel image in world units (the scene's geometry is in 64-pixel units)."""
    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * (SIZE / size)
    return coords.view(1, 1, 1, size), coords.view(1, 1, size, 1)  # x [1,1,1,W], y [1,1,H,1]


def _segment_sdf(px: Tensor, py: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Distance from pixels to segments ``a -> b``; ``a``, ``b``: ``[..., 2]`` -> ``[..., H, W]``."""
    ax, ay = a[..., 0, None, None], a[..., 1, None, None]
    bx, by = b[..., 0, None, None], b[..., 1, None, None]
    vx, vy = bx - ax, by - ay
    t = (((px - ax) * vx + (py - ay) * vy) / (vx * vx + vy * vy).clamp_min(1e-6)).clamp(0, 1)
    return torch.hypot(px - ax - t * vx, py - ay - t * vy)


def pack(scenes: list[Scene], device: torch.device | str | None = None) -> dict[str, Tensor]:
    """Scenes as padded tensors (index them to take a sub-batch; ``render_packed`` paints them).

    Things are ordered far to near (the painter's order); empty slots have kind -1."""
    k = max(len(s.things) for s in scenes)
    kind, color, geom, kps = [], [], [], []
    for s in scenes:
        things = sorted(s.things, key=lambda t: -t.depth) + [None] * (k - len(s.things))
        for t in things:
            kind.append(-1 if t is None else (SHAPES + ("person",)).index(t.kind))
            color.append(COLORS[t.color] if t else (0, 0, 0))
            geom.append((t.x, t.y, t.radius, t.depth) if t else (0.0, 0.0, 0.0, 1.0))
            kps.append(t.keypoints if t and t.keypoints else ((0.0, 0.0),) * 18)
    b = len(scenes)
    return {
        "kind": torch.tensor(kind, device=device).view(b, k),
        "color": torch.tensor(color, device=device, dtype=torch.float32).view(b, k, 3) / 255,
        "geom": torch.tensor(geom, device=device, dtype=torch.float32).view(b, k, 4),
        "keypoints": torch.tensor(kps, device=device, dtype=torch.float32).view(b, k, 18, 2),
        "background": torch.tensor([COLORS[s.background] for s in scenes], device=device).float() / 255,
    }


def _coverage(p: dict[str, Tensor], size: int = SIZE) -> Float[Tensor, "b k h w"]:
    """Anti-aliased coverage of each thing from its signed distance function, at ``size`` pixels."""
    px, py = _grid(p["geom"].device, size)
    x, y, r = (p["geom"][..., i, None, None] for i in range(3))
    dx, dy = px - x, py - y
    circle = torch.hypot(dx, dy) - r
    square = torch.maximum(dx.abs(), dy.abs()) - r * 0.85  # same area feel as the circle
    # Upward equilateral triangle with circumradius 1.2 r, centred on its centroid (Inigo Quilez's SDF,
    # with y flipped because image rows grow downwards).
    k = math.sqrt(3.0)
    h = 1.2 * r * k / 2  # half the side
    qx, qy = dx.abs() - h, -dy + h / k
    fold = qx + k * qy > 0
    qx, qy = torch.where(fold, (qx - k * qy) / 2, qx), torch.where(fold, (-k * qx - qy) / 2, qy)
    qx = qx - torch.minimum(torch.maximum(qx, -2 * h), torch.zeros_like(qx))
    triangle = -torch.hypot(qx, qy) * torch.sign(qy)
    # People: union of capsules around the 13 body limbs plus a head disc, computed only where needed.
    person = torch.full_like(circle, 1e3)
    who = (p["kind"] == 3).nonzero(as_tuple=True)
    if who[0].numel():
        kp, rp = p["keypoints"][who], p["geom"][who][:, 2, None, None]  # [n, 18, 2], [n, 1, 1]
        a, b = kp[:, [i for i, _ in BODY_LIMBS]], kp[:, [j for _, j in BODY_LIMBS]]
        limbs = _segment_sdf(px[0, 0, None], py[0, 0, None], a, b).amin(1) - (rp * 0.09).clamp_min(1.0)
        head = torch.hypot(px[0] - kp[:, 0, 0, None, None], py[0] - kp[:, 0, 1, None, None]) - rp * 0.16
        person[who] = torch.minimum(limbs, head)
    kind = p["kind"][..., None, None]
    sdf = torch.where(kind == 0, circle, torch.where(kind == 1, square, torch.where(kind == 2, triangle, person)))
    return (0.5 - sdf * (size / SIZE)).clamp(0, 1) * (kind >= 0)  # a one-pixel edge at any size


def render(scenes: list[Scene], device: torch.device | str | None = None, size: int = SIZE) -> Float[Tensor, "b 3 h w"]:
    """RGB images in ``[0, 1]``: background, then things far to near, each blended by its coverage. ``size``: the
    image side in pixels (the same scene at another resolution)."""
    return render_packed(pack(scenes, device), size)


def render_packed(p: dict[str, Tensor], size: int = SIZE) -> Float[Tensor, "b 3 h w"]:
    """``render`` for scenes already ``pack``-ed into tensors (how training renders batches on the GPU)."""
    cover = _coverage(p, size)
    img = p["background"][:, :, None, None].expand(-1, -1, size, size)
    for i in range(cover.shape[1]):
        a = cover[:, i, None]
        img = img * (1 - a) + p["color"][:, i, :, None, None] * a
    return img.contiguous()


def render_depth(
    scenes: list[Scene], device: torch.device | str | None = None, size: int = SIZE
) -> Float[Tensor, "b 1 h w"]:
    """Depth maps in MiDaS's convention (relative inverse depth): near = bright, background = 0.

    Each thing sits on a flat plane at ``1 - depth``; nearer things are painted last, so they occlude."""
    return render_depth_packed(pack(scenes, device), size)


def render_depth_packed(p: dict[str, Tensor], size: int = SIZE) -> Float[Tensor, "b 1 h w"]:
    """``render_depth`` for ``pack``-ed scenes."""
    cover = _coverage(p, size)
    out = torch.zeros(cover.shape[0], 1, size, size, device=cover.device)
    for i in range(cover.shape[1]):
        a = cover[:, i, None]
        out = out * (1 - a) + (1 - p["geom"][:, i, 3, None, None, None]) * a
    return out


def pose_keypoints_packed(p: dict[str, Tensor]) -> Float[Tensor, "b 18 2"]:
    """Each packed scene's person's keypoints (the last person slot); NaN where there is none."""
    is_person = p["kind"] == 3  # [b, k]
    kp = torch.where(is_person[..., None, None], p["keypoints"], float("nan"))
    slot = (is_person * torch.arange(1, is_person.shape[1] + 1, device=kp.device)).argmax(1)
    return kp[torch.arange(kp.shape[0], device=kp.device), slot]


def pose_keypoints(scenes: list[Scene]) -> Float[Tensor, "b 18 2"]:
    """Each scene's person's keypoints in pixels; NaN where a scene has no person."""
    out = torch.full((len(scenes), 18, 2), float("nan"))
    for i, s in enumerate(scenes):
        for t in s.things:
            if t.keypoints:
                out[i] = torch.tensor(t.keypoints)
    return out


def render_pose(
    keypoints: Float[Tensor, "b 18 2"], size: int = SIZE, limb_width: float = 1.2, joint_radius: float = 1.6
) -> Float[Tensor, "b 3 h w"]:
    """The standard OpenPose skeleton image (as ControlNet's pose model was trained on), in ``[0, 1]``.

    As in ``draw_bodypose``: black canvas, each of the 17 limbs filled with 0.6 x its colour, then each
    keypoint a disc in its full colour. NaN keypoints (missing) draw nothing. Widths are scaled from
    OpenPose's 512-px drawing to a 64-px image (and kept >= 1 px so they stay visible)."""
    kp = keypoints.float()
    b = kp.shape[0]
    coords = torch.arange(size, device=kp.device, dtype=torch.float32) + 0.5
    px, py = coords.view(1, 1, size), coords.view(1, size, 1)
    colors = torch.tensor(POSE_COLORS, device=kp.device, dtype=torch.float32) / 255
    img = torch.zeros(b, 3, size, size, device=kp.device)
    for (i, j), c in zip(LIMBS, colors, strict=False):  # 17 limbs, 18 colours
        a, e = kp[:, i], kp[:, j]
        d = _segment_sdf(px, py, a, e)  # [b, H, W]; NaN where a keypoint is missing -> comparison is False
        img = torch.where((d <= limb_width)[:, None], 0.6 * c[None, :, None, None], img)
    for n in range(18):
        d = torch.hypot(px - kp[:, n, 0, None, None], py - kp[:, n, 1, None, None])
        img = torch.where((d <= joint_radius)[:, None], colors[n][None, :, None, None], img)
    return img
