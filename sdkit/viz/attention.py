"""Cross-attention heat maps on the image (``sdkit.attention.AttentionMaps``): one panel per word, DAAM style."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image as PILImage
from torch import Tensor

if TYPE_CHECKING:
    from sdkit.viz.figure import Figure


def heat_colors(heat: Float[Tensor, "H W"]) -> np.ndarray:
    """A [0, 1] map as RGB ``[H, W, 3]`` floats with matplotlib's "jet" colormap (as DAAM draws them)."""
    from matplotlib import colormaps

    return colormaps["jet"](heat.detach().float().clamp(0, 1).cpu().numpy())[..., :3]


def overlay(image: PILImage.Image, heat: Float[Tensor, "H W"], alpha: float = 0.5) -> PILImage.Image:
    """``image`` blended with the heat map's colours (``alpha`` of heat); the map is resized to the image."""
    heat = heat.detach().float().cpu()
    if tuple(heat.shape) != (image.height, image.width):
        heat = torch.nn.functional.interpolate(heat[None, None], size=(image.height, image.width), mode="bilinear")[
            0, 0
        ]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    mixed = (1 - alpha) * base + alpha * heat_colors(heat)
    return PILImage.fromarray((mixed.clip(0, 1) * 255).round().astype(np.uint8))


def word_overlays(
    maps: Any, image: PILImage.Image, words: Sequence[str], *, tokens: Any = None, index: int = 0, alpha: float = 0.5
) -> dict[str, PILImage.Image]:
    """``{word: image with that word's heat map}`` for image ``index`` of the captured batch."""
    return {w: overlay(image, maps.word_map(w, tokens)[index], alpha) for w in words}


def plot_word_maps(
    maps: Any,
    image: PILImage.Image,
    words: Sequence[str],
    *,
    tokens: Any = None,
    index: int = 0,
    alpha: float = 0.5,
    size: float = 2.2,
) -> Figure:
    """The image, then one overlay per word, in one row; returns the matplotlib Figure."""
    from sdkit.viz.figure import Figure

    panels = {"image": image, **word_overlays(maps, image, words, tokens=tokens, index=index, alpha=alpha)}
    fig = Figure(figsize=(size * len(panels), size + 0.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, picture) in zip(axes, panels.items(), strict=True):
        ax.imshow(picture)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def plot_layer_maps(maps: Any, word: str, *, tokens: Any = None, step: int | None = None, index: int = 0) -> Figure:
    """Unaggregated: ``word``'s map in every captured layer (summed over heads) at one step (default: the
    last), at each layer's own resolution; shows that low-resolution layers carry the coarse layout."""
    from sdkit.viz.figure import Figure

    positions = maps.token_positions(word, tokens)
    step = maps.steps[-1] if step is None else step
    layers = [n for n in maps.layers if (step, n) in maps.probs]
    fig = Figure(figsize=(2.0 * len(layers), 2.5), layout="constrained")
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    for ax, name in zip(axes, layers, strict=True):
        m = maps.spatial(step, name)[index].float().sum(0)[positions].sum(0)  # [h, w]
        ax.imshow(m.numpy(), cmap="jet")
        h, w = maps.sizes[name]
        ax.set_title(f"{name.split('.transformer')[0]}\n{h}x{w}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{word!r} per layer, step {step}", fontsize=9)
    return fig
