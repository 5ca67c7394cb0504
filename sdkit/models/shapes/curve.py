"""The learning curve of a training run: scorecard rows against samples seen.

``Trainer.curve_point`` (``--eval-every N``) scores the UNet's EMA weights on three rows, each ``n`` prompts at 20
Euler steps and CFG 7.5 with the trainer's own sampler, and appends one JSON line to ``OUT/curve.jsonl``:

- ``one_color``, ``one_shape``, ``one_position``: full captions of one-object scenes;
- ``two_objects``: full captions of two-object scenes, both objects right;
- ``short_color``, ``short_shape``: one object named by colour and shape only ("a red circle").

The prompts are the scorecard's rows (``scorecard.row_scenes``) with a seed of their own, so the curve never scores
the exact prompts of the shipped scorecard. ``OUT/losses.jsonl`` holds every step's loss.

    python -m sdkit.models.shapes.curve runs/shapes            # writes runs/shapes/curve.png, prints the last point
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sdkit.models.shapes import world
from sdkit.models.shapes.scorecard import row_scenes
from sdkit.models.shapes.scorecard import score as score_row

CURVE_SEED = 424242  # the curve's prompts: not the scorecard's (seed 0)
ROW_KEYS = (("one", ("color", "shape", "position")), ("two", ("two_objects",)), ("short", ("color", "shape")))
SERIES = ("one_color", "one_shape", "one_position", "two_objects", "short_color", "short_shape")


def score(trainer: Any, n: int, cfg: float = 7.5) -> dict[str, float]:
    """The curve's scores for the trainer's models as they are now (``n`` prompts per row)."""
    out: dict[str, float] = {}
    for row, keys in ROW_KEYS:
        scenes = row_scenes(row, n, CURVE_SEED)
        result = score_row(trainer.images_for([world.caption(s) for s in scenes], cfg=cfg, seed=CURVE_SEED), scenes)
        out.update({key if key == "two_objects" else f"{row}_{key}": result[key] for key in keys})
    return out


def read(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``curve.jsonl`` or ``losses.jsonl`` file."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def plot(curve: list[dict[str, Any]], losses: list[dict[str, Any]] | None = None) -> Any:
    """Scores against samples seen (and, when given, the UNet stage's loss beside them), as an sdkit ``Figure``."""
    from sdkit.viz.figure import Axes, Figure

    fig = Figure(figsize=(10 if losses else 6, 3.6), layout="constrained")
    ax = fig.add_subplot(1, 2 if losses else 1, 1, axes_class=Axes)
    points = [row for row in curve if row.get("stage") == "unet"]
    x = [row["samples"] / 1e6 for row in points]
    for name in SERIES:
        if points and name in points[0]:
            ax.plot(x, [row[name] for row in points], marker="o", ms=3, label=name.replace("_", " "))
    ax.set(xlabel="samples seen (millions)", ylabel="share right", ylim=(0, 1.02), title="prompt following")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if losses:
        steps = [row for row in losses if row.get("stage") == "unet"]
        lx = fig.add_subplot(1, 2, 2, axes_class=Axes)
        lx.plot([row["samples"] / 1e6 for row in steps], [row["loss"] for row in steps], lw=0.6, color="0.3")
        lx.set(xlabel="samples seen (millions)", ylabel="epsilon MSE", title="UNet loss", yscale="log")
        lx.grid(alpha=0.3)
    return fig


def compare(runs: dict[str, list[dict[str, Any]]], series: tuple[str, ...] = ("one_shape", "two_objects")) -> Any:
    """Several runs' curves side by side, one panel per series (e.g. two designs trained for the same samples)."""
    from sdkit.viz.figure import Axes, Figure

    fig = Figure(figsize=(3.6 * len(series), 3.2), layout="constrained")
    for k, name in enumerate(series):
        ax = fig.add_subplot(1, len(series), k + 1, axes_class=Axes)
        for label, rows in runs.items():
            points = [row for row in rows if row.get("stage") == "unet" and name in row]
            ax.plot([row["samples"] / 1e3 for row in points], [row[name] for row in points], marker="o", ms=3,
                    label=label)  # fmt: skip
        ax.set(xlabel="samples seen (thousands)", title=name.replace("_", " "), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Plot a training run's learning curve.")
    parser.add_argument("run", help="the training run's --out folder (curve.jsonl, losses.jsonl)")
    parser.add_argument("--png", help="where to write the picture (default RUN/curve.png)")
    parser.add_argument("--compare", nargs="+", metavar="LABEL=RUN", help="other runs to draw beside this one")
    args = parser.parse_args(argv)
    run = Path(args.run)
    if args.compare:
        runs = {run.name: read(run / "curve.jsonl")}
        runs.update({label: read(Path(folder) / "curve.jsonl") for label, _, folder in
                     (item.partition("=") for item in args.compare)})  # fmt: skip
        target = Path(args.png) if args.png else run / "compare.png"
        compare(runs).savefig(target, dpi=110)
        print(f"wrote {target}")
        return
    if not (run / "curve.jsonl").exists():
        parser.error(f"{run / 'curve.jsonl'} does not exist: train with --eval-every N")
    curve = read(run / "curve.jsonl")
    losses = read(run / "losses.jsonl") if (run / "losses.jsonl").exists() else None
    target = Path(args.png) if args.png else run / "curve.png"
    plot(curve, losses).savefig(target, dpi=110)
    print(json.dumps(curve[-1]) if curve else "no points yet")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
