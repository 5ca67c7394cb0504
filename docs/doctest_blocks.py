"""A Griffe extension for the API reference (``mkdocs.yml`` loads it into mkdocstrings): the doctest examples in
a docstring (a ``>>>`` line, the lines after it up to a blank line) are shown as Python console code blocks.
Read as Markdown, an output such as ``[('a ', 1.0), ...]`` after a ``[...]`` input would be a link."""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    """``text`` with each doctest example wrapped in a ```` ```pycon ```` fence at the example's indentation."""
    out: list[str] = []
    indent: str | None = None  # the open fence's indentation
    for line in text.splitlines():
        if indent is not None and not line.strip():
            out.append(indent + "```")
            indent = None
        elif indent is None and line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + "```pycon")
        out.append(line)
    if indent is not None:
        out.append(indent + "```")
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
