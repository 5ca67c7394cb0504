"""Prompt syntax, with AUTOMATIC1111's semantics (stable-diffusion-webui >= 1.6): attention weights and prompt
editing.

Weights (``parse_weights``), applied per token by the text encoder:

====================  =================================================
``(word)``            weight x 1.1 (nests: ``((word))`` = x 1.21)
``(word:1.3)``        weight x 1.3
``[word]``            weight / 1.1
``\\(`` ``\\)`` ...   literal brackets (``\\\\`` is a literal backslash; any other backslash is dropped)
``BREAK``             (upper case, a separate word) starts a new 75-token chunk
====================  =================================================

An unmatched bracket is kept as literal text (an unclosed one still applies to the rest of the prompt).
Neighbouring spans with equal weights are merged before tokenizing, as A1111 does, so ``(a)(b)`` tokenizes
like ``ab``.

Prompt editing (``prompt_schedule``) is resolved *before* weights, into a list of plain prompts, each with
the last sampling step it is used for:

====================  =================================================
``[a:b:0.5]``         ``a`` up to 50% of the steps, then ``b``
``[a:b:10]``          ``a`` up to step 10 (an integer is an absolute step), then ``b``
``[a:0.5]``           nothing, then ``a`` added after 50% of the steps
``[a::0.5]``          ``a``, removed after 50% of the steps
``[a|b]``             alternate ``a`` and ``b`` every step (``[a|]``: ``a`` and nothing)
====================  =================================================

The switch point is any signed number of A1111's grammar (``3``, ``+3``, ``.5``, ``3.``, ``1e1``, ``2.5e-1``):
with a decimal point it is a fraction of ``steps``, without one an absolute step (``1e1`` is step 10);
either is truncated to an integer and clipped to ``steps``, and one below 1 (``[a:b:0]``) means ``b`` from
the start. The prompt of an entry ``(end, text)`` is used for the steps ``s`` with ``previous end < s <= end``
(steps counted from 0), so ``[a:b:0.5]`` at 20 steps gives ``[(10, "a"), (20, "b")]``. Inside an edit or an
alternative every bracket must be balanced; a construct that does not parse is literal text. As in A1111, a
``|`` outside a well-formed ``[...|...]``, or a backslash at the very end or before a line break, makes the
whole prompt literal (no editing at all).

Deliberate differences from A1111 (each asserted in ``tests/test_prompt_syntax_a1111.py``):

- ``[a:b:1e999]`` or a 400-digit step: A1111 raises ``OverflowError`` (``int(inf)``); here it is clipped to
  ``steps`` (``-1e999``: ``b`` from the start).
- ``(x:999...9)``, a weight too large for a float: A1111 weights the text by ``inf``; here ``ValueError``.
  A malformed weight such as ``(x:1.2.3)`` raises ``ValueError`` in both (A1111's is from ``float()``).
- ``BREAK`` inside brackets, ``(a BREAK b)``: A1111 marks a break with the weight -1 and then multiplies the
  marker by the brackets, so the marker is lost and the word "BREAK" is encoded with weight -1.1; here it
  is a chunk break wherever it stands.
- ``AND`` and a trailing ``:weight`` of a whole prompt (A1111's composable diffusion,
  ``get_multicond_prompt_list``) are not this module's: ``sdkit.text.composable`` splits a prompt into its parts
  first, and each part comes here.
- A1111's doctest ``a [{b|d{:.5] c`` (marked "not handling this right now" there) expects an edit, but its
  own parser returns the prompt unchanged (a ``|`` outside an alternation fails its grammar): sdkit follows
  the code. Its doctests with ``hires_steps`` have no counterpart (sdkit has no hires pass).
- Where A1111's Earley parser can read a piece both as a construct and as literal text (an edit beside
  unbalanced brackets: ``[x:y:3][[ ]``), its choice depends on Python's string hash seed and so changes from
  one launch of the webui to the next; here the construct always wins (one of A1111's outcomes).
- Bounds: a prompt longer than ``MAX_PROMPT_CHARS`` or with brackets nested deeper than ``MAX_NESTING``
  raises ``ValueError`` (A1111 has none; its Earley parser takes seconds on 200 nested brackets).

Both functions are linear in the prompt length: no recursion, no backtracking. ``prompt_schedule`` renders
one prompt per distinct end step (at most ``steps``), so its output is O(steps x length);
``parse_weights`` applies each bracket's factor to the spans inside it, O(length x ``MAX_NESTING``).
"""

from __future__ import annotations

import bisect
import math
import re
from typing import NamedTuple, TypeVar

T = TypeVar("T")

MAX_PROMPT_CHARS = 20_000  # 40x a long SD prompt; parsing stays linear and fast (bench/prompt_parser_speed.py)
MAX_NESTING = 100  # open brackets at once; ((word)) is 2. Weights past ~20 levels (1.1 ** 20 = 6.7) are noise anyway
ROUND_UP = 1.1  # (word): A1111's emphasis factor


class Span(NamedTuple):
    """A piece of prompt text and its attention weight; ``chunk_break`` marks a ``BREAK`` (no text)."""

    text: str
    weight: float = 1.0
    chunk_break: bool = False


_BRACKET = re.compile(r"\\[()\[\]\\]|[()\[\]]")  # an escaped bracket or backslash is one unit, never a bracket


def _check_prompt(prompt: str) -> None:
    """One-line errors for a prompt beyond the bounds, before any parsing (one O(length) pass)."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"prompt has {len(prompt)} characters; at most MAX_PROMPT_CHARS={MAX_PROMPT_CHARS} allowed")
    # Nesting as the weight parser counts it: round and square brackets open independently, a closer without
    # an open bracket of its kind is text. Prompt editing only removes balanced pieces, so it never deepens this.
    rounds = squares = deepest = 0
    for m in _BRACKET.finditer(prompt):
        c = m.group()
        if c == "(":
            rounds += 1
            deepest = max(deepest, rounds + squares)
        elif c == "[":
            squares += 1
            deepest = max(deepest, rounds + squares)
        elif c == ")":
            rounds = max(rounds - 1, 0)
        elif c == "]":
            squares = max(squares - 1, 0)
    if deepest > MAX_NESTING:
        raise ValueError(f"prompt nests brackets {deepest} deep; at most MAX_NESTING={MAX_NESTING} allowed")


# ------------------------------------------------------------------------------------------------ weights
# The tokens of the weight syntax, tried in this order: an escape (its second character is literal), any other
# backslash (dropped), an opener, ":weight)" closing a round bracket, a closer, a run of text, a lone colon.
# The weight's characters are [+-]?[.\d]+ as in A1111, so "(x:1.2.3)" is a weight that is not a number.
_WEIGHT_TOKEN = re.compile(r"\\([()\[\]\\])|\\|([(\[])|:\s*([+-]?[.\d]+)\s*\)|([)\]])|[^\\()\[\]:]+|:")
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_weights(prompt: str) -> list[Span]:
    """Split a prompt into ``Span(text, weight)`` pieces (A1111's attention syntax, see the module doc).

    >>> [(s.text, round(s.weight, 3)) for s in parse_weights("a (cat:1.5) [dog]")]
    [('a ', 1.0), ('cat', 1.5), (' ', 1.0), ('dog', 0.909)]
    """
    _check_prompt(prompt)
    texts: list[str | None] = []  # pieces; a BREAK marker is None
    weights: list[float] = []
    rounds: list[int] = []  # open brackets: index of the first piece inside
    squares: list[int] = []
    joinable = False  # whether the last piece may take more text (no bracket or BREAK since it began)

    def add(text: str) -> None:
        nonlocal joinable
        if joinable:  # inside the same brackets as the piece before: the same weight in the end, join them now
            texts[-1] += text  # type: ignore[operator]
        else:
            texts.append(text)
            weights.append(1.0)
        joinable = True

    def scale(start: int, factor: float) -> None:  # factors apply in A1111's order, for bit-equal weights
        weights[start:] = [w * factor for w in weights[start:]]

    for m in _WEIGHT_TOKEN.finditer(prompt):
        group = m.lastindex  # 1 escaped, 2 opener, 3 ":weight)", 4 closer, None text
        if group == 1:
            add(m.group(1))
            continue
        if group == 2:
            (rounds if m.group() == "(" else squares).append(len(texts))
            joinable = False
            continue
        text = m.group()
        stack = None if group is None else squares if text == "]" else rounds
        if stack:  # a closer with an open bracket of its kind
            scale(stack.pop(), _weight(m.group(3)) if group == 3 else ROUND_UP if text == ")" else 1 / ROUND_UP)
            joinable = False
            continue
        # text, a lone colon, an unmatched closer or a weight with no open bracket; a backslash that escapes
        # nothing is dropped, as in A1111
        if "BREAK" not in text:
            add("" if text == "\\" else text)
            continue
        for k, part in enumerate(_BREAK.split(text)):
            if k > 0:
                texts.append(None)
                weights.append(1.0)
                joinable = False
            add(part)
    for start in rounds:  # unclosed brackets still apply, outermost first, round before square (as A1111)
        scale(start, ROUND_UP)
    for start in squares:
        scale(start, 1 / ROUND_UP)

    spans: list[Span] = []
    for piece, w in zip(texts, weights, strict=True):
        if piece is None:
            spans.append(Span("", 1.0, True))
        elif spans and not spans[-1].chunk_break and spans[-1].weight == w:
            spans[-1] = Span(spans[-1].text + piece, w)
        else:
            spans.append(Span(piece, w))
    return spans or [Span("", 1.0)]


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"prompt has the weight {text!r}, which is not a number (e.g. (word:1.3))") from None
    if not math.isfinite(value):
        raise ValueError(f"prompt has the weight {text[:20]!r}..., beyond a float; weights must be finite")
    return value


# ----------------------------------------------------------------------------------------- prompt editing
# A1111's grammar (lark, modules/prompt_parser.py) in words: the top level is text, whitespace, stray ()[]: and
# well-formed constructs; inside a construct everything must be well formed. So a construct is a bracket pair
# matched like parentheses whose separators (":" and "|" not inside a nested pair) fit its kind:
#   ( P )  ( P : P )           emphasis, kept as text for parse_weights
#   [ P ]                      emphasis
#   [ P : N ]  [ P : P : N ]   an edit, N a number with optional whitespace around it
#   [ P | P? | ... ]           an alternation
# A pair that fits none is literal text and so is every pair around it. A backslash and the character after it
# are one piece of text (kept as written). Where a construct and literal text both parse, A1111's Earley parser
# mostly picks the construct (in some prompts by the hash seed, see the module doc); this matcher always does.
_SPECIAL = re.compile(r"\\.?|[()\[\]:|]")  # "\\" alone: a backslash at the end or before a line break
_STEP = re.compile(r"\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*")  # lark's SIGNED_NUMBER


class _Construct(NamedTuple):
    close: int  # index of the closing bracket
    kind: str  # "(" / "[" emphasis, ":" edit, "|" alternation
    colons: tuple[int, ...]  # an edit's separators: (number colon,) or (before/after colon, number colon)
    when: str  # an edit's number


def _constructs(prompt: str) -> dict[int, _Construct] | None:
    """The well-formed constructs by the index of their opening bracket, or None when A1111's grammar rejects the
    whole prompt. One pass with a stack of open brackets: [index, kind, colons, bars, well_formed_so_far]."""
    found: dict[int, _Construct] = {}
    stack: list[list] = []
    for m in _SPECIAL.finditer(prompt):
        c, i = m.group(), m.start()
        if c[0] == "\\":
            if len(c) == 1:
                return None  # a backslash with nothing it could escape
        elif c in "([":
            stack.append([i, c, [], 0, True])
        elif c == ":":
            if stack:
                stack[-1][2].append(i)
        elif c == "|":
            if not stack:
                return None  # a bar outside any bracket
            stack[-1][3] += 1
        elif not stack or stack[-1][1] != ("(" if c == ")" else "["):
            if any(frame[3] for frame in stack):
                return None  # the brackets around a bar cannot close
            stack.clear()  # a stray closer: no open bracket can contain it
        else:
            start, kind, colons, bars, ok = stack.pop()
            construct = _construct(prompt, kind, colons, bars, i) if ok else None
            if construct is None:
                if bars:
                    return None
                if stack:
                    stack[-1][4] = False  # literal text inside: the enclosing pair is not a construct either
            else:
                found[start] = construct
    if any(frame[3] for frame in stack):
        return None  # an unclosed alternation
    return found


def _construct(prompt: str, kind: str, colons: list[int], bars: int, close: int) -> _Construct | None:
    if kind == "(":
        return _Construct(close, "(", (), "") if not bars and len(colons) <= 1 else None
    if not colons:
        return _Construct(close, "|" if bars else "[", (), "")
    if bars or len(colons) > 2:
        return None
    number = _STEP.fullmatch(prompt, colons[-1] + 1, close)
    return _Construct(close, ":", tuple(colons), number.group(1)) if number else None


def _end_step(when: str, steps: int) -> int:
    """A1111's rule: a number with a "." is a fraction of ``steps``, else a step; truncated, at most ``steps``.
    Values beyond a float are clipped here (A1111 raises OverflowError)."""
    value = float(when) * steps if "." in when else float(when)
    if value >= steps:
        return steps
    return int(value) if value > -1 else -1


# The program a schedule is rendered from: (TEXT, str), (JUMP, target), (EDIT, when, target of "after"),
# (CHOOSE, option targets), and for a construct with plain text inside: (EDIT_TEXT, when, before, after) and
# (CHOOSE_TEXT, options). Rendering at a step walks it once, skipping the branches not taken: O(length).
_TEXT, _JUMP, _EDIT, _CHOOSE, _EDIT_TEXT, _CHOOSE_TEXT = range(6)


def _compile(prompt: str, found: dict[int, _Construct], steps: int) -> tuple[list[tuple], set[int]]:
    """The program and the edits' end steps."""
    program: list[tuple] = []
    pending: list[str] = []  # text not yet emitted
    open_: list[list] = []  # open constructs: [construct, index of its EDIT/CHOOSE (-1: emphasis), JUMPs, plain]
    controls: list[list] = []  # the open edits and alternations among them
    whens: set[int] = set()

    def flush() -> None:
        if pending:
            program.append((_TEXT, "".join(pending)))
            pending.clear()

    def branch(at: int, jumps: list[int]) -> None:  # a branch of the construct at ``at`` ends: jump to its end
        flush()
        jumps.append(len(program))
        program.append((_JUMP, -1))
        head = program[at]
        if head[0] == _EDIT:
            program[at] = (_EDIT, head[1], len(program))
        else:
            head[1].append(len(program))

    def finish() -> None:  # the edit or alternation on top ends here
        _, at, jumps, plain = controls.pop()
        open_.pop()
        flush()
        if not plain:
            for j in jumps:
                program[j] = (_JUMP, len(program))
            return
        parts: list[str] = []  # plain text only: one op, one step of the walk when rendering
        part: list[str] = []
        for op in program[at + 1 :]:
            if op[0] == _JUMP:
                parts.append("".join(part))
                part = []
            else:
                part.append(op[1])
        parts.append("".join(part))
        head = program[at]
        program[at] = (_EDIT_TEXT, head[1], *parts) if head[0] == _EDIT else (_CHOOSE_TEXT, tuple(parts))
        del program[at + 1 :]

    i = 0
    for m in _SPECIAL.finditer(prompt):
        j = m.start()
        if j < i:
            continue  # inside an edit's number
        if j > i:
            pending.append(prompt[i:j])
        c, i = m.group(), m.end()
        top = open_[-1] if open_ else None
        if c == "|":  # only ever inside an alternation (else _constructs rejects the prompt)
            branch(top[1], top[2])  # type: ignore[index]
        elif c == ":" and top is not None and top[0].kind == ":":
            if j == top[0].colons[-1]:  # the number: the edit ends at its bracket
                finish()
                i = top[0].close + 1
            else:  # before -> after
                branch(top[1], top[2])
        elif c == "(" or c == "[":
            construct = found.get(j)
            if construct is None or construct.kind in "([":  # literal, or emphasis: stays text
                pending.append(c)
                if construct is not None:
                    open_.append([construct, -1, [], False])
                continue
            if controls:
                controls[-1][3] = False
            flush()
            at = len(program)
            jumps: list[int] = []
            if construct.kind == ":":
                when = _end_step(construct.when, steps)
                whens.add(when)
                program.append((_EDIT, when, -1))
                if len(construct.colons) == 1:  # [a:N]: nothing before
                    branch(at, jumps)
            else:
                program.append((_CHOOSE, [at + 1]))
            open_.append([construct, at, jumps, True])
            controls.append(open_[-1])
        elif top is not None and j == top[0].close:
            if top[1] < 0:
                pending.append(c)
                open_.pop()
            else:
                finish()
        else:  # text, an escape (kept as written), or a bracket or colon outside any construct
            pending.append(c)
    if i < len(prompt):
        pending.append(prompt[i:])
    flush()
    return program, whens


def _render(program: list[tuple], step: int) -> str:
    out: list[str] = []
    pc, n = 0, len(program)
    while pc < n:
        op = program[pc]
        kind = op[0]
        pc += 1
        if kind == _TEXT:
            out.append(op[1])
        elif kind == _CHOOSE_TEXT:
            out.append(op[1][(step - 1) % len(op[1])])
        elif kind == _EDIT_TEXT:
            out.append(op[2] if step <= op[1] else op[3])
        elif kind == _JUMP:
            pc = op[1]
        elif kind == _EDIT:
            pc = pc if step <= op[1] else op[2]
        else:
            pc = op[1][(step - 1) % len(op[1])]
    return "".join(out)


def prompt_schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """The plain prompts of a prompt with editing syntax: ``[(end_step, prompt), ...]``, ends increasing,
    the last one ``steps``. A prompt without editing gives ``[(steps, prompt)]``.

    >>> prompt_schedule("a [cat:dog:0.5]", 20)
    [(10, 'a cat'), (20, 'a dog')]
    """
    _check_prompt(prompt)
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"steps must be an int, got {type(steps).__name__}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    found = _constructs(prompt)
    if found is None or all(c.kind in "([" for c in found.values()):
        return [(steps, prompt)]  # no editing (or A1111's grammar rejects the prompt): the prompt as written
    program, whens = _compile(prompt, found, steps)
    sizes = sorted({len(op[1]) for op in program if op[0] in (_CHOOSE, _CHOOSE_TEXT)})  # alternations' lengths
    ends = set(range(1, steps + 1)) if sizes else {w for w in whens if w >= 1} | {steps}
    # Two steps that take every edit and alternation the same way render the same text: render it once.
    cuts, rendered = sorted(whens), {}
    schedule = []
    for end in sorted(ends):
        key = (bisect.bisect_left(cuts, end), *((end - 1) % k for k in sizes))
        if key not in rendered:
            rendered[key] = _render(program, end)
        schedule.append((end, rendered[key]))
    return schedule


def schedule_at(schedule: list[tuple[int, T]], step: int) -> T:
    """The entry of a schedule used at ``step`` (0-based): the first whose end step is >= ``step``."""
    for end, value in schedule:
        if step <= end:
            return value
    return schedule[-1][1]
