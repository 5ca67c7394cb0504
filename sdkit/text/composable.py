"""Composable diffusion in A1111's prompt syntax: ``AND`` splits a prompt into parts, each with its own weight.

``a red circle AND a blue square :0.7`` guides the image toward both parts at once (Liu et al. 2022, "Compositional
Visual Generation with Composable Diffusion Models"): every part is encoded on its own and the guided estimate is
``uncond + sum_k weight_k * cfg * (cond_k - uncond)`` (``sdkit.guidance.CFG`` with a ``Composed`` conditioning).

The split follows stable-diffusion-webui's ``get_multicond_prompt_list`` (``modules/prompt_parser.py``), before
any other syntax:

- the prompt is cut at every ``AND`` that stands as a word (upper case; ``ANDROID`` and ``and`` are text), even
  inside brackets;
- a part ending in ``:number`` (``[-+]?`` digits with at most one decimal point, whitespace allowed around the
  colon) takes that number as its weight and loses it from its text; otherwise its weight is 1. Trailing
  whitespace is dropped. So, as in A1111, a whole prompt ending in ``:2`` (``photo in 16:9``) is one part with
  weight 2 (9): the number is read as a weight, not as text;
- each part's text then goes through prompt editing and attention weights like any prompt. The negative prompt
  is never split (A1111 encodes it as plain text).

Differences from A1111, deliberate: a weight too large for a float (A1111: ``inf``) raises ``ValueError``, as
attention weights do; the parser is linear in the prompt (A1111's regular expression backtracks quadratically on
long runs of whitespace).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import NamedTuple

from sdkit.text.prompt_syntax import MAX_PROMPT_CHARS

_AND = re.compile(r"\bAND\b")  # A1111's re_AND
_NUMBER = re.compile(r"\s*([-+]?(?:\d+\.?|\d*\.\d+))")  # the weight after the colon, as A1111's re_weight reads it


class Part(NamedTuple):
    """One ``AND`` part of a prompt: its text (for prompt editing and attention weights) and its weight."""

    text: str
    weight: float


def composable_parts(prompt: str) -> list[Part]:
    """The ``AND`` parts of ``prompt`` with their weights (see the module doc); a plain prompt is one part of
    weight 1. ``"a cat AND a dog:0.5"`` -> ``[Part("a cat", 1.0), Part(" a dog", 0.5)]``."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"prompt has {len(prompt)} characters; at most MAX_PROMPT_CHARS={MAX_PROMPT_CHARS} allowed")
    return [_part(piece) for piece in _AND.split(prompt)]


def _part(piece: str) -> Part:
    # A1111: ^((?:\s|.)*?)(?:\s*:\s*NUMBER)?\s*$, the shortest text that leaves an optional weight and whitespace.
    # The number holds no colon, so the weight's colon is the last one; without a weight the text is rstripped.
    body = piece.rstrip()
    colon = body.rfind(":")
    if colon >= 0:
        number = _NUMBER.fullmatch(body, colon + 1)
        if number is not None:
            return Part(body[:colon].rstrip(), _finite_weight(number.group(1)))
    return Part(body, 1.0)


def _finite_weight(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"prompt has the AND weight {text[:20]!r}..., beyond a float; weights must be finite")
    return value


def composes(parts: Sequence[Part]) -> bool:
    """Whether these parts need composable guidance: several of them, or one with a weight other than 1 (otherwise
    guidance is plain CFG on the one part's text)."""
    return len(parts) > 1 or parts[0].weight != 1.0


def is_composable(prompt: str) -> bool:
    """Whether ``prompt`` needs composable guidance (``composes`` on its parts; otherwise see ``plain_text``)."""
    return composes(composable_parts(prompt))


def plain_text(prompt: str, where: str) -> str:
    """The text to encode for a prompt that guides as one part of weight 1, as A1111 encodes it (a trailing
    ``:1`` and whitespace dropped); ``NotImplementedError`` for a composable prompt in ``where``, a place that
    does not compose yet (rather than encoding ``AND`` and a weight as plain text without a word)."""
    parts = composable_parts(prompt)
    if composes(parts):
        raise NotImplementedError(
            f"prompt: AND parts and a trailing :weight (A1111's composable diffusion) work in Kit.generate, not yet "
            f"in {where}; remove them (as in A1111, a prompt ending in ':number' takes the number as its weight)"
        )
    return parts[0].text
