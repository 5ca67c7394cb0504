"""Attention heat maps as drawn: ``word_attention`` is the mean of the recorded attention distributions (checked on
hand-made softmax distributions, whose mean is known), overlays span the given range of matplotlib's own "jet"
colormap, and every map in ``plot_word_maps`` / ``plot_layer_maps`` carries a colour bar with its value range."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image as PILImage

from sdkit.attention import AttentionMaps, capture_attention
from sdkit.text import clip_tokenizer
from sdkit.viz.attention import chosen_layers, overlay, plot_layer_maps, plot_word_maps, word_attention

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "a red circle, white background"
H, W = 4, 6
LAYERS = ("down_blocks.1.attentions.0.attn2", "up_blocks.1.attentions.0.attn2")


def distributions(seed: int, heads: int) -> torch.Tensor:
    """``[1, heads, H*W, 77]``: one attention distribution over the tokens per head and pixel."""
    logits = torch.randn(1, heads, H * W, 77, generator=torch.Generator().manual_seed(seed))
    return logits.softmax(-1)


def hand_made(keep_heads: bool = True) -> tuple[AttentionMaps, dict]:
    """Two steps x two layers at the image's own resolution (factor 1: the bicubic resize to the same size is the
    identity), three heads each; with ``keep_heads=False`` stored summed over heads, as a capture does."""
    records = {(s, n): distributions(10 * s + k, heads=3) for s in (0, 1) for k, n in enumerate(LAYERS)}
    stored = records if keep_heads else {key: p.sum(1, keepdim=True) for key, p in records.items()}
    maps = AttentionMaps(
        probs=dict(stored),
        sizes=dict.fromkeys(LAYERS, (H, W)),
        latent_size=(H, W),
        factor=1,
        tokens=clip_tokenizer()(PROMPT),
    )
    return maps, records


def mean_over_heads(records: dict, keys: list, positions: list[int]) -> np.ndarray:
    """The oracle: every recorded distribution's mass on ``positions``, averaged over all heads of ``keys``."""
    per_head = np.concatenate([records[k][0].numpy()[..., positions].sum(-1) for k in keys])  # [maps*heads, H*W]
    return per_head.mean(0).reshape(H, W)


@pytest.mark.parametrize("keep_heads", [True, False])
def test_word_attention_is_the_mean_attention_probability(keep_heads: bool) -> None:
    maps, records = hand_made(keep_heads)
    red = maps.token_positions("red")
    assert red == [2]  # BOS a red
    got = word_attention(maps, "red")[0].numpy()
    np.testing.assert_allclose(got, mean_over_heads(records, list(records), red), rtol=1e-5, atol=1e-7)
    one = word_attention(maps, "background", steps=[1], layers=["up_blocks"])[0].numpy()
    want = mean_over_heads(records, [(1, LAYERS[1])], maps.token_positions("background"))
    np.testing.assert_allclose(one, want, rtol=1e-5, atol=1e-7)
    # the mean of distributions is a probability: summed over every token it is 1 at each pixel
    everything = maps.token_maps(normalize=False)[0].sum(0) / (3 * len(records))
    np.testing.assert_allclose(everything.numpy(), np.ones((H, W)), rtol=1e-5)


def test_layers_are_chosen_by_name_fragment() -> None:
    maps, _ = hand_made()
    assert chosen_layers(maps, None) == list(LAYERS)
    assert chosen_layers(maps, ["down_blocks.1"]) == [LAYERS[0]]
    assert chosen_layers(maps, "attn2") == list(LAYERS)
    with pytest.raises(ValueError, match=r"layers \['mid_block'\] match no captured layer"):
        chosen_layers(maps, ["mid_block"])


def test_overlay_spans_the_given_range_of_jet() -> None:
    white = PILImage.new("RGB", (3, 1), "white")
    heat = torch.tensor([[0.2, 0.38, 0.5]])  # 0, 0.6 and 1 of the range (0.6: well inside one of jet's 256 bins)
    shown = np.asarray(overlay(white, heat, alpha=1.0, vmin=0.2, vmax=0.5)) / 255
    want = colormaps["jet"](np.array([0.0, 0.6, 1.0]))[:, :3]
    np.testing.assert_allclose(shown[0], want, atol=1 / 255)
    with pytest.raises(ValueError, match="vmax must be greater than vmin, got vmin=0.5, vmax=0.5"):
        overlay(white, heat, vmin=0.5, vmax=0.5)


def colorbars(fig) -> list:
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_word_maps_have_a_colour_bar_with_each_word_range() -> None:
    maps, _ = hand_made()
    image = PILImage.new("RGB", (W, H), "white")
    words = ["red", "circle", "background"]
    fig = plot_word_maps(maps, image, words)
    bars = colorbars(fig)
    assert len(bars) == len(words)
    for bar, word in zip(bars, words, strict=True):
        heat = word_attention(maps, word)[0]
        np.testing.assert_allclose(bar.get_xlim(), (float(heat.min()), float(heat.max())), rtol=1e-6)
    shared = [bar.get_xlim() for bar in colorbars(plot_word_maps(maps, image, words, shared_range=True))]
    lows, highs = zip(*(bar.get_xlim() for bar in bars), strict=True)
    assert shared == [(min(lows), max(highs))] * len(words)


def test_layer_maps_have_a_colour_bar_each_and_average_steps() -> None:
    maps, records = hand_made()
    fig = plot_layer_maps(maps, "circle", step=[0, 1])
    bars = colorbars(fig)
    assert len(bars) == len(LAYERS)
    circle = maps.token_positions("circle")
    for bar, name in zip(bars, LAYERS, strict=True):
        want = mean_over_heads(records, [(0, name), (1, name)], circle)
        np.testing.assert_allclose(bar.get_xlim(), (want.min(), want.max()), rtol=1e-5)
    assert "mean over 2 steps" in fig.get_suptitle()
    assert "step 1" in plot_layer_maps(maps, "circle").get_suptitle()  # default: the last step


def test_summed_heads_at_capture_give_the_same_maps(tiny_sd1_kit) -> None:
    """A real capture: ``keep_heads=False`` stores head sums; the mean attention probability does not change."""
    options = {"width": 64, "height": 48, "steps": 2, "seed": 3, "cfg": 5.0}
    with capture_attention(tiny_sd1_kit) as full:
        tiny_sd1_kit.generate(PROMPT, **options)
    with capture_attention(tiny_sd1_kit, keep_heads=False) as summed:
        tiny_sd1_kit.generate(PROMPT, **options)
    assert next(iter(summed.probs.values())).shape[1] == 1
    for word in ("red", "background"):
        a, b = word_attention(full, word), word_attention(summed, word)
        assert a.shape == (1, 48, 64) and 0 < float(a.min()) and float(a.max()) < 1
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
