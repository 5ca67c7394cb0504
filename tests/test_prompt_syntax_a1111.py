"""sdkit's prompt syntax against AUTOMATIC1111's (stable-diffusion-webui >= 1.6), case by case.

Oracles, all from outside sdkit:

- the doctests of A1111's ``modules/prompt_parser.py`` (the >= 1.6 file: ``hires_steps``, ``use_old_scheduling``;
  commit 28bd8e142d5f77b71ae8d7d7140b5da1b3a49906), transcribed as data below;
- outputs of that same file's parser, run with lark 1.1.2 (the version its ``requirements_versions.txt`` pins),
  for the cases its doctests miss; every one gave the same output under 8 values of ``PYTHONHASHSEED``;
- the deliberate differences listed in ``sdkit.text.prompt_syntax``'s docstring, asserted as such;
- hypothesis properties that hold for any prompt.

A1111's ``get_learned_conditioning_prompt_schedules([p], steps)[0]`` is ``[[end, text], ...]`` and maps onto
``prompt_schedule(p, steps)``; its ``parse_prompt_attention(p)`` is ``[[text, weight], ...]`` with
``["BREAK", -1]`` for a break, and maps onto ``parse_weights(p)``.
"""

from __future__ import annotations

import inspect
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdkit.text import Span, parse_weights, prompt_schedule, prompt_syntax
from sdkit.text.prompt_syntax import MAX_NESTING, MAX_PROMPT_CHARS

# ------------------------------------------------------------------------------------- A1111's doctests
# get_learned_conditioning_prompt_schedules, with g = lambda p: get_learned_conditioning_prompt_schedules([p], 10)[0]
SCHEDULE_DOCTESTS = [
    ("test", [[10, "test"]]),
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", [[10, "a [unbalanced"]]),
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", [[k, "a" if k % 2 else "(b:1.1)"] for k in range(1, 11)]),
    ("[fe|]male", [[k, "female" if k % 2 else "male"] for k in range(1, 11)]),
    ("[fe|||]male", [[k, "female" if k % 4 == 1 else "male"] for k in range(1, 11)]),
]
# The one doctest A1111's own code does not pass (its comment: "not handling this right now").
STALE_DOCTEST = ("a [{b|d{:.5] c", [[5, "a  c"], [10, "a {b|d{ c"]])
# With g = lambda p: get_learned_conditioning_prompt_schedules([p], 10, 10)[0]: a hires pass, which sdkit lacks.
HIRES_DOCTESTS = [("a [b:.5] c", [[10, "a b c"]]), ("a [b:1.5] c", [[5, "a  c"], [10, "a b c"]])]

# parse_prompt_attention
ATTENTION_DOCTESTS = [
    ("normal text", [["normal text", 1.0]]),
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("(unbalanced", [["unbalanced", 1.1]]),
    (r"\(literal\]", [["(literal]", 1.0]]),
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ["a ", 1.0],
            ["house", 1.5730000000000004],
            [" ", 1.1],
            ["on", 1.0],
            [" a ", 1.1],
            ["hill", 0.55],
            [", sun, ", 1.1],
            ["sky", 1.4641000000000006],
            [".", 1.1],
        ],
    ),
]

# ----------------------------------------------------------------------- A1111's parser, run (see the header)
A1111_SCHEDULES = [  # at 10 steps
    ("[a:b:0]", [[10, "b"]]),  # a switch below step 1: b from the start
    ("[a:b:10]", [[10, "a"]]),
    ("[a:b:11]", [[10, "a"]]),  # clipped to steps
    ("[a:b:1.5]", [[10, "a"]]),
    ("[a:b:+3]", [[3, "a"], [10, "b"]]),  # lark's SIGNED_NUMBER: a sign ...
    ("[a:b:-3]", [[10, "b"]]),
    ("[a:b:-.5]", [[10, "b"]]),
    ("[a:b:1e-1]", [[10, "b"]]),  # ... and an exponent; no "." means an absolute step: int(0.1) = 0
    ("[a:b:1E1]", [[10, "a"]]),
    ("[a:b:2.5e-1]", [[2, "a"], [10, "b"]]),  # a "." makes it a fraction
    ("[a:b:3.]", [[10, "a"]]),
    ("[a:b: .5 ]", [[5, "a"], [10, "b"]]),
    ("[a:b:\t3\n]", [[3, "a"], [10, "b"]]),
    ("[a: b:0.35]", [[3, "a"], [10, " b"]]),
    ("[ a : b : 3 ]", [[3, " a "], [10, " b "]]),
    ("[a:b:\u0663]", [[10, "[a:b:\u0663]"]]),  # ASCII digits only
    ("[a:b:x]", [[10, "[a:b:x]"]]),
    ("[a:b]", [[10, "[a:b]"]]),
    ("[a:b:c:3]", [[10, "[a:b:c:3]"]]),
    ("[a:b:3", [[10, "[a:b:3"]]),
    ("a:b:3]", [[10, "a:b:3]"]]),
    ("[(a:b:3)]", [[10, "[(a:b:3)]"]]),
    (r"\[a:b:3\]", [[10, r"\[a:b:3\]"]]),
    ("[a::3]", [[3, "a"], [10, ""]]),
    ("[:a:3]", [[3, ""], [10, "a"]]),
    ("[::3]", [[3, ""], [10, ""]]),
    (r"a\b", [[10, r"a\b"]]),  # a backslash stays in the schedule's text (parse_weights drops it)
    (r"[c:d:3] e\\f", [[3, r"c e\\f"], [10, r"d e\\f"]]),
    ("[c:d:3] e\\", [[10, "[c:d:3] e\\"]]),  # a backslash at the end: the whole prompt is literal
    ("[c:d:3] e\\\nf", [[10, "[c:d:3] e\\\nf"]]),  # ... and before a line break
    ("a | b [c:d:3]", [[10, "a | b [c:d:3]"]]),  # a bar outside an alternation: the same
    ("[a|b(c]", [[10, "[a|b(c]"]]),
    ("[a|(b|c)]", [[10, "[a|(b|c)]"]]),
    ("[|]", [[k, ""] for k in range(1, 11)]),
    ("[a|]", [[k, "a" if k % 2 else ""] for k in range(1, 11)]),
    ("[|a]", [[k, "" if k % 2 else "a"] for k in range(1, 11)]),
    ("[a|[b|c]]", [[k, "a" if k % 2 else "c"] for k in range(1, 11)]),  # the inner one is at step k too
    ("[[a:b:2]|c]", [[1, "a"], [2, "c"]] + [[k, "b" if k % 2 else "c"] for k in range(3, 11)]),
    ("[[a|b]:c:3]", [[1, "a"], [2, "b"], [3, "a"]] + [[k, "c"] for k in range(4, 11)]),
    ("[a:[b|c]:3]", [[1, "a"], [2, "a"], [3, "a"]] + [[k, "b" if k % 2 else "c"] for k in range(4, 11)]),
    ("(a [b:c:3]:1.5)", [[3, "(a b:1.5)"], [10, "(a c:1.5)"]]),  # edits inside emphasis
    ("[a:(b:1.2):3]", [[3, "a"], [10, "(b:1.2)"]]),
    ("(a:[b:c:3])", [[3, "(a:b)"], [10, "(a:c)"]]),
    ("a BREAK [b:c:3]", [[3, "a BREAK b"], [10, "a BREAK c"]]),
    ("a AND [b:c:3]", [[3, "a AND b"], [10, "a AND c"]]),
]

A1111_WEIGHTS = [
    (r"a\b", [["ab", 1.0]]),  # a backslash that escapes nothing is dropped
    (r"(a\b)", [["ab", 1.1]]),
    ("a\\", [["a", 1.0]]),
    (r"a\ b", [["a b", 1.0]]),
    (r"\\", [["\\", 1.0]]),
    (r"\(a\)\[b\]", [["(a)[b]", 1.0]]),
    (r"(\()", [["(", 1.1]]),
    ("((a) b)", [["a", 1.2100000000000002], [" b", 1.1]]),
    ("[a(b]c)", [["a", 0.9090909090909091], ["b", 1.0], ["c", 1.1]]),  # round and square match separately
    ("(((a)", [["a", 1.3310000000000004]]),
    ("[[(a]", [["a", 0.9090909090909091]]),
    ("[[[a]]]", [["a", 0.7513148009015777]]),
    ("(a:1.2)(b:1.2)", [["ab", 1.2]]),
    ("( a : -0.5 )", [[" a ", -0.5]]),
    ("(a:+2)", [["a", 2.0]]),
    ("(a:.5)", [["a", 0.5]]),
    ("(a:5.)", [["a", 5.0]]),
    ("(a:0)", [["a", 0.0]]),
    ("(a: 1.2 ) b", [["a", 1.2], [" b", 1.0]]),
    ("a:1.2)", [["a:1.2)", 1.0]]),
    ("(a:1.2]", [["a:1.2]", 1.1]]),
    ("(a:1.5:2)", [["a:1.5", 2.0]]),
    ("((a:2):3)", [["a", 6.0]]),
    ("[a:b:3]", [["a:b:3", 0.9090909090909091]]),
    ("BREAK a", [["", 1.0], ["BREAK", -1], ["a", 1.0]]),
    ("a BREAK", [["a", 1.0], ["BREAK", -1], ["", 1.0]]),
    ("a BREAK BREAK b", [["a", 1.0], ["BREAK", -1], ["", 1.0], ["BREAK", -1], ["b", 1.0]]),
    ("aBREAK b", [["aBREAK b", 1.0]]),
    (r"a\(BREAK", [["a(", 1.0], ["BREAK", -1], ["", 1.0]]),
]


def assert_weights(prompt: str, expected: list[list]) -> None:
    spans = parse_weights(prompt)
    assert len(spans) == len(expected), (spans, expected)
    for span, (text, weight) in zip(spans, expected, strict=True):
        if (text, weight) == ("BREAK", -1):
            assert span == Span("", 1.0, True)
        else:
            assert not span.chunk_break and span.text == text
            assert span.weight == pytest.approx(weight, abs=1e-6)


def schedule(prompt: str, steps: int = 10) -> list[list]:
    return [[end, text] for end, text in prompt_schedule(prompt, steps)]


@pytest.mark.parametrize(("prompt", "expected"), SCHEDULE_DOCTESTS + A1111_SCHEDULES)
def test_schedule_as_a1111(prompt: str, expected: list[list]) -> None:
    assert schedule(prompt) == expected


@pytest.mark.parametrize(("prompt", "expected"), ATTENTION_DOCTESTS + A1111_WEIGHTS)
def test_weights_as_a1111(prompt: str, expected: list[list]) -> None:
    assert_weights(prompt, expected)


def test_equal_weights_merge_bit_for_bit() -> None:
    # A1111 merges neighbours whose float weights are ==, so the products must be formed in its order.
    assert [s.text for s in parse_weights("((a):1.1)((b:1.1))")] == ["ab"]
    assert parse_weights("(a)(b)")[0].weight == 1.1


# ------------------------------------------------------------------------------ deliberate differences
def test_differences_are_documented() -> None:
    doc = prompt_syntax.__doc__ or ""
    for phrase in ("OverflowError", "(x:999...9)", "(x:1.2.3)", "(a BREAK b)", "AND", "a [{b|d{:.5] c"):
        assert phrase in doc
    for phrase in ("hires_steps", "[x:y:3][[ ]", "MAX_PROMPT_CHARS", "MAX_NESTING"):
        assert phrase in doc


@pytest.mark.parametrize(
    ("when", "expected"),
    [("9" * 400, [[10, "a"]]), ("1e999", [[10, "a"]]), ("9" * 400 + ".5", [[10, "a"]]), ("-1e999", [[10, "b"]])],
)
def test_huge_switch_steps_clip(when: str, expected: list[list]) -> None:
    # A1111: OverflowError (int(float("inf"))); sdkit clips to the steps, as it does for any number past them.
    assert schedule(f"[a:b:{when}]") == expected


def test_issue_overflow_case() -> None:
    assert prompt_schedule("[red:blue:" + "9" * 400 + "]", 20) == [(20, "red")]


@pytest.mark.parametrize("prompt", ["(x:" + "9" * 400 + ")", "(x:1.2.3)", "(x:.)", "a (b:-.)"])
def test_bad_weights_raise(prompt: str) -> None:
    # A1111: weight inf for the first; float() raises ValueError for the others. sdkit: one-line ValueError.
    with pytest.raises(ValueError, match="prompt has the weight") as error:
        parse_weights(prompt)
    assert "\n" not in str(error.value)


def test_weight_syntax_without_open_bracket_is_text() -> None:
    assert_weights("x:1.2.3) (y:1e999)", [["x:1.2.3) ", 1.0], ["y:1e999", 1.1]])  # exponents are not weights


def test_break_inside_brackets_is_still_a_break() -> None:
    # A1111: [["a", 1.1], ["BREAK", -1.1], ["b", 1.1]], its marker lost to the bracket's factor.
    assert parse_weights("(a BREAK b)") == [Span("a", 1.1), Span("", 1.0, True), Span("b", 1.1)]


def test_and_is_plain_text() -> None:
    # A1111 splits on AND and strips a trailing ":weight" (composable diffusion) before these functions run.
    assert prompt_schedule("a cat AND a dog:1.2", 20) == [(20, "a cat AND a dog:1.2")]
    assert parse_weights("a cat AND a dog:1.2") == [Span("a cat AND a dog:1.2")]


def test_stale_doctest_follows_a1111_code() -> None:
    prompt, doctest_says = STALE_DOCTEST
    assert schedule(prompt) == [[10, prompt]]  # what A1111's parser returns: the "|" fails its grammar
    assert schedule(prompt) != doctest_says


@pytest.mark.parametrize(("prompt", "expected"), HIRES_DOCTESTS)
def test_hires_doctests_have_no_counterpart(prompt: str, expected: list[list]) -> None:
    assert list(inspect.signature(prompt_schedule).parameters) == ["prompt", "steps"]
    assert schedule(prompt) != expected  # a switch is relative to the steps given, never to a first pass


def test_ambiguous_pieces_take_the_construct() -> None:
    # A1111 returns either of these depending on PYTHONHASHSEED; sdkit always the first.
    assert schedule("[x:y:3][[ ]") == [[3, "x[[ ]"], [10, "y[[ ]"]]
    assert schedule("[x (a:b:c) [d:e:3]]") == [[3, "[x (a:b:c) d]"], [10, "[x (a:b:c) e]"]]


# ------------------------------------------------------------------------- bounds and the issue's cases
@pytest.mark.parametrize("n", [20, 24, 99])
def test_adversarial_brackets_parse(n: int) -> None:
    for prompt in ("(" * n, "[" * n):
        assert prompt_schedule(prompt, 20) == [(20, prompt)]
        assert parse_weights(prompt) == [Span("", 1.0)]
    prompt = "[a|" * n  # never closed: literal, each "a|" one more bracket deep
    assert prompt_schedule(prompt, 20) == [(20, prompt)]
    assert_weights(prompt, [["a|", (1 / 1.1) ** (k + 1)] for k in range(n)])


def test_nesting_at_the_bound() -> None:
    prompt = "(" * MAX_NESTING + "x" + ")" * MAX_NESTING
    assert parse_weights(prompt)[0].weight == pytest.approx(1.1**MAX_NESTING, rel=1e-12)
    assert prompt_schedule(prompt, 20) == [(20, prompt)]


@pytest.mark.parametrize(
    ("prompt", "value"),
    [
        ("(" * 400 + "x" + ")" * 400, 400),
        ("(" * MAX_NESTING + "[", MAX_NESTING + 1),
        ("[a:b:3]" + "[" * (MAX_NESTING + 1), MAX_NESTING + 1),
        ("a" * (MAX_PROMPT_CHARS + 1), MAX_PROMPT_CHARS + 1),
    ],
)
def test_beyond_the_bounds(prompt: str, value: int) -> None:
    bound = MAX_PROMPT_CHARS if len(prompt) > MAX_PROMPT_CHARS else MAX_NESTING
    for parse in (parse_weights, lambda p: prompt_schedule(p, 20)):
        with pytest.raises(ValueError) as error:
            parse(prompt)
        message = str(error.value)
        assert "\n" not in message and message.startswith("prompt ")
        assert str(value) in message and str(bound) in message


def test_escaped_brackets_do_not_nest() -> None:
    prompt = "\\(" * (MAX_NESTING + 1)
    assert parse_weights(prompt) == [Span("(" * (MAX_NESTING + 1))]


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        prompt_schedule("a", 0)
    with pytest.raises(TypeError, match="steps must be an int"):
        prompt_schedule("a", 2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prompt must be a str"):
        parse_weights(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- properties
TOKENS = list("()[]:|\\ ,.-+e0123456789abcXYZ\n\té日\u3000") + ["BREAK", " BREAK ", "AND", "0.5", "1.2", "\\(", "\\)"]
PLAIN = list(" ,.-+e0123456789abcXYZ\n\té日\u3000|") + ["AND", "brEAK"]  # no brackets, colons, backslashes
PROPERTY = settings(max_examples=300, derandomize=True, database=None, deadline=None)


def is_subsequence(short: str, long: str) -> bool:
    it = iter(long)
    return all(c in it for c in short)


@PROPERTY
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join), st.integers(1, 30))
def test_any_prompt_parses_or_raises_value_error(prompt: str, steps: int) -> None:
    try:
        result = prompt_schedule(prompt, steps)
    except ValueError:
        pass
    else:
        ends = [end for end, _ in result]
        assert ends == sorted(set(ends)) and ends[-1] == steps and 1 <= ends[0] and len(ends) <= steps
        assert all(is_subsequence(text, prompt) for _, text in result)  # editing only removes characters
    try:
        spans = parse_weights(prompt)
    except ValueError:
        return
    assert spans and all(math.isfinite(s.weight) for s in spans)
    assert all(s.text == "" and s.weight == 1.0 for s in spans if s.chunk_break)


@PROPERTY
@given(st.lists(st.sampled_from(PLAIN), max_size=40).map("".join), st.integers(1, 30))
def test_plain_text_is_kept(prompt: str, steps: int) -> None:
    assert parse_weights(prompt) == [Span(prompt, 1.0)]
    assert prompt_schedule(prompt, steps) == [(steps, prompt)]


@PROPERTY
@given(st.lists(st.sampled_from([*PLAIN, "(", ")", "[", "]", ":", "\\", "\\\\"]), max_size=40).map("".join))
def test_escaped_text_is_literal(text: str) -> None:
    escaped = "".join("\\" + c if c in "()[]\\" else c for c in text)
    assert "".join(s.text for s in parse_weights(escaped)) == text
    assert {s.weight for s in parse_weights(escaped)} == {1.0}


@PROPERTY
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join), st.integers(1, 30))
def test_prompts_without_square_brackets_have_no_schedule(prompt: str, steps: int) -> None:
    prompt = prompt.replace("[", "(").replace("]", ")")
    assert prompt_schedule(prompt, steps) == [(steps, prompt)]
