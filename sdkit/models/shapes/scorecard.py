"""The embedded model's scorecard: prompt following measured by the evaluator, as issue 5 defines it.

    python -m sdkit.models.shapes.scorecard            # one-object, two-object and short prompts, CFG 7.5 and 1
    python -m sdkit.models.shapes.scorecard --controlnets -n 100   # the depth and pose ControlNets only
    torchrun --standalone --nproc_per_node gpu -m sdkit.models.shapes.scorecard -n 2000 --out scorecards/v1

Rows: ``one`` (full captions of one-object scenes: "a large red circle on the left, yellow background"), ``two``
(full captions of two-object scenes) and ``short`` (one object, colour and shape only: "a red circle"), each at every
``--cfg``. Prompt ``i`` of a row is scene ``i`` of that row's seeded scene list, generated with seed ``seed + i``, 20
Euler steps. The ControlNet rows condition each prompt on its own scene's depth map (IoU of the generated objects
with the map's near region) or, for scenes with a person, on its OpenPose skeleton (the share of limb pixels the
generated figure covers).

With ``--out`` the scorecard runs on the distributed sweep's mechanism (``sdkit.distributed``): each image is a cell
written atomically to ``OUT/cells``, the cells are dealt to all processes of a ``torchrun`` job, a stopped run
resumes by rendering only the missing images, and rank 0 scores the images read back from the files. Every image is
generated alone (batch 1), so it is the same image however the rows are split over processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from sdkit.models.shapes import evaluate, world

KEYS = ("color", "shape", "size", "position", "background", "two_objects", "all")
ROWS = ("one", "two", "short")
CHUNK = 8  # images per work item of a distributed scorecard


def row_scenes(row: str, n: int, seed: int) -> list[world.Scene]:
    """The ``n`` scenes of a scorecard row (``"one"``, ``"two"`` or ``"short"``), the same for the same seed."""
    if row not in ROWS:
        raise ValueError(f"row must be one of {', '.join(ROWS)}, got {row!r}")
    scenes = world.sample_scenes(n, seed, person_fraction=0.0, two_fraction=float(row == "two"), full_caption=True)
    if row == "short":
        scenes = [dataclasses.replace(s, say_size=False, say_position=False, say_background=False) for s in scenes]
    return scenes


def generate_scenes(
    kit: Any, scenes: list[world.Scene], *, seed: int, desc: str, control: tuple[str, Any] | None = None, **options: Any
) -> list[Any]:
    """One image per scene from its caption, scene ``i`` with seed ``seed + i``. ``control`` is
    ``(ControlNet name, control images)``, image ``i`` for scene ``i``; ``options`` go to ``kit.generate``."""
    images = []
    for i, scene in enumerate(tqdm(scenes, desc=desc, leave=False)):
        extra = {} if control is None else {"control": (control[0], control[1][i])}
        images += kit.generate(world.caption(scene), seed=seed + i, **extra, **options).images
    return images


def score(images: Any, scenes: Sequence[world.Scene]) -> dict[str, float]:
    """The evaluator's accuracies for a row's images (PIL images or a tensor), rounded to 4 places."""
    result = evaluate.evaluate(images, scenes)
    return {k: round(float(result[k]), 4) for k in KEYS if k in result}


def scorecard(
    kit: Any,
    *,
    n: int = 200,
    objects: int = 1,
    row: str | None = None,
    cfg: float = 7.5,
    steps: int = 20,
    seed: int = 0,
    sampler: str = "euler",
) -> dict[str, float]:
    """Accuracies of ``kit`` on the ``n`` prompts of one row, in this process: ``row`` (default ``"one"`` or
    ``"two"`` by ``objects``)."""
    row = row or ("two" if objects == 2 else "one")
    scenes = row_scenes(row, n, seed)
    images = generate_scenes(kit, scenes, seed=seed, desc=f"{row}, cfg {cfg:g}", steps=steps, cfg=cfg, sampler=sampler)
    return score(images, scenes)


def distributed_scorecard(
    kit: Any,
    rows: Sequence[tuple[str, float]],
    *,
    out: str | Path,
    n: int = 200,
    steps: int = 20,
    seed: int = 0,
    sampler: str = "euler",
    progress: bool = False,
    on_cell: Any = None,
    group: Any = None,
) -> list[dict[str, Any]] | None:
    """The scorecard rows ``(row, cfg)`` over all processes of a torchrun job (or this process alone), one image
    file per prompt under ``out``; call it on every rank. Rank 0 returns one dict per row (``row``, ``cfg``, ``n`` and
    the accuracies, equal to ``scorecard`` in one process), also written to ``out/scorecard.json``; others get None.
    """
    from sdkit.distributed.cells import CellFolder
    from sdkit.distributed.group import join
    from sdkit.distributed.share import render_share

    if group is None:
        with join() as joined:
            return distributed_scorecard(kit, rows, out=out, n=n, steps=steps, seed=seed, sampler=sampler,
                                         progress=progress, on_cell=on_cell, group=joined)  # fmt: skip
    rows = [(str(r), float(c)) for r, c in rows]
    scenes = {r: row_scenes(r, n, seed) for r in {r for r, _ in rows}}
    folder = CellFolder(out, len(rows), n)
    definition = {"sdkit_scorecard": 1, "model": kit.name, "rows": rows, "n": n, "steps": steps, "seed": seed,
                  "sampler": sampler}  # fmt: skip
    folder.prepare(definition)
    run = group.broadcast(uuid.uuid4().hex[:12] if group.is_main else None)
    done: set[tuple[int, int]] = set().union(*group.all_gather(folder.done()))
    items = [
        [(r, i) for i in range(start, min(start + CHUNK, n)) if (r, i) not in done]
        for r in range(len(rows))
        for start in range(0, n, CHUNK)
    ]
    items = [item for item in items if item]
    options = dict(steps=steps, sampler=sampler)

    def render(item: list[tuple[int, int]]) -> Iterator[tuple[int, int, Any, None]]:
        for r, i in item:
            name, cfg = rows[r]
            generation = kit.generate(world.caption(scenes[name][i]), seed=seed + i, cfg=cfg, **options)
            yield r, i, generation, None

    render_share(group, folder, items, [len(item) for item in items], render, run=run, already_done=len(done),
                 desc="scorecard", progress=progress, on_cell=on_cell)  # fmt: skip
    if not group.is_main:
        return None
    results = []
    for r, (name, cfg) in enumerate(rows):
        images = [folder.read(r, i)[0] for i in range(n)]
        results.append({"row": name, "cfg": cfg, "n": n, **score(images, scenes[name])})
    (folder.path / "scorecard.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return results


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
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: sdkit's default)")
    p.add_argument("--out", help="image folder: resumable, and split over the processes of a torchrun job")
    p.add_argument("--controlnets", action="store_true", help="score the depth and pose ControlNets instead")
    args = p.parse_args(argv)
    if args.out and args.controlnets:
        p.error("--controlnets runs in one process; leave out --out")
    import torch

    from sdkit.limits import default_threads

    torch.set_num_threads(args.threads or default_threads())
    t0 = time.perf_counter()
    if args.out:
        from sdkit.distributed.group import join

        with join() as group:
            kit = sdkit.load(args.model, device=group.device)
            wanted = [(r, c) for c in args.cfg for r in args.rows]
            results = distributed_scorecard(kit, wanted, out=args.out, n=args.n, seed=args.seed, progress=True,
                                            group=group)  # fmt: skip
        for row in results or []:
            print(json.dumps(row), flush=True)
        if results is not None:
            print(f"# {len(results) * args.n} images scored in {time.perf_counter() - t0:.0f} s")
        return
    kit = sdkit.load(args.model)
    if args.controlnets:
        cfg = args.cfg[0]  # the first of --cfg (7.5 by default)
        print(json.dumps({"n": args.n, "cfg": cfg, **controlnet_scorecard(kit, n=args.n, cfg=cfg, seed=args.seed)}))
        print(f"# {2 * args.n} images in {time.perf_counter() - t0:.0f} s")
        return
    count = 0
    for cfg in args.cfg:
        for row in args.rows:
            result = scorecard(kit, n=args.n, row=row, cfg=cfg, seed=args.seed)
            print(json.dumps({"row": row, "cfg": cfg, **result}), flush=True)
            count += args.n
    print(f"# {count} images in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
