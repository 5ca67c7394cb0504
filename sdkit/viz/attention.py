"""Cross-attention heat maps on the image (``sdkit.attention.AttentionMaps``): one panel per word, DAAM style.

What the colours show: ``word_attention``, the mean attention probability each image pixel gives a word (over the
chosen heads, layers and steps). Each panel spans its own map's min..max, so a word whose map varies little still
shows where it is highest, and a colour bar under it gives the range, so that the values stay readable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image as PILImage
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from sdkit.viz.figure import Figure

CMAP = "jet"  # as DAAM draws its maps


def heat_colors(heat: Float[Tensor, "H W"]) -> np.ndarray:
    """A [0, 1] map as RGB ``[H, W, 3]`` floats with matplotlib's "jet" colormap (as DAAM draws them)."""
    from matplotlib import colormaps

    return colormaps[CMAP](heat.detach().float().clamp(0, 1).cpu().numpy())[..., :3]


def overlay(
    image: PILImage.Image, heat: Float[Tensor, "H W"], alpha: float = 0.5, vmin: float = 0.0, vmax: float = 1.0
) -> PILImage.Image:
    """``image`` blended with the heat map's colours (``alpha`` of heat), ``vmin``..``vmax`` spanning the colormap;
    the map is resized to the image."""
    if not vmax > vmin:
        raise ValueError(f"vmax must be greater than vmin, got vmin={vmin}, vmax={vmax}")
    heat = heat.detach().float().cpu()
    if tuple(heat.shape) != (image.height, image.width):
        heat = torch.nn.functional.interpolate(heat[None, None], size=(image.height, image.width), mode="bilinear")[
            0, 0
        ]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    mixed = (1 - alpha) * base + alpha * heat_colors((heat - vmin) / (vmax - vmin))
    return PILImage.fromarray((mixed.clip(0, 1) * 255).round().astype(np.uint8))


def chosen_layers(maps: Any, layers: Iterable[str] | None) -> list[str]:
    """The captured layers whose names contain any of ``layers`` (names or fragments such as ``"down_blocks.1"``);
    all of them for None."""
    if layers is None:
        return list(maps.layers)
    wanted = [layers] if isinstance(layers, str) else list(layers)
    found = [n for n in maps.layers if any(f in n for f in wanted)]
    if not found:
        raise ValueError(f"layers {wanted} match no captured layer; captured: {maps.layers}")
    return found


def word_attention(
    maps: Any,
    word: str,
    *,
    tokens: Any = None,
    steps: Iterable[int] | None = None,
    layers: Iterable[str] | None = None,
) -> Float[Tensor, "b H W"]:
    """Mean cross-attention probability that each image pixel gives ``word`` (summed over its tokens).

    DAAM's sum over heads, layers and steps (``maps.token_maps``, unnormalised), divided by the number of head maps
    summed: the values are probabilities, comparable between words, layers and models. ``steps``: UNet evaluation
    indices (default all); ``layers``: names or name fragments (default all).
    """
    steps = maps.steps if steps is None else list(steps)
    names = chosen_layers(maps, layers)
    total = maps.token_maps(steps, names, normalize=False)[:, maps.token_positions(word, tokens)].sum(dim=1)
    heads = sum(head_maps(maps[(s, n)]) for s in steps for n in names if (s, n) in maps.probs)
    return total / heads


def head_maps(probs: Float[Tensor, "b heads q t"]) -> int:
    """How many attention distributions a record sums: its heads, or, captured with ``keep_heads=False``, the heads
    summed at capture time (each distribution sums to 1 over the tokens)."""
    return round(float(probs[0, :, 0].double().sum()))


def _span(heat: Tensor) -> tuple[float, float]:
    """min..max of a map, widened when it is flat (a flat map shows one colour)."""
    lo, hi = float(heat.min()), float(heat.max())
    return (lo, hi) if hi > lo else (lo, lo + max(abs(lo), 1e-12))


def word_overlays(
    maps: Any,
    image: PILImage.Image,
    words: Sequence[str],
    *,
    tokens: Any = None,
    index: int = 0,
    alpha: float = 0.5,
    steps: Iterable[int] | None = None,
    layers: Iterable[str] | None = None,
) -> dict[str, PILImage.Image]:
    """``{word: image with that word's map}`` for image ``index`` of the captured batch, each map spanning its own
    min..max (``word_attention``)."""
    out = {}
    for w in words:
        heat = word_attention(maps, w, tokens=tokens, steps=steps, layers=layers)[index]
        out[w] = overlay(image, heat, alpha, *_span(heat))
    return out


def add_colorbar(ax: Axes, vmin: float, vmax: float, label: str = "") -> Any:
    """A horizontal colour bar under ``ax`` for the ``jet`` range ``vmin..vmax``, ticks at both ends."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mappable = ScalarMappable(Normalize(vmin, vmax), cmap=CMAP)
    bar = ax.figure.colorbar(mappable, ax=ax, orientation="horizontal", fraction=0.07, pad=0.03, aspect=12)
    bar.set_ticks([vmin, vmax], labels=[f"{vmin:.3g}", f"{vmax:.3g}"])
    bar.ax.tick_params(labelsize=7, length=2)
    if label:
        bar.set_label(label, fontsize=7)
    return bar


def plot_word_maps(
    maps: Any,
    image: PILImage.Image,
    words: Sequence[str],
    *,
    tokens: Any = None,
    index: int = 0,
    alpha: float = 0.5,
    size: float = 2.2,
    steps: Iterable[int] | None = None,
    layers: Iterable[str] | None = None,
    shared_range: bool = False,
) -> Figure:
    """The image, then one overlay per word (``word_attention`` over ``steps`` and ``layers``) with a colour bar.

    Each overlay spans its own map's min..max (contrast per word), or, with ``shared_range``, one range for all
    words (which word gets more attention where). Returns the matplotlib Figure.
    """
    from sdkit.viz.figure import Figure

    steps = maps.steps if steps is None else list(steps)
    heats = {w: word_attention(maps, w, tokens=tokens, steps=steps, layers=layers)[index] for w in words}
    spans = {w: _span(h) for w, h in heats.items()}
    if shared_range:
        lo, hi = min(s[0] for s in spans.values()), max(s[1] for s in spans.values())
        spans = dict.fromkeys(heats, (lo, hi))
    fig = Figure(figsize=(size * (len(words) + 1), size + 0.9), layout="constrained")
    axes = fig.subplots(1, len(words) + 1, squeeze=False)[0]
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    for ax, (w, heat) in zip(axes[1:], heats.items(), strict=True):
        ax.imshow(overlay(image, heat, alpha, *spans[w]))
        ax.set_title(repr(w), fontsize=9)
        add_colorbar(ax, *spans[w])
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    names = chosen_layers(maps, layers)
    where = "all layers" if len(names) == len(maps.layers) else ", ".join(n.split(".transformer")[0] for n in names)
    fig.suptitle(
        f"mean attention probability per pixel; {len(steps)} steps ({steps[0]}..{steps[-1]}), {where}"
        + ("; one range" if shared_range else "; each map its own min..max"),
        fontsize=8,
    )
    return fig


def plot_layer_maps(
    maps: Any, word: str, *, tokens: Any = None, step: int | Sequence[int] | None = None, index: int = 0
) -> Figure:
    """Unaggregated: ``word``'s map in every captured layer (mean attention probability over heads; over steps
    too when ``step`` is a list of steps; default: the last step), at each layer's own resolution, each with a
    colour bar; shows that low-resolution layers carry the coarse layout."""
    from sdkit.viz.figure import Figure

    positions = maps.token_positions(word, tokens)
    if step is None:
        step = maps.steps[-1]
    steps = [step] if isinstance(step, int) else list(step)
    layers = [n for n in maps.layers if any((s, n) in maps.probs for s in steps)]
    fig = Figure(figsize=(2.0 * len(layers), 3.0), layout="constrained")
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    for ax, name in zip(axes, layers, strict=True):
        records = [s for s in steps if (s, name) in maps.probs]
        heads = sum(head_maps(maps[(s, name)]) for s in records)
        maps_hw = [maps.spatial(s, name)[index].float().sum(0)[positions].sum(0) for s in records]
        m = torch.stack(maps_hw).sum(0) / heads  # [h, w]
        vmin, vmax = _span(m)
        ax.imshow(m.numpy(), cmap=CMAP, vmin=vmin, vmax=vmax)
        add_colorbar(ax, vmin, vmax)
        h, w = maps.sizes[name]
        ax.set_title(f"{name.split('.transformer')[0]}\n{h}x{w}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    which = f"step {steps[0]}" if len(steps) == 1 else f"mean over {len(steps)} steps ({steps[0]}..{steps[-1]})"
    fig.suptitle(f"{word!r} per layer, {which} (mean attention probability over heads)", fontsize=9)
    return fig
