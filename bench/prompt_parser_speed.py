"""Issue 15: the worst case of sdkit's prompt parsers over adversarial prompts, up to 10,000 characters.

    python bench/prompt_parser_speed.py                  # sizes 1000 3000 10000, 20 steps, median of 5
    python bench/prompt_parser_speed.py --sizes 20000    # at MAX_PROMPT_CHARS

Times ``prompt_schedule(prompt, steps)`` and ``parse_weights(prompt)`` (interleaved, medians, as bench/common.py
does) on each family of prompts at each size, and prints every median and the largest. The issue's target: every
prompt up to 10,000 characters in under 0.1 s. A prompt past ``MAX_NESTING`` is rejected with a ValueError; the
time to reject it counts like any other. Pure Python: ``--threads`` only sets torch's, which is not used here.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from common import cpu_parser, interleaved, parse_cpu_args

from sdkit.text.prompt_syntax import MAX_NESTING, parse_weights, prompt_schedule

SOUP = list("()[]:|\\ ab,.0123456789") + ["BREAK", "0.5", "1.2"]


def repeat(unit: str, n: int, head: str = "") -> str:
    """``head`` then as many whole copies of ``unit`` as fit in ``n`` characters."""
    return head + unit * max((n - len(head)) // len(unit), 0)


def soup(n: int, seed: int, depth: int | None = None) -> str:
    """Random syntax tokens; with ``depth``, openers past that many open brackets are left out."""
    rng, out, size, opened = random.Random(seed), [], 0, 0
    while size < n:
        token = rng.choice(SOUP)
        if depth is not None and token in "([" and opened >= depth:
            continue
        opened = opened + 1 if token in "([" else max(opened - 1, 0) if token in ")]" else opened
        out.append(token)
        size += len(token)
    return "".join(out)[:n]


def constructs(n: int, seed: int) -> str:
    """Random well-formed edits, alternations (2 to 20 options, so no two steps render alike) and emphasis,
    nested up to 4 deep."""
    rng = random.Random(seed)

    def one(level: int) -> str:
        kind = rng.randrange(5) if level < 4 else 4
        if kind == 0:
            return f"[{one(level + 1)}:{one(level + 1)}:{rng.choice(['0.5', '3', '.25', '1e1', '17'])}]"
        if kind == 1:
            return "[" + "|".join(one(level + 1) for _ in range(rng.randint(2, 20))) + "]"
        if kind == 2:
            return f"({one(level + 1)}:{rng.choice(['1.2', '0.8'])})"
        if kind == 3:
            return f"[{one(level + 1)}]"
        return rng.choice(["a", "cat ", "red, ", "", "BREAK ", "\\("])

    out, size, misses = [], 0, 0
    while misses < 100:  # stop after 100 pieces in a row too long for what is left
        piece = one(0)
        if size + len(piece) > n:
            misses += 1
            continue
        out.append(piece)
        size, misses = size + len(piece), 0
    return "".join(out)


FAMILIES: dict[str, Callable[[int], str]] = {
    "(((...": lambda n: "(" * n,
    "[[[...": lambda n: "[" * n,
    "[a|[a|[a|...": lambda n: repeat("[a|", n),
    "(^k x )^k": lambda n: "(" * ((n - 1) // 2) + "x" + ")" * ((n - 1) // 2),
    "(^99 x )^99 ...": lambda n: repeat("(" * 99 + "x" + ")" * 99, n),
    "(^99 (a)(a)...": lambda n: repeat("(a)", n, "(" * (MAX_NESTING - 1)),
    "(^99 BREAK BREAK ...": lambda n: repeat("BREAK ", n, "(" * (MAX_NESTING - 1)),
    "(a(a(a...)))": lambda n: repeat("(a" * (MAX_NESTING - 1) + ")" * (MAX_NESTING - 1), n),
    "[a:b:0.5] ...": lambda n: repeat("[a:b:0.5]", n),
    "[a|b] ...": lambda n: repeat("[a|b]", n),
    "[[a|b]|c] ...": lambda n: repeat("[[a|b]|c]", n),
    "[[a:b:3]:c:0.5] ...": lambda n: repeat("[[a:b:3]:c:0.5]", n),
    "[^99 a :b:3]^99 ...": lambda n: repeat("[" * (MAX_NESTING - 1) + "a" + ":b:3]" * (MAX_NESTING - 1), n),
    "[a|b|c|...] one": lambda n: "[" + "|".join("abc" * (n // 2))[: n - 2] + "]",
    "(:::...)": lambda n: "(" + ":" * (n - 2) + ")",
    "[|||...]": lambda n: "[" + "|" * (n - 2) + "]",
    "[red:blue:999...]": lambda n: "[red:blue:" + "9" * (n - 11) + "]",
    "soup (seed 0)": lambda n: soup(n, 0),
    "soup (seed 1)": lambda n: soup(n, 1),
    "soup, depth <= 50": lambda n: soup(n, 2, depth=50),
    "soup, no | or \\": lambda n: soup(n, 3).replace("|", "a").replace("\\", "b"),
    "random constructs (seed 0)": lambda n: constructs(n, 0),
    "random constructs (seed 1)": lambda n: constructs(n, 1),
}


def quiet(fn: Callable[[str], object], prompt: str) -> Callable[[], str]:
    """A timed call; returns "ok" or "ValueError" (a prompt past the bounds is rejected, not parsed)."""

    def call() -> str:
        try:
            fn(prompt)
        except ValueError:
            return "ValueError"
        return "ok"

    return call


def main() -> None:
    p = cpu_parser(__doc__ or "", repeats=5)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    args = parse_cpu_args(p)
    print(f"| family | chars | prompt_schedule(p, {args.steps}) | parse_weights(p) | outcome |")
    print("| --- | --- | --- | --- | --- |")
    worst = (0.0, "")
    for n in args.sizes:
        for name, make in FAMILIES.items():
            prompt = make(n)
            fns = {
                "schedule": quiet(lambda q: prompt_schedule(q, args.steps), prompt),
                "weights": quiet(parse_weights, prompt),
            }
            times = interleaved(fns, args.repeats)
            outcome = fns["schedule"]()
            ms = {fn: f"{t * 1e3:.2f} ms" for fn, t in times.items()}
            print(f"| {name} | {len(prompt)} | {ms['schedule']} | {ms['weights']} | {outcome} |")
            for fn, t in times.items():
                worst = max(worst, (t, f"{fn} on {name!r} at {len(prompt)} chars"))
    print(f"\nworst median: {worst[0] * 1e3:.1f} ms ({worst[1]}); target < 100 ms up to 10,000 characters")


if __name__ == "__main__":
    main()
