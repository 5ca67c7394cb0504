"""``Figure`` and ``Axes``: matplotlib's own classes, plus a ``_repr_png_`` so that they show themselves.

Every plot in ``sdkit.viz`` returns one of these, made without pyplot. Why both choices:

- A figure returned as a cell's value is shown by IPython only through a display formatter. pyplot's inline
  backend registers one for ``matplotlib.figure.Figure``, but only once it is active (``%matplotlib inline``,
  or pyplot imported under it); under Agg (``MPLBACKEND=Agg``, CI, docs builds) or any other backend the cell
  shows ``<Figure size 1600x340 with 20 Axes>``. ``_repr_png_`` is what IPython, JupyterLab, the classic
  notebook, VS Code and nbconvert all ask for when no formatter is registered; when the inline one is, it
  takes precedence and draws the same figure, so there is one image either way.
- pyplot keeps every figure it makes in a global list, and the inline backend draws that list at the end of
  the cell: a pyplot figure that is also returned would appear twice. These figures are not in that list.

They are otherwise the matplotlib classes (``savefig``, ``axes``, ``add_subplot``, ``colorbar``...).
This module imports matplotlib; import it where a plot is made.
"""

from __future__ import annotations

import io
from typing import Any

from matplotlib.axes import Axes as _Axes
from matplotlib.figure import Figure as _Figure


def figure_png(fig: _Figure) -> bytes:
    """The figure as PNG bytes, as the inline backend draws it (figure dpi, cropped to what is drawn)."""
    buf = io.BytesIO()
    fig.savefig(
        buf,
        format="png",
        dpi=fig.dpi,
        bbox_inches="tight",
        facecolor=fig.get_facecolor(),
        edgecolor=fig.get_edgecolor(),
    )
    return buf.getvalue()


class Figure(_Figure):
    """A ``matplotlib.figure.Figure`` that Jupyter shows as a PNG whatever the backend (and never twice)."""

    def _repr_png_(self) -> bytes:
        return figure_png(self)


class Axes(_Axes):
    """A ``matplotlib.axes.Axes`` that, as a cell's value, shows its whole figure as a PNG."""

    def _repr_png_(self) -> bytes:
        return figure_png(self.figure.figure)  # the root figure when the axes sit in a subfigure


def new_axes(ax: Any, figsize: tuple[float, float]) -> Any:
    """``ax`` itself when given, else the one ``Axes`` of a new ``Figure`` of ``figsize`` inches."""
    if ax is not None:
        return ax
    return Figure(figsize=figsize, layout="constrained").add_subplot(axes_class=Axes)
