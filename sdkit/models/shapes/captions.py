"""The prompt grammar of the shapes world: scene -> caption, and caption -> what it asks for.

Grammar (every word is a plain English word, so CLIP's BPE gives one token per word):

    caption   := thing [joiner thing] [", " COLOR " background"]
    thing     := "a" [SIZE] COLOR SHAPE [PLACE]  |  "a" [SIZE] "person" [PLACE]
    joiner    := "and" | "above" | "below" | "to the left of" | "to the right of"
    PLACE     := "on the left" | "on the right" | "at the top" | "at the bottom" | "in the center"

e.g. ``"a large red circle on the left above a small blue square, yellow background"`` or ``"a red circle"``.
The parser inverts exactly this grammar; the evaluator uses it to know what a prompt requested.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

SHAPES = ("circle", "square", "triangle")
KINDS = SHAPES + ("person",)
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (35, 170, 60),
    "blue": (40, 75, 225),
    "yellow": (245, 220, 40),
    "purple": (140, 50, 190),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
PLACES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
RELATIONS = ("above", "below", "to the left of", "to the right of")


@dataclass(frozen=True)
class ThingRequest:
    """What a prompt asks about one thing; ``None`` where the prompt does not say."""

    kind: str
    color: str | None = None
    size: str | None = None
    position: str | None = None


@dataclass(frozen=True)
class Request:
    """Everything a prompt asks for: one or two things, how the first relates to the second, a background."""

    things: tuple[ThingRequest, ...]
    relation: str | None = None
    background: str | None = None


def thing_phrase(kind: str, color: str | None, size: str | None, position: str | None) -> str:
    words = ["a"]
    if size:
        words.append(size)
    if color and kind != "person":
        words.append(color)
    words.append(kind)
    if position:
        words.append(PLACES[position])
    return " ".join(words)


def format_request(request: Request) -> str:
    """The caption that asks for ``request`` (the inverse of ``parse_caption``)."""
    parts = [thing_phrase(t.kind, t.color, t.size, t.position) for t in request.things]
    text = f" {request.relation or 'and'} ".join(parts)
    if request.background:
        text += f", {request.background} background"
    return text


_COLOR = "|".join(COLORS)
_THING = re.compile(
    rf"a (?:(?P<size>{'|'.join(SIZES)}) )?(?:(?P<color>{_COLOR}) )?(?P<kind>{'|'.join(KINDS)})"
    rf"(?: (?P<place>{'|'.join(PLACES.values())}))?"
)
_JOINERS = ("and",) + RELATIONS


def parse_caption(text: str) -> Request:
    """Invert the grammar: ``"a red circle above a small square, blue background"`` -> ``Request``.

    Raises ``ValueError`` for text outside the grammar, so evaluation never silently scores nonsense.
    """
    text = text.strip().lower()
    background = None
    m = re.fullmatch(rf"(?P<rest>.*), (?P<bg>{_COLOR}) background", text)
    if m:
        text, background = m["rest"], m["bg"]
    place_to_position = {v: k for k, v in PLACES.items()}
    for joiner in _JOINERS:
        for m1 in _THING.finditer(text):
            if m1.start() != 0:
                continue
            head, sep, tail = text[m1.end() :].partition(f" {joiner} ")
            if head == "" and sep and (m2 := _THING.fullmatch(tail)):
                things = tuple(_thing(m, place_to_position) for m in (m1, m2))
                return Request(things, None if joiner == "and" else joiner, background)
    if single := _THING.fullmatch(text):
        return Request((_thing(single, place_to_position),), None, background)
    raise ValueError(f"not a shapes-world caption: {text!r}")


def _thing(m: re.Match[str], place_to_position: dict[str, str]) -> ThingRequest:
    place = m["place"]
    return ThingRequest(m["kind"], m["color"], m["size"], place_to_position[place] if place else None)


# ---------------------------------------------------------------------------------------- token ids
BOS_ID, EOS_ID, MAX_TOKENS = 49406, 49407, 77


@lru_cache(maxsize=1)
def _word_ids() -> dict[str, list[int]]:
    """CLIP token ids of every word of the grammar (``tokens.json``, written by the real CLIP tokenizer and
    checked against it in the tests): training needs neither open-clip nor a tokenizer object, only this."""
    return json.loads((Path(__file__).parent / "tokens.json").read_text())


def token_ids(captions: list[str]) -> Int[Tensor, "b 77"]:
    """The CLIP ids of grammar captions, ``[BOS, ..., EOS, EOS padding]`` as SD1's tokenizer gives them."""
    table = _word_ids()
    out = torch.full((len(captions), MAX_TOKENS), EOS_ID, dtype=torch.long)
    for i, text in enumerate(captions):
        ids = [BOS_ID] + [t for w in text.replace(",", " ,").split() for t in table[w]] + [EOS_ID]
        out[i, : len(ids)] = torch.tensor(ids[:MAX_TOKENS])
    return out
