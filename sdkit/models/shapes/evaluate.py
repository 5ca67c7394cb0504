"""Does a generated image show what its prompt asked for? Image analysis of the known shapes world.

Because the world is known exactly, no learned judge is needed:

1. every pixel is labelled with its nearest palette colour (or none, if it is far from all of them);
2. the background is the most common label on the image border;
3. the pixels of each other colour split into 8-connected components (the objects);
4. each requested thing is matched to the largest component of its colour (a person: the most
   person-like component) and its attributes are measured: shape by the best IoU of the component against
   a circle, square and upward triangle fitted to its bounding box (a thin, tall figure is a person),
   size by the extent of the bounding box, position by the centroid (``world.position_of``, the rule the
   sampler used), relation by comparing the two centroids.

``evaluate(images, prompts_or_scenes)`` returns the accuracies and per-item results. Rendered world images
score ~100% (tested), so what a model loses is its own. ``depth_iou`` and ``pose_coverage`` score the
ControlNets: does the foreground follow the depth map; do figure pixels cover the skeleton's limbs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from sdkit.models.shapes import world
from sdkit.models.shapes.captions import COLORS, Request, ThingRequest, parse_caption

PALETTE = torch.tensor(list(COLORS.values()), dtype=torch.float32) / 255  # [8, 3]
NAMES = list(COLORS)
MAX_COLOR_DISTANCE = 0.3  # RGB distance in [0, 1] units beyond which a pixel is no palette colour
MIN_AREA = 12  # pixels; smaller components are noise
SIZE_EXTENT = {"shape": 16.0, "person": 27.0}  # bounding-box extent separating small from large


@dataclass(frozen=True)
class Component:
    color: str
    area: int
    cx: float  # centroid
    cy: float
    x0: int  # bounding box, inclusive
    y0: int
    x1: int
    y1: int
    shape: str
    mask: Tensor  # [H, W] bool

    @property
    def extent(self) -> float:
        return float(max(self.x1 - self.x0 + 1, self.y1 - self.y0 + 1))


def to_tensor(images: Any) -> Float[Tensor, "b 3 h w"]:
    """A batch of images as floats in [0, 1]: a tensor ``[b, 3, h, w]`` or a list of PIL images. Images larger than
    the world's 64 pixels (a model trained at 128) are area-averaged down to 64, where the evaluator's rules live."""
    if isinstance(images, Tensor):
        x = images.detach().float().cpu().clamp(0, 1)
    else:
        import numpy as np

        arrays = [np.asarray(im.convert("RGB"), dtype=np.float32) / 255 for im in images]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    if x.shape[-1] != world.SIZE or x.shape[-2] != world.SIZE:
        larger = min(x.shape[-2:]) >= world.SIZE
        x = F.interpolate(x, size=(world.SIZE, world.SIZE), mode="area" if larger else "bilinear")
    return x


def mask_at(mask: Tensor, shape: Sequence[int]) -> Tensor:
    """An ``[h, w]`` bool mask found at the evaluator's 64 pixels, at another map size (nearest neighbour), e.g. an
    attention map's at the generated image's size."""
    if tuple(mask.shape) == tuple(shape):
        return mask
    return F.interpolate(mask[None, None].float(), size=tuple(shape))[0, 0] > 0.5


def psnr(a: Tensor, b: Tensor) -> float:
    """Mean PSNR in dB of two image batches ``[b, 3, h, w]`` in [0, 1] (per image, then averaged)."""
    mse = ((a - b) ** 2).mean((1, 2, 3)).clamp_min(1e-10)
    return float((-10 * torch.log10(mse)).mean())


def palette_labels(images: Float[Tensor, "b 3 h w"]) -> Tensor:
    """Nearest palette colour per pixel, ``[b, h, w]`` in 0..7, or -1 where no colour is close."""
    d = torch.cdist(images.permute(0, 2, 3, 1).reshape(-1, 3), PALETTE)  # [b*h*w, 8]
    dist, label = d.min(1)
    label[dist > MAX_COLOR_DISTANCE] = -1
    return label.view(images.shape[0], *images.shape[2:])


def background_labels(labels: Tensor) -> Tensor:
    """The most common palette label on each image's one-pixel border, ``[b]``."""
    border = torch.cat([labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]], 1)
    counts = F.one_hot(border + 1, 9).sum(1)[:, 1:]  # unlabelled pixels (-1) count for no colour
    return counts.argmax(1)


def connected_components(masks: Tensor) -> Tensor:
    """8-connected components of boolean masks ``[n, h, w]``: each pixel gets the smallest flat index in its
    component (+1), background 0. Min-label propagation with 3x3 min-pooling until nothing changes."""
    n, h, w = masks.shape
    big = h * w + 1
    init = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w).expand(n, -1, -1)
    labels = torch.where(masks, init, torch.full_like(init, big))
    while True:
        new = -F.max_pool2d(-labels[:, None], 3, 1, 1)[:, 0]
        new = torch.where(masks, new, torch.full_like(new, big))
        if torch.equal(new, labels):
            break
        labels = new
    return torch.where(masks, labels, torch.zeros_like(labels)).long()


def _templates(w: int, h: int) -> dict[str, Tensor]:
    """Circle (ellipse), square (the box) and upward triangle inscribed in a ``w x h`` bounding box."""
    ys = (torch.arange(h, dtype=torch.float32) + 0.5).view(h, 1) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5).view(1, w) / w
    circle = (xs - 0.5) ** 2 + (ys - 0.5) ** 2 <= 0.25
    triangle = (xs - 0.5).abs() <= ys / 2
    return {"circle": circle, "square": torch.ones(h, w, dtype=torch.bool), "triangle": triangle}


def classify_shape(mask: Tensor, x0: int, y0: int, x1: int, y1: int) -> str:
    """The shape a component's mask looks most like; a sparse, tall figure is a person."""
    crop = mask[y0 : y1 + 1, x0 : x1 + 1]
    h, w = crop.shape
    fill = float(crop.float().mean())
    if h > 1.25 * w and fill < 0.45:
        return "person"
    ious = {}
    for name, t in _templates(w, h).items():
        ious[name] = float((crop & t).sum()) / max(float((crop | t).sum()), 1.0)
    best = max(ious, key=ious.__getitem__)
    return best if ious[best] >= 0.6 else ("person" if h > w else "unknown")


def components(images: Float[Tensor, "b 3 h w"]) -> list[tuple[str, list[Component]]]:
    """Per image: the background colour name and the objects (components of the other colours), largest
    first. All images and colours go through one batched connected-components pass."""
    labels = palette_labels(images)
    bgs = background_labels(labels)
    b, n = labels.shape[0], len(NAMES)
    masks = labels[:, None] == torch.arange(n).view(1, n, 1, 1)  # [b, 8, h, w]
    masks[torch.arange(b), bgs] = False
    flat = masks.flatten(0, 1)
    used = flat.flatten(1).any(1)
    cc = torch.zeros(flat.shape, dtype=torch.long)
    cc[used] = connected_components(flat[used])  # only the colours present: most masks are empty
    cc = cc.view(b, n, *labels.shape[1:])
    out = []
    for k in range(b):
        found: list[Component] = []
        for c in masks[k].flatten(1).any(1).nonzero()[:, 0].tolist():
            ids, counts = cc[k, c].unique(return_counts=True)
            for i, area in zip(ids.tolist(), counts.tolist(), strict=True):
                if i == 0 or area < MIN_AREA:
                    continue
                mask = cc[k, c] == i
                ys, xs = mask.nonzero(as_tuple=True)
                box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
                cx, cy = float(xs.float().mean()) + 0.5, float(ys.float().mean()) + 0.5
                shape = classify_shape(mask, *box)
                if shape == "person":  # a figure's centre is its bounding box's, not its pixels' mean
                    cx, cy = (box[0] + box[2] + 1) / 2, (box[1] + box[3] + 1) / 2
                found.append(Component(NAMES[c], area, cx, cy, *box, shape, mask))
        found.sort(key=lambda comp: -comp.area)
        out.append((NAMES[int(bgs[k])], found))
    return out


def request_of(item: str | world.Scene) -> Request:
    """What a prompt asks for; for a scene, what its caption names (``say_*``), with the scene's true values (its real
    relation, not one read back from text)."""
    if isinstance(item, str):
        return parse_caption(item)
    things = tuple(
        ThingRequest(t.kind, t.color, t.size if item.say_size else None, t.position if item.say_position else None)
        for t in item.things
    )
    relation = world.relation_of(*item.things) if len(item.things) == 2 and item.say_relation else None
    return Request(things, relation, item.background if item.say_background else None)


def _match(thing: ThingRequest, comps: list[Component], taken: set[int]) -> int | None:
    candidates = [i for i, c in enumerate(comps) if i not in taken]
    if thing.kind == "person":
        people = [i for i in candidates if comps[i].shape == "person"]
        candidates = people or [i for i in candidates if thing.color is None or comps[i].color == thing.color]
    else:
        candidates = [i for i in candidates if comps[i].color == thing.color]
    return candidates[0] if candidates else None  # comps are sorted largest first


def judge(found: tuple[str, list[Component]], request: Request) -> dict[str, Any]:
    """Per-attribute verdicts for one analysed image (an item of ``components``):
    ``{"things": [{"color": True, ...}, ...], "background": ..., "relation": ..., "all": ...}``."""
    bg, comps = found
    taken: set[int] = set()
    verdicts, matched = [], []
    for thing in request.things:
        i = _match(thing, comps, taken)
        v: dict[str, bool] = {}
        comp = comps[i] if i is not None else None
        if i is not None:
            taken.add(i)
        if thing.kind != "person" or thing.color:
            v["color"] = comp is not None
        v["shape"] = comp is not None and comp.shape == thing.kind
        if thing.size:
            limit = SIZE_EXTENT["person" if thing.kind == "person" else "shape"]
            v["size"] = comp is not None and (comp.extent >= limit) == (thing.size == "large")
        if thing.position:
            v["position"] = comp is not None and world.position_of(comp.cx, comp.cy) == thing.position
        verdicts.append(v)
        matched.append(comp)
    out: dict[str, Any] = {"things": verdicts, "found": [(c.color, c.shape, c.area) for c in comps]}
    if request.background:
        out["background"] = bg == request.background
    if request.relation:
        a, b = matched
        if a is None or b is None:
            out["relation"] = False
        else:
            out["relation"] = request.relation in _relations(a, b)
    out["all"] = all(all(v.values()) for v in verdicts) and out.get("background", True) and out.get("relation", True)
    return out


def _relations(a: Component, b: Component, slack: float = 3.0) -> set[str]:
    """How ``a`` lies relative to ``b`` (``world.relation_of``); near the diagonal both axes count."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    out = set()
    if abs(dy) > abs(dx) - slack:
        out.add("above" if dy < 0 else "below")
    if abs(dx) >= abs(dy) - slack:
        out.add("to the left of" if dx < 0 else "to the right of")
    return out


def evaluate(images: Any, prompts_or_scenes: Sequence[str | world.Scene]) -> dict[str, Any]:
    """Accuracies over a batch: ``color``, ``shape``, ``size``, ``position`` (per requested thing),
    ``background``, ``relation``, ``two_objects`` (both things fully right), ``all`` (whole prompt right),
    plus ``items``, the per-image verdicts."""
    x = to_tensor(images)
    if len(x) != len(prompts_or_scenes):
        raise ValueError(f"{len(x)} images but {len(prompts_or_scenes)} prompts/scenes")
    items = [judge(found, request_of(item)) for found, item in zip(components(x), prompts_or_scenes, strict=True)]
    tally: dict[str, list[bool]] = {}
    for item in items:
        for v in item["things"]:
            for k, ok in v.items():
                tally.setdefault(k, []).append(ok)
        for k in ("background", "relation", "all"):
            if k in item:
                tally.setdefault(k, []).append(item[k])
        if len(item["things"]) == 2:
            tally.setdefault("two_objects", []).append(all(all(v.values()) for v in item["things"]))
    result: dict[str, Any] = {k: sum(v) / len(v) for k, v in tally.items()}
    result["items"] = items
    return result


def foreground(images: Any) -> Tensor:
    """Pixels that are not the background colour, ``[b, h, w]`` bool (unlabelled pixels count as foreground
    only when they are far from the background colour)."""
    x = to_tensor(images)
    labels = palette_labels(x)
    bg = background_labels(labels)
    bg_rgb = PALETTE[bg][:, :, None, None]
    return (labels != bg[:, None, None]) & ((x - bg_rgb).norm(dim=1) > MAX_COLOR_DISTANCE / 2)


def depth_iou(images: Any, depth: Float[Tensor, "b 1 h w"], threshold: float = 0.05) -> Float[Tensor, " b"]:
    """Per image, IoU of its foreground with the depth map's objects (depth above ``threshold``)."""
    fg = foreground(images)
    near = depth[:, 0].cpu() > threshold
    return (fg & near).sum((1, 2)) / (fg | near).sum((1, 2)).clamp_min(1)


def pose_coverage(images: Any, keypoints: Float[Tensor, "b 18 2"], width: float = 0.75) -> Float[Tensor, " b"]:
    """Per image, the fraction of the skeleton's body-limb pixels that the generated figure covers."""
    fg = foreground(images)
    b, h, w = fg.shape
    px = (torch.arange(w, dtype=torch.float32) + 0.5).view(1, 1, w)
    py = (torch.arange(h, dtype=torch.float32) + 0.5).view(1, h, 1)
    kp = keypoints.float().cpu()
    limbs = torch.zeros(b, h, w, dtype=torch.bool)
    for i, j in world.BODY_LIMBS:
        limbs |= world._segment_sdf(px, py, kp[:, i], kp[:, j]) <= width
    return (fg & limbs).sum((1, 2)) / limbs.sum((1, 2)).clamp_min(1)
