"""Looking at a sampler run (a ``sdkit.trace.Trace``): previews per step, sigmas, CFG parts.

Every plot returns a matplotlib Figure that shows itself in Jupyter (``sdkit.viz.figure``; matplotlib is imported
only when plotting).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sdkit.latents import Latents, LatentSpace

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from sdkit.viz.figure import Figure

ROW_TITLES = {"x": "x (noisy)", "denoised": "x0 estimate", "eps": "eps (noise)", "x_next": "x next"}


def _space_for(trace: Any, decoder: Any) -> LatentSpace:
    space = getattr(trace, "space", None) or getattr(decoder, "space", None)
    if space is None:
        raise ValueError("the trace does not know its latent space: set trace.space = kit.vae.space")
    return space


def _columns(n: int, max_columns: int) -> list[int]:
    """Up to ``max_columns`` step indices, evenly spread, always including the first and last."""
    if n <= max_columns:
        return list(range(n))
    return sorted({round(k) for k in np.linspace(0, n - 1, max_columns)})


def _to_array(latents: Latents, decoder: Any) -> np.ndarray:
    from sdkit.previews import preview

    image = preview(latents, decoder)
    return image.tensor[0].permute(1, 2, 0).clamp(0, 1).numpy()


def step_previews(
    trace: Any, decoder: Any = "linear", rows: tuple[str, ...] = ("x", "denoised"), *, index: int = 0, max_columns=10
) -> tuple[list[int], dict[str, list[np.ndarray]]]:
    """The previews ``plot_steps`` draws, as ``(step indices, {row: [h, w, 3] arrays})`` (testable)."""
    space = _space_for(trace, decoder)
    cols = _columns(len(trace), max_columns)
    out: dict[str, list[np.ndarray]] = {}
    for row in rows:
        arrays = []
        for i in cols:
            lat = trace.latents(i, row) if trace.space is not None else _latents(trace, i, row, space)
            if row == "eps":  # unit-variance noise: map to the preview's range with a plain linear view
                lat = Latents(lat.tensor / 4, space)
            arrays.append(_to_array(lat[index], decoder))
        out[row] = arrays
    return cols, out


def _latents(trace: Any, i: int, row: str, space: LatentSpace) -> Latents:
    s = trace.steps[i]
    t = trace.eps_at(i) if row == "eps" else getattr(s, row).float()
    return Latents(t, space)


def plot_steps(
    trace: Any,
    decoder: Any = "linear",
    rows: tuple[str, ...] = ("x", "denoised"),
    *,
    index: int = 0,
    max_columns: int = 10,
) -> Figure:
    """A grid of previews: one column per (picked) step titled with its sigma, one row per quantity."""
    from sdkit.viz.figure import Figure

    cols, previews = step_previews(trace, decoder, rows, index=index, max_columns=max_columns)
    fig = Figure(figsize=(1.6 * len(cols), 1.7 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(cols), squeeze=False)
    for r, row in enumerate(rows):
        for c, i in enumerate(cols):
            ax = axes[r][c]
            ax.imshow(previews[row][c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"step {i}\nσ={trace.steps[i].sigma:.3g}", fontsize=8)
            if c == 0:
                ax.set_ylabel(ROW_TITLES.get(row, row), fontsize=8)
    name = decoder if isinstance(decoder, str) else type(decoder).__name__
    fig.suptitle(f"sampler steps ({name} preview)", fontsize=9)
    return fig


def plot_sigmas(trace: Any, ax: Any = None) -> Axes:
    """Sigma per step (log scale) of a trace, on ``ax`` or a new figure; returns the Axes (it shows itself)."""
    from sdkit.viz.figure import new_axes

    ax = new_axes(ax, (4, 2.5))
    ax.semilogy(range(len(trace)), trace.sigmas.numpy(), "o-", label="sigma")
    ax.set_xlabel("step")
    ax.set_ylabel("sigma")
    return ax


def cfg_norms(trace: Any) -> dict[str, np.ndarray]:
    """Per model evaluation: RMS of the uncond and cond x0 estimates and of their difference (the guidance
    direction ``cond - uncond`` that the CFG scale multiplies)."""

    def rms(t: torch.Tensor) -> np.ndarray:
        return t.float().pow(2).mean(dim=tuple(range(1, t.ndim))).sqrt().numpy()

    cond, uncond = trace.cfg_cond, trace.cfg_uncond
    return {"uncond": rms(uncond), "cond": rms(cond), "cond - uncond": rms(cond - uncond)}


def plot_cfg_parts(trace: Any, decoder: Any = "linear", *, index: int = 0, max_columns: int = 8) -> Figure:
    """Rows: uncond x0, cond x0, and their difference (amplified), per picked evaluation."""
    from sdkit.viz.figure import Figure

    space = _space_for(trace, decoder)
    parts = trace.cfg_parts
    if not parts:
        raise ValueError("the trace has no CFG parts (generate with cfg != 1 or trace=True)")
    cols = _columns(len(parts), max_columns)
    fig = Figure(figsize=(1.6 * len(cols), 5.0), layout="constrained")
    axes = fig.subplots(3, len(cols), squeeze=False)
    for c, k in enumerate(cols):
        p = parts[k]
        u, co = p.denoised_uncond.float()[index : index + 1], p.denoised_cond.float()[index : index + 1]
        diff = (co - u) / (co - u).abs().amax().clamp_min(1e-6)  # direction only, scaled to [-1, 1]
        for r, t in enumerate((u, co, diff)):
            img = _to_array(Latents(t, space), decoder if r < 2 else "linear")
            axes[r][c].imshow(img, interpolation="nearest")
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
        axes[0][c].set_title(f"σ={float(p.sigma.reshape(-1)[0]):.3g}", fontsize=8)
    for r, label in enumerate(("uncond x0", "cond x0", "cond - uncond")):
        axes[r][0].set_ylabel(label, fontsize=8)
    return fig
