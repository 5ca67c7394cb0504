"""Noise schedules side by side: sigma, log-SNR and how much of the remaining noise each step removes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from sdkit.viz.figure import Figure

Quantity = Literal["sigma", "log_snr", "noise_removed"]

_TITLES = {
    "sigma": ("sigma (log scale)", "noise level per step"),
    "log_snr": ("log SNR = -2 log sigma", "signal-to-noise ratio"),
    "noise_removed": ("(sigma_i - sigma_i+1) / sigma_i", "noise removed per step"),
}


def schedule_stats(sigmas: Float[Tensor, " n1"]) -> dict[str, Tensor]:
    """The plotted quantities as float64 tensors: ``sigma`` (n+1 values), ``log_snr`` (the nonzero sigmas;
    sigma-space SNR is 1 / sigma^2) and ``noise_removed`` (n values, 1.0 for a final step to 0)."""
    s = torch.as_tensor(sigmas).detach().cpu().double()
    if s.ndim != 1 or s.numel() < 2:
        raise ValueError(f"a schedule is a 1-D tensor of at least 2 sigmas, got shape {tuple(s.shape)}")
    positive = s[s > 0]
    return {"sigma": s, "log_snr": -2 * positive.log(), "noise_removed": (s[:-1] - s[1:]) / s[:-1]}


def plot_schedules(
    schedules: Mapping[str, Tensor] | Tensor,
    what: Sequence[Quantity] = ("sigma", "log_snr", "noise_removed"),
    *,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """One figure, one panel per quantity in ``what``, every schedule overlaid (x axis: step index).

    ``plot_schedules({"karras": make_sigmas("karras", 20, model), "normal": ...})``; a single tensor is
    plotted as "sigmas". Returns the Figure (it displays itself in Jupyter); pyplot's global state is not used.
    """
    from sdkit.viz.figure import Figure

    if isinstance(schedules, Tensor):
        schedules = {"sigmas": schedules}
    if not schedules:
        raise ValueError("plot_schedules needs at least one schedule")
    what = tuple(what)
    unknown = [w for w in what if w not in _TITLES]
    if unknown or not what:
        raise ValueError(f"what must be a non-empty subset of {list(_TITLES)}, got {list(what)}")
    stats = {name: schedule_stats(s) for name, s in schedules.items()}
    fig = Figure(figsize=figsize or (4.2 * len(what), 3.4), layout="constrained")
    axes = fig.subplots(1, len(what), squeeze=False)[0]
    for ax, quantity in zip(axes, what, strict=True):
        ylabel, title = _TITLES[quantity]
        for name, st in stats.items():
            values = st[quantity].numpy()
            if quantity == "sigma":
                # a log axis cannot show the final 0: plot the positive sigmas
                values = values[values > 0]
            ax.plot(
                range(len(values)), values, marker="o", markersize=3, label=f"{name} ({len(st['sigma']) - 1} steps)"
            )
        if quantity == "sigma":
            ax.set_yscale("log")
        if quantity == "noise_removed":
            ax.set_ylim(0, 1.05)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    return fig
