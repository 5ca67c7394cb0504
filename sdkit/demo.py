"""``demo_kit``: the model the notebooks use. The embedded "shapes" model when its weights are installed,
otherwise a tiny *random* SD1 model (the real architecture at toy size, untrained) so that every notebook
still runs top to bottom: its pictures are noise, but every shape, step and plot is the real thing.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

_FALLBACK: dict[str, Any] = {}


def embedded_available(name: str = "shapes") -> bool:
    """Whether the weights of an embedded model are installed."""
    from sdkit.loading import EMBEDDED

    return name in EMBEDDED and (EMBEDDED[name] / "model_index.json").is_file()


# The bars for a ControlNet that visibly steers the embedded model (measured by its training run).
CONTROLNET_BARS = {"controlnet_depth": ("depth_iou", 0.5), "controlnet_pose": ("pose_coverage", 0.7)}


def controlnet_trained(kit: Any, name: str) -> bool:
    """Whether ``kit``'s ControlNet ``name`` met its bar when it was trained (metrics in the model's sdkit.json)."""
    metric, bar = CONTROLNET_BARS[name]
    return name in kit.extras and float(kit.info.get("metrics", {}).get(metric, 0.0)) >= bar


def _tiny_folder() -> Path:
    """The tiny random model's folder, written once per machine and reused by every notebook kernel.

    It is built in a private temporary folder and renamed into place, so concurrent kernels never read a
    half-written model (the loser of a race just discards its copy)."""
    import os
    import shutil

    from sdkit import __version__
    from sdkit.testing import save_tiny_model

    folder = Path(tempfile.gettempdir()) / f"sdkit-demo-tiny-sd1-{__version__}"
    if not (folder / "model_index.json").is_file():
        staging = Path(tempfile.mkdtemp(prefix="sdkit-demo-")) / "model"
        save_tiny_model(staging, "sd1")
        try:
            os.replace(staging, folder)
        except OSError:  # another kernel got there first
            pass
        shutil.rmtree(staging.parent, ignore_errors=True)
    return folder


def demo_kit(
    model: str = "shapes", *, size: int = 64, steps: int = 8, quiet: bool = False, threads: int | None = None
) -> Any:
    """Load ``model`` (any source ``sdkit.load`` takes). If it is an embedded model whose weights are not
    installed, build a tiny random SD1 model instead (once per session), with defaults of ``size`` pixels
    and ``steps`` steps so that notebooks stay fast on a CPU, and say so.

    As the notebooks' first call it also sets torch's CPU threads: ``threads``, else OMP_NUM_THREADS if set (torch
    follows it by itself), else ``sdkit.limits.default_threads()`` (half the cores, 1 to 4: on a busy 2-core laptop
    torch's default of 2 threads made one image 10-17x slower, see there)."""
    import os

    import torch

    import sdkit
    from sdkit.limits import check_int, default_threads

    if threads is not None:
        torch.set_num_threads(check_int("threads", threads))
    elif not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(default_threads())
    from sdkit.loading import EMBEDDED

    if model not in EMBEDDED or embedded_available(model):
        return sdkit.load(model)
    if "kit" not in _FALLBACK:
        kit = sdkit.load(str(_tiny_folder()))
        kit.defaults = replace(kit.defaults, width=size, height=size, steps=steps)
        _FALLBACK["kit"] = kit
    if not quiet:
        print(
            f"note: the embedded {model!r} weights are not installed; using a tiny random SD1 model "
            "(real architecture, untrained: images are noise, the mechanics are real)"
        )
    return _FALLBACK["kit"]
