"""Every plot of ``sdkit.viz`` shows itself in Jupyter as one PNG, whatever the matplotlib backend.

Oracles from outside sdkit: IPython's own display machinery (``DisplayFormatter``, which JupyterLab, the classic
notebook, VS Code and nbconvert all go through), the PNG that ``%matplotlib inline`` would draw for the same
figure (``IPython.core.pylabtools.print_figure``), PIL for decoding, and a real kernel run through nbclient.
"""

from __future__ import annotations

import importlib
import io
import os
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import nbclient
import nbformat
import numpy as np
import pytest
import torch
from IPython.core.formatters import DisplayFormatter
from IPython.core.pylabtools import print_figure
from matplotlib._pylab_helpers import Gcf
from PIL import Image as PILImage

import sdkit.viz
from sdkit.attention import capture_attention
from sdkit.viz.attention import plot_layer_maps, plot_word_maps
from sdkit.viz.embeddings import plot_cosine_similarities, plot_embedding_pca, plot_token_embeddings
from sdkit.viz.figure import Figure, new_axes
from sdkit.viz.grid import Grid
from sdkit.viz.latents import plot_channels, plot_previews
from sdkit.viz.schedules import plot_schedules
from sdkit.viz.steps import plot_cfg_parts, plot_sigmas, plot_steps

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("one_thread")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PROMPT = "a red circle on a blue square"


@pytest.fixture(scope="module")
def run(tiny_sd1_kit) -> tuple[Any, Any, Any]:
    """(kit, generation with a trace and CFG parts, cross-attention maps) of one small traced run."""
    with capture_attention(tiny_sd1_kit) as maps:
        gen = tiny_sd1_kit.generate(PROMPT, width=64, height=48, steps=3, seed=3, cfg=5.0, trace=True)
    return tiny_sd1_kit, gen, maps


def _grid() -> Grid:
    colours = [[(255, 0, 0), (0, 255, 0)], [(0, 0, 255), (255, 255, 0)]]
    images = [[PILImage.new("RGB", (16, 12), c) for c in row] for row in colours]
    return Grid(images, x_labels=["cfg=1", "cfg=7"], y_labels=["seed=1", "seed=2"], x_name="cfg", y_name="seed")


PLOTS: dict[str, Callable[[Any, Any, Any], Any]] = {
    "plot_schedules": lambda kit, gen, maps: plot_schedules({"a": torch.tensor([9.0, 3.0, 1.0, 0.0])}),
    "plot_steps": lambda kit, gen, maps: plot_steps(gen.trace, "linear", ("x", "denoised", "eps")),
    "plot_sigmas": lambda kit, gen, maps: plot_sigmas(gen.trace),
    "plot_cfg_parts": lambda kit, gen, maps: plot_cfg_parts(gen.trace, kit.vae),
    "plot_channels": lambda kit, gen, maps: plot_channels(gen.latents),
    "plot_previews": lambda kit, gen, maps: plot_previews(gen.latents, {"linear": "linear", "VAE": kit.vae}),
    "plot_word_maps": lambda kit, gen, maps: plot_word_maps(maps, gen.images[0], ["circle", "square"]),
    "plot_layer_maps": lambda kit, gen, maps: plot_layer_maps(maps, "circle"),
    "plot_token_embeddings": lambda kit, gen, maps: plot_token_embeddings(
        kit.prompts.encode(PROMPT), kit.prompts.tokenize(PROMPT)
    ),
    "plot_embedding_pca": lambda kit, gen, maps: plot_embedding_pca(kit.prompts, ["red", "blue", "circle"]),
    "plot_cosine_similarities": lambda kit, gen, maps: plot_cosine_similarities(kit.prompts, ["a red", "a blue"]),
    "Grid.plot": lambda kit, gen, maps: _grid().plot(),
    "Trace.plot": lambda kit, gen, maps: gen.trace.plot(kit.vae),
}


def _root(shown: Any) -> matplotlib.figure.Figure:
    return shown if isinstance(shown, matplotlib.figure.Figure) else shown.figure.figure


def _pixels(png: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGBA"))


@pytest.mark.parametrize("name", PLOTS)
def test_plot_shows_itself_as_one_png(name: str, run) -> None:
    before = Gcf.get_num_fig_managers()
    shown = PLOTS[name](*run)
    assert Gcf.get_num_fig_managers() == before  # not in pyplot's list: the inline backend cannot show it again
    png = shown._repr_png_()
    assert png[:8] == PNG_SIGNATURE
    fig = _root(shown)
    assert isinstance(fig, Figure)  # still a matplotlib Figure for savefig, axes, ...
    width, height = fig.get_size_inches() * fig.dpi
    pad = 2 * matplotlib.rcParams["savefig.pad_inches"] * fig.dpi + 1  # "tight" crops to what is drawn, then pads
    with PILImage.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        # about the canvas' size: not a thumbnail, not an empty crop
        assert 0.6 * width <= image.width <= width + pad and 0.6 * height <= image.height <= height + pad, image.size
    # the image %matplotlib inline shows for the same plot (made again: constrained layout moves a little between
    # a figure's first and second drawing, so both sides are first drawings)
    assert np.array_equal(_pixels(png), _pixels(print_figure(_root(PLOTS[name](*run)), "png")))
    # what Jupyter front ends receive for the cell's value
    data, _ = DisplayFormatter().format(shown)
    assert data["image/png"][:8] == PNG_SIGNATURE


def test_every_public_plot_is_covered() -> None:
    """A new ``plot_*`` in ``sdkit.viz`` must join ``PLOTS`` (widgets are views, not plots)."""
    found = set()
    for info in pkgutil.iter_modules(sdkit.viz.__path__):
        module = importlib.import_module(f"sdkit.viz.{info.name}")
        found |= {n for n, f in vars(module).items() if n.startswith("plot_") and f.__module__ == module.__name__}
    assert found and found <= set(PLOTS), sorted(found - set(PLOTS))


def test_given_axes_are_drawn_on_and_returned(run) -> None:
    fig = Figure()
    ax = fig.subplots()
    assert new_axes(ax, (3, 3)) is ax
    shown = plot_cosine_similarities(run[0].prompts, ["a red", "a blue"], ax=ax)
    assert shown is ax and len(ax.texts) == 4 and fig.axes == [ax]


def test_one_image_per_cell_under_agg_and_under_the_inline_backend(tmp_path: Path) -> None:
    """A real kernel: a returned figure shows once under Agg (no formatter) and once after ``%matplotlib inline``
    (IPython's formatter draws it, and pyplot's end-of-cell flush does not know it)."""
    cells = [
        "import torch\nfrom sdkit.viz import plot_schedules\nfrom sdkit.viz.figure import new_axes\n"
        "s = torch.tensor([4.0, 1.0, 0.0])",
        "plot_schedules(s)",
        "%matplotlib inline\nimport matplotlib.pyplot as plt\nplot_schedules(s)",
        "ax = new_axes(None, (2, 2))\nax.plot([1, 2])\nax",
        "fig = plot_schedules(s)\nfig.axes[0].set_title('kept, not shown')",
    ]
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env = {**os.environ, "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    nbclient.NotebookClient(
        book, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}, env=env
    ).execute()
    images = [sum("image/png" in o.get("data", {}) for o in c.outputs) for c in book.cells]
    assert images == [0, 1, 1, 1, 0]
