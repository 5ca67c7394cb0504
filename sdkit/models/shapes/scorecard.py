"""The embedded model's scorecard: prompt following measured by the evaluator, as issue 5 defines it.

    python -m sdkit.models.shapes.scorecard            # 200 single-object + 200 two-object prompts, CFG 7.5 and 1
    python -m sdkit.models.shapes.scorecard --controlnets -n 100   # the depth and pose ControlNets only

Prompts are full captions of random scenes of the world ("a large red circle on the left, yellow
background"); prompt ``i`` is generated with seed ``seed + i``, 20 Euler steps. The ControlNet rows condition
each prompt on its own scene's depth map (IoU of the generated objects with the map's near region) or, for
scenes with a person, on its OpenPose skeleton (the share of limb pixels the generated figure covers).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from tqdm.auto import tqdm

from sdkit.models.shapes import evaluate, world

KEYS = ("color", "shape", "size", "position", "background", "two_objects", "all")


def scorecard(
    kit: Any,
    *,
    n: int = 200,
    objects: int = 1,
    cfg: float = 7.5,
    steps: int = 20,
    seed: int = 0,
    sampler: str = "euler",
) -> dict[str, float]:
    """Accuracies of ``kit`` on ``n`` random full-caption prompts with ``objects`` (1 or 2) things each."""
    scenes = world.sample_scenes(n, seed, person_fraction=0.0, two_fraction=float(objects == 2), full_caption=True)
    images = []
    for i, scene in enumerate(tqdm(scenes, desc=f"{objects} object(s), cfg {cfg:g}", leave=False)):
        images += kit.generate(world.caption(scene), seed=seed + i, steps=steps, cfg=cfg, sampler=sampler).images
    result = evaluate.evaluate(images, scenes)
    return {k: round(float(result[k]), 4) for k in KEYS if k in result}


def controlnet_scorecard(
    kit: Any, *, n: int = 100, cfg: float = 7.5, steps: int = 20, seed: int = 0
) -> dict[str, float]:
    """Mean depth IoU and pose coverage of ``kit``'s depth and pose ControlNets over ``n`` scenes each."""
    import torch

    depth_scenes = world.sample_scenes(n, seed + 1, person_fraction=0.0, full_caption=True)
    pose_scenes = world.sample_scenes(n, seed + 2, person_fraction=1.0, full_caption=True)
    depths, keypoints = world.render_depth(depth_scenes), world.pose_keypoints(pose_scenes)
    skeletons = world.render_pose(keypoints)
    out = {}
    for name, scenes, controls in (("depth", depth_scenes, depths), ("pose", pose_scenes, skeletons)):
        images = []
        for i, scene in enumerate(tqdm(scenes, desc=f"{name} ControlNet", leave=False)):
            control = (f"controlnet_{name}", controls[i])
            images += kit.generate(world.caption(scene), seed=seed + i, steps=steps, cfg=cfg, control=control).images
        x = evaluate.to_tensor(images)
        score = evaluate.depth_iou(x, depths) if name == "depth" else evaluate.pose_coverage(x, keypoints)
        out["depth_iou" if name == "depth" else "pose_coverage"] = round(float(torch.as_tensor(score).mean()), 4)
    return out


def main(argv: list[str] | None = None) -> None:
    import sdkit

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="shapes")
    p.add_argument("-n", type=int, default=200)
    p.add_argument("--cfg", type=float, nargs="+", default=[7.5, 1.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--controlnets", action="store_true", help="score the depth and pose ControlNets instead")
    args = p.parse_args(argv)
    kit = sdkit.load(args.model)
    rows = []
    t0 = time.perf_counter()
    if args.controlnets:
        cfg = args.cfg[0]  # the first of --cfg (7.5 by default)
        print(json.dumps({"n": args.n, "cfg": cfg, **controlnet_scorecard(kit, n=args.n, cfg=cfg, seed=args.seed)}))
        print(f"# {2 * args.n} images in {time.perf_counter() - t0:.0f} s")
        return
    for cfg in args.cfg:
        for objects in (1, 2):
            row = scorecard(kit, n=args.n, objects=objects, cfg=cfg, seed=args.seed)
            rows.append({"objects": objects, "cfg": cfg, **row})
            print(json.dumps(rows[-1]), flush=True)
    print(f"# {len(rows) * args.n} images in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
