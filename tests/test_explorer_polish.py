"""The explorer widget in a classroom (issue #16): a placeholder before the first run instead of a broken image,
images at a fixed size in px (small ones enlarged by an integer factor, nearest-neighbour) with the caption under
them. What a browser would show is checked through the widget's values, without a browser."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from sdkit.viz.widgets import display_size, explorer

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(prompt="a red circle", seed=5, steps=3, cfg=5.0, width=64, height=64)


def _decode(png: bytes) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(png))
    assert image.format == "PNG"
    image.load()  # a truncated or corrupt PNG fails here
    return image


def _blocks_equal(pixels: np.ndarray, k: int) -> bool:
    """Every ``k x k`` block is one colour: each pixel equals its block's top-left pixel."""
    return bool((pixels == np.repeat(np.repeat(pixels[::k, ::k], k, axis=0), k, axis=1)).all())


@pytest.mark.parametrize(
    ("size", "shown"),
    [((64, 64), (256, 256)), ((100, 60), (200, 120)), ((300, 200), (300, 200)), ((1024, 1024), (512, 512)),
     ((512, 768), (341, 512)), ((128, 32), (256, 64))],
)  # fmt: skip
def test_display_size(size, shown):
    assert display_size(*size) == shown


def test_placeholder_before_the_first_run(tiny_sd1_kit):
    ex = explorer(tiny_sd1_kit, **SMALL)
    ex.widget  # noqa: B018  (built headless: no front end)
    picture, caption = ex.controls["picture"], ex.controls["caption"]
    image = _decode(picture.value)
    assert image.size == (256, 256)  # the 64 px output size, enlarged 4x
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    assert tuple(colours[counts.argmax()]) == (200, 200, 200) and counts.max() > 0.8 * len(pixels)  # grey
    assert (pixels.sum(axis=1) < 400).sum() > 50  # and dark text on it
    assert (picture.layout.width, picture.layout.height) == ("256px", "256px")
    assert "Generate" in caption.value
    # the model's default size when none is set (the tiny SD1 model: 512 px, shown as is)
    default = explorer(tiny_sd1_kit, prompt="x")
    default.widget  # noqa: B018
    width, height = tiny_sd1_kit.defaults.width, tiny_sd1_kit.defaults.height
    assert _decode(default.controls["picture"].value).size == (width, height)
    assert default.controls["picture"].layout.width == f"{display_size(width, height)[0]}px"


def test_run_shows_a_nearest_neighbour_enlargement_at_fixed_size(tiny_sd1_kit):
    ex = explorer(tiny_sd1_kit, **SMALL)
    ex.widget  # noqa: B018
    ex.controls["generate"].click()
    picture, caption, slider = ex.controls["picture"], ex.controls["caption"], ex.controls["step"]
    final = _decode(picture.value)
    assert final.size == (256, 256)
    shown = np.asarray(final.convert("RGB"))
    assert _blocks_equal(shown, 4)
    assert np.array_equal(shown[::4, ::4], np.asarray(ex.generation.images[0].convert("RGB")))
    assert (picture.layout.width, picture.layout.height) == ("256px", "256px")
    assert caption.value == f"step {slider.max}: final image"
    slider.value = 1  # scrub back: step 1's x0 estimate, same size, same enlargement
    step = np.asarray(_decode(picture.value).convert("RGB"))
    assert step.shape == (256, 256, 3) and _blocks_equal(step, 4)
    assert np.array_equal(step[::4, ::4], np.asarray(ex.frame(1).convert("RGB")))
    assert caption.value.startswith("step 1: x0 estimate at sigma")
    assert picture.layout.width == "256px"
