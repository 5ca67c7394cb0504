"""Plots and widgets for notebooks. matplotlib is imported only when a plot is made."""

from __future__ import annotations

from sdkit.viz.schedules import plot_schedules, schedule_stats

__all__ = ["plot_schedules", "schedule_stats"]
