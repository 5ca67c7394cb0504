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


def demo_kit(model: str = "shapes", *, size: int = 64, steps: int = 8, quiet: bool = False) -> Any:
    """Load ``model`` (any source ``sdkit.load`` takes). If it is an embedded model whose weights are not
    installed, build a tiny random SD1 model instead (once per session), with defaults of ``size`` pixels
    and ``steps`` steps so that notebooks stay fast on a CPU, and say so."""
    import sdkit
    from sdkit.loading import EMBEDDED

    if model not in EMBEDDED or embedded_available(model):
        return sdkit.load(model)
    if "kit" not in _FALLBACK:
        from sdkit.testing import save_tiny_model

        folder = Path(tempfile.mkdtemp(prefix="sdkit-demo-")) / "tiny-random-sd1"
        save_tiny_model(folder, "sd1")
        kit = sdkit.load(str(folder))
        kit.defaults = replace(kit.defaults, width=size, height=size, steps=steps)
        _FALLBACK["kit"] = kit
    if not quiet:
        print(
            f"note: the embedded {model!r} weights are not installed; using a tiny random SD1 model "
            "(real architecture, untrained: images are noise, the mechanics are real)"
        )
    return _FALLBACK["kit"]
