"""The binding measurement (``sdkit.models.shapes.binding``) on the shipped model, in both directions: the one-object
prompt notebook 11 studies binds (its colour word is highest on the red circle), and a colour the image does not
contain is reported as not drawn and fails."""

from __future__ import annotations

import pytest

import sdkit
from sdkit.models.shapes.binding import PROMPT, SWAPPED, binding

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def kit() -> sdkit.Kit:
    return sdkit.load("shapes")


def test_a_drawn_colour_word_peaks_on_its_object(kit: sdkit.Kit) -> None:
    b = binding(kit, "a large red circle on the left, white background", ("red",), seed=4)
    assert b.prompt_right and b.words[0].drawn and b.words[0].on_own_object and b.passed
    assert b.row()["red"] == {"drawn": True, "on_own_object": True}


def test_an_absent_colour_fails(kit: sdkit.Kit) -> None:
    b = binding(kit, "a large red circle on the left, white background", ("red", "green"), seed=4)
    assert [w.drawn for w in b.words] == [True, False] and not b.passed


def test_the_swapped_prompt_swaps_the_colours_only() -> None:
    assert PROMPT.replace("red", "X").replace("blue", "red").replace("X", "blue") == SWAPPED


def test_text_side_measurements(kit: sdkit.Kit) -> None:
    """``design.py`` on the shipped text encoder: a colour swap changes the encoding less than an unrelated prompt of
    the same form does (n = 50: cosine 0.995 against 0.937), and the prompt's words get a minority of the attention."""
    from sdkit.models.shapes import design

    a, b = design.swapped_pairs(1, 3)[0]
    assert sorted(a.split()) == sorted(b.split()) and a != b and a.split()[1] == b.split()[5]
    swap = design.swap_similarity(kit, n=8)
    assert swap["different"] < swap["matrix"] <= 1.0 and swap["first_colour"] < swap["matrix"]
    share = design.word_attention_share(kit, n=2)
    assert share["images"] >= 1 and 0 < share["off_objects"] < 1 and 0 < share["on_objects"] < 1
