"""Prompt syntax, with AUTOMATIC1111's semantics: attention weights and prompt editing.

Weights (``parse_weights``), applied per token by the text encoder:

====================  =================================================
``(word)``            weight x 1.1 (nests: ``((word))`` = x 1.21)
``(word:1.3)``        weight x 1.3
``[word]``            weight / 1.1
``\\(`` ``\\)`` ...   literal brackets (``\\\\`` is a literal backslash)
``BREAK``             (upper case, a separate word) starts a new 75-token chunk
====================  =================================================

An unmatched bracket is kept as literal text. Neighbouring spans with equal weights are merged before
tokenizing, as A1111 does, so ``(a)(b)`` tokenizes like ``ab``.

Prompt editing (``prompt_schedule``) is resolved *before* weights, into a list of plain prompts, each with
the last sampling step it is used for:

====================  =================================================
``[a:b:0.5]``         ``a`` up to 50% of the steps, then ``b``
``[a:b:10]``          ``a`` up to step 10 (an integer is an absolute step), then ``b``
``[a:0.5]``           nothing, then ``a`` added after 50% of the steps
``[a::0.5]``          ``a``, removed after 50% of the steps
``[a|b]``             alternate ``a`` and ``b`` every step
====================  =================================================

A number with a decimal point is a fraction of ``steps`` and an integer an absolute step (A1111 >= 1.6);
both are clipped to ``steps``. The prompt of an entry ``(end, text)`` is used for the steps ``s`` with
``previous end < s <= end`` (steps counted from 0), so ``[a:b:0.5]`` at 20 steps gives
``[(10, "a"), (20, "b")]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

T = TypeVar("T")


class Span(NamedTuple):
    """A piece of prompt text and its attention weight; ``chunk_break`` marks a ``BREAK`` (no text)."""

    text: str
    weight: float = 1.0
    chunk_break: bool = False


ROUND_UP = 1.1  # (word): A1111's emphasis factor
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
_WEIGHT_CLOSE = re.compile(r":\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)")
_NUMBER = re.compile(r"\s*(\d+\.?\d*|\.\d+)\s*")


# ------------------------------------------------------------------------------------------------ weights
def parse_weights(prompt: str) -> list[Span]:
    """Split a prompt into ``Span(text, weight)`` pieces (A1111's attention syntax, see the module doc).

    >>> [(s.text, round(s.weight, 3)) for s in parse_weights("a (cat:1.5) [dog]")]
    [('a ', 1.0), ('cat', 1.5), (' ', 1.0), ('dog', 0.909)]
    """
    texts: list[str] = []
    weights: list[float] = []
    breaks: list[bool] = []
    opened: list[tuple[str, int]] = []  # open brackets: (kind, index of the first span inside)

    def add(text: str) -> None:
        # BREAK splits plain text; the marker takes no weight from surrounding brackets.
        for k, part in enumerate(_BREAK.split(text)):
            if k > 0:
                texts.append("")
                weights.append(1.0)
                breaks.append(True)
            if part:
                texts.append(part)
                weights.append(1.0)
                breaks.append(False)

    def scale(start: int, factor: float) -> None:
        for k in range(start, len(texts)):
            if not breaks[k]:
                weights[k] *= factor

    i, n = 0, len(prompt)
    plain = []  # characters of the current plain run
    while i < n:
        c = prompt[i]
        if c == "\\" and i + 1 < n and prompt[i + 1] in "()[]\\":  # escape: a literal bracket or backslash
            plain.append(prompt[i + 1])
            i += 2
            continue
        if c not in "()[]:":
            plain.append(c)
            i += 1
            continue
        add("".join(plain))
        plain = []
        close = _WEIGHT_CLOSE.match(prompt, i) if c == ":" else None
        kind = opened[-1][0] if opened else None
        if c in "([":
            opened.append((c, len(texts)))
        elif close is not None and kind == "(":
            scale(opened.pop()[1], float(close.group(1)))
            i = close.end()
            continue
        elif c == ")" and kind == "(":
            scale(opened.pop()[1], ROUND_UP)
        elif c == "]" and kind == "[":
            scale(opened.pop()[1], 1 / ROUND_UP)
        else:  # an unmatched bracket or a plain colon is text
            add(c)
        i += 1
    add("".join(plain))
    for kind, start in reversed(opened):  # unclosed brackets still apply, as in A1111
        scale(start, ROUND_UP if kind == "(" else 1 / ROUND_UP)

    spans: list[Span] = []
    for text, weight, brk in zip(texts, weights, breaks, strict=True):
        if spans and not brk and not spans[-1].chunk_break and spans[-1].weight == weight:
            spans[-1] = Span(spans[-1].text + text, weight)
        else:
            spans.append(Span(text, weight, brk))
    return spans or [Span("", 1.0)]


# ----------------------------------------------------------------------------------------- prompt editing
@dataclass
class _Edit:  # [before:after:when]; before/after None when missing
    before: list[_Node] | None
    after: list[_Node] | None
    when: str


@dataclass
class _Alternate:  # [a|b|c]
    options: list[list[_Node]]


@dataclass
class _Group:  # emphasis brackets, kept as text: open + parts (+ ":" + weight parts) + close
    open: str
    parts: list[list[_Node]]
    close: str


_Node = str | _Edit | _Alternate | _Group


class _Parser:
    """Recursive descent over the prompt-editing grammar; a construct that does not parse is literal text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def sequence(self, i: int, stops: str) -> tuple[list[_Node], int]:
        """Nodes from ``i`` up to (not including) a character of ``stops`` or the end."""
        nodes: list[_Node] = []
        plain: list[str] = []
        while i < len(self.text) and self.text[i] not in stops:
            c = self.text[i]
            if c == "\\" and i + 1 < len(self.text):  # escapes stay in the text for parse_weights
                plain.append(self.text[i : i + 2])
                i += 2
                continue
            node, j = self.bracket(i) if c in "[(" else (None, i)
            if node is None:
                plain.append(c)
                i += 1
                continue
            if plain:
                nodes.append("".join(plain))
                plain = []
            nodes.append(node)
            i = j
        if plain:
            nodes.append("".join(plain))
        return nodes, i

    def at(self, i: int) -> str:
        return self.text[i] if i < len(self.text) else ""

    def bracket(self, i: int) -> tuple[_Node | None, int]:
        if self.text[i] == "(":
            first, j = self.sequence(i + 1, "):")
            if self.at(j) == ")":
                return _Group("(", [first], ")"), j + 1
            if self.at(j) == ":":
                second, k = self.sequence(j + 1, ")")
                if self.at(k) == ")":
                    return _Group("(", [first, second], ")"), k + 1
            return None, i
        first, j = self.sequence(i + 1, ":|]")
        if self.at(j) == "]":
            return _Group("[", [first], "]"), j + 1
        if self.at(j) == "|":
            options = [first]
            while self.at(j) == "|":
                option, j = self.sequence(j + 1, "|]")
                options.append(option)
            return (_Alternate(options), j + 1) if self.at(j) == "]" else (None, i)
        if self.at(j) != ":":
            return None, i
        close = self.text.find("]", j + 1)
        number = _NUMBER.fullmatch(self.text, j + 1, close) if close > 0 else None
        if number is not None:  # [a:0.5]: a is added after
            return _Edit(None, first, number.group(1)), number.end() + 1
        second, k = self.sequence(j + 1, ":]")
        if self.at(k) == ":":
            close = self.text.find("]", k + 1)
            number = _NUMBER.fullmatch(self.text, k + 1, close) if close > 0 else None
            if number is not None:
                return _Edit(first, second or None, number.group(1)), close + 1
        return None, i


def _end_step(when: str, steps: int) -> int:
    value = float(when) * steps if "." in when else float(when)
    return min(steps, int(value))


def _collect(nodes: list[_Node], steps: int, out: set[int]) -> None:
    for node in nodes:
        if isinstance(node, _Edit):
            out.add(_end_step(node.when, steps))
            for part in (node.before, node.after):
                _collect(part or [], steps, out)
        elif isinstance(node, _Alternate):
            out.update(range(1, steps + 1))
            for option in node.options:
                _collect(option, steps, out)
        elif isinstance(node, _Group):
            for part in node.parts:
                _collect(part, steps, out)


def _render(nodes: list[_Node], step: int, steps: int) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Edit):
            part = node.before if step <= _end_step(node.when, steps) else node.after
            out.append(_render(part or [], step, steps))
        elif isinstance(node, _Alternate):
            out.append(_render(node.options[(step - 1) % len(node.options)], step, steps))
        else:
            out.append(node.open + ":".join(_render(p, step, steps) for p in node.parts) + node.close)
    return "".join(out)


def prompt_schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """The plain prompts of a prompt with editing syntax: ``[(end_step, prompt), ...]``, ends increasing,
    the last one ``steps``. A prompt without editing gives ``[(steps, prompt)]``.

    >>> prompt_schedule("a [cat:dog:0.5]", 20)
    [(10, 'a cat'), (20, 'a dog')]
    """
    parser = _Parser(prompt)
    nodes: list[_Node] = []
    i = 0
    while i < len(prompt):  # top level: stray closing brackets, colons and bars are text
        part, i = parser.sequence(i, "")
        nodes.extend(part)
    ends: set[int] = {steps}
    _collect(nodes, steps, ends)
    return [(end, _render(nodes, end, steps)) for end in sorted(ends)]


def schedule_at(schedule: list[tuple[int, T]], step: int) -> T:
    """The entry of a schedule used at ``step`` (0-based): the first whose end step is >= ``step``."""
    for end, value in schedule:
        if step <= end:
            return value
    return schedule[-1][1]
