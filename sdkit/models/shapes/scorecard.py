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


def generate_scenes(
    kit: Any, scenes: list[world.Scene], *, seed: int, desc: str, control: tuple[str, Any] | None = None, **options: Any
) -> list[Any]:
    """One image per scene from its full caption, scene ``i`` with seed ``seed + i``. ``control`` is
    ``(ControlNet name, control images)``, image ``i`` for scene ``i``; ``options`` go to ``kit.generate``."""
    images = []
    for i, scene in enumerate(tqdm(scenes, desc=desc, leave=False)):
        extra = {} if control is None else {"control": (control[0], control[1][i])}
        images += kit.generate(world.caption(scene), seed=seed + i, **extra, **options).images
    return images


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
    desc = f"{objects} object(s), cfg {cfg:g}"
    images = generate_scenes(kit, scenes, seed=seed, desc=desc, steps=steps, cfg=cfg, sampler=sampler)
    result = evaluate.evaluate(images, scenes)
    return {k: round(float(result[k]), 4) for k in KEYS if k in result}


def controlnet_scorecard(
    kit: Any, *, n: int = 100, cfg: float = 7.5, steps: int = 20, seed: int = 0
) -> dict[str, float]:
    """Mean depth IoU and pose coverage of ``kit``'s depth and pose ControlNets over ``n`` scenes each."""
    depth_scenes = world.sample_scenes(n, seed + 1, person_fraction=0.0, full_caption=True)
    pose_scenes = world.sample_scenes(n, seed + 2, person_fraction=1.0, full_caption=True)
    depths, keypoints = world.render_depth(depth_scenes), world.pose_keypoints(pose_scenes)
    options: dict[str, Any] = dict(seed=seed, steps=steps, cfg=cfg)
    with_depth = generate_scenes(kit, depth_scenes, desc="depth ControlNet", control=("controlnet_depth", depths),
                                 **options)  # fmt: skip
    with_pose = generate_scenes(kit, pose_scenes, desc="pose ControlNet",
                                control=("controlnet_pose", world.render_pose(keypoints)), **options)  # fmt: skip
    return {
        "depth_iou": round(float(evaluate.depth_iou(evaluate.to_tensor(with_depth), depths).mean()), 4),
        "pose_coverage": round(float(evaluate.pose_coverage(evaluate.to_tensor(with_pose), keypoints).mean()), 4),
    }


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
