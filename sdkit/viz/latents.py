"""Looking at latents: the channels side by side, and previews (linear, TAESD, VAE) next to each other."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sdkit.latents import Latents

if TYPE_CHECKING:
    from sdkit.viz.figure import Figure


def plot_channels(latents: Latents, *, index: int = 0, size: float = 1.8) -> Figure:
    """One panel per latent channel of image ``index`` (own colour scale each, colorbar), as a Figure."""
    from sdkit.viz.figure import Figure

    x = latents.tensor[index].detach().float().cpu()
    fig = Figure(figsize=(size * x.shape[0] + 0.5, size + 0.5), layout="constrained")
    axes = fig.subplots(1, x.shape[0], squeeze=False)[0]
    for c, ax in enumerate(axes):
        im = ax.imshow(x[c].numpy(), cmap="RdBu_r")
        ax.set_title(f"channel {c}\nmean {float(x[c].mean()):.2f}, std {float(x[c].std()):.2f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.7)
    return fig


def plot_previews(latents: Latents, methods: Mapping[str, Any], *, index: int = 0, size: float = 2.2) -> Figure:
    """The same latents through several decoders (``{"linear": "linear", "VAE": kit.vae, ...}``), side by side
    at their own output resolution (the linear preview is 1/8 of the image size)."""
    from sdkit.previews import preview
    from sdkit.viz.figure import Figure

    fig = Figure(figsize=(size * len(methods), size + 0.4), layout="constrained")
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    for ax, (name, method) in zip(axes, methods.items(), strict=True):
        image = preview(latents[index], method)
        ax.imshow(image.tensor[0].permute(1, 2, 0).numpy(), interpolation="nearest")
        w, h = image.size
        ax.set_title(f"{name} ({w}x{h})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
