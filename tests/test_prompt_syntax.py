"""Prompt syntax with A1111's semantics: attention weights and prompt editing schedules."""

from __future__ import annotations

import pytest

from sdkit.text import Span, parse_weights, prompt_schedule, schedule_at


def weights(prompt: str) -> list[tuple[str, float]]:
    return [(s.text, round(s.weight, 6)) for s in parse_weights(prompt)]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("(cat)", [("cat", 1.1)]),
        ("((cat))", [("cat", 1.21)]),
        ("(((cat)))", [("cat", 1.331)]),
        ("(cat:1.3)", [("cat", 1.3)]),
        ("( cat : 0.5 )", [(" cat ", 0.5)]),
        ("[cat]", [("cat", 0.909091)]),
        ("[[cat]]", [("cat", 0.826446)]),
        ("a (b (c:2) d) e", [("a ", 1.0), ("b ", 1.1), ("c", 2.2), (" d", 1.1), (" e", 1.0)]),
        ("(a:1.5) (b:-1)", [("a", 1.5), (" ", 1.0), ("b", -1.0)]),
        (r"\(cat\) \[x\] a\\b", [(r"(cat) [x] a\b", 1.0)]),  # escapes are literal
        (r"(a \(b\))", [("a (b)", 1.1)]),
        ("(a)(b)", [("ab", 1.1)]),  # equal neighbours merge, as in A1111
        ("(unclosed", [("unclosed", 1.1)]),  # an unclosed bracket still applies
        ("a) b] c:1.2)", [("a) b] c:1.2)", 1.0)]),  # unmatched closers and colons are text
        ("", [("", 1.0)]),
    ],
)
def test_weights(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert weights(prompt) == expected


def test_break_is_a_chunk_marker_not_text() -> None:
    assert parse_weights("a BREAK b") == [Span("a"), Span("", 1.0, True), Span("b")]
    spans = parse_weights("(a BREAK b)")
    assert [(s.text, round(s.weight, 3), s.chunk_break) for s in spans] == [
        ("a", 1.1, False),
        ("", 1.0, True),
        ("b", 1.1, False),
    ]
    assert parse_weights("aBREAK b") == [Span("aBREAK b")]  # only a separate word


def test_switch_at_half_of_20_steps() -> None:
    assert prompt_schedule("a [cat:dog:0.5]", 20) == [(10, "a cat"), (20, "a dog")]


@pytest.mark.parametrize(
    ("prompt", "steps", "expected"),
    [
        ("a cat", 20, [(20, "a cat")]),
        ("[cat:dog:10]", 30, [(10, "cat"), (30, "dog")]),  # an integer is an absolute step
        ("[cat:dog:0.25]", 30, [(7, "cat"), (30, "dog")]),  # int(0.25 * 30)
        ("[cat:dog:40]", 30, [(30, "cat")]),  # clipped to the number of steps
        ("a [hat:0.5] cat", 20, [(10, "a  cat"), (20, "a hat cat")]),  # add after
        ("a [hat::0.5] cat", 20, [(10, "a hat cat"), (20, "a  cat")]),  # remove after
        ("[[a:b:5]:c:0.75]", 20, [(5, "a"), (15, "b"), (20, "c")]),  # nested
        ("[a:b:5] [c:d:0.5]", 20, [(5, "a c"), (10, "b c"), (20, "b d")]),
        ("[(cat:1.2):dog:0.5]", 20, [(10, "(cat:1.2)"), (20, "dog")]),  # weights survive for parse_weights
        ("(x:1.2) [y] [a:b]", 20, [(20, "(x:1.2) [y] [a:b]")]),  # no editing: unchanged
        ("[a|b]", 4, [(1, "a"), (2, "b"), (3, "a"), (4, "b")]),  # alternation
        (r"\[a:b:0.5\]", 20, [(20, r"\[a:b:0.5\]")]),  # escaped: literal
        ("broken [a:b:0.5", 20, [(20, "broken [a:b:0.5")]),
    ],
)
def test_prompt_schedule(prompt: str, steps: int, expected: list[tuple[int, str]]) -> None:
    assert prompt_schedule(prompt, steps) == expected


def test_schedule_at() -> None:
    schedule = prompt_schedule("[cat:dog:0.5]", 20)
    assert [schedule_at(schedule, s) for s in (0, 10, 11, 19)] == ["cat", "cat", "dog", "dog"]
