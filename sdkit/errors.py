"""sdkit's error for model files that cannot be loaded, and how another library's error reads as one line.

Argument errors are ``ValueError``/``TypeError`` naming the parameter (``sdkit.limits``); a model file or folder
that cannot be loaded is a ``ModelLoadError`` (a ``ValueError``) naming the file and the field.
"""

from __future__ import annotations


class ModelLoadError(ValueError):
    """A model source that cannot be loaded, with one line saying why."""


def error_line(e: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message (libraries' span many)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:300]}" if lines else type(e).__name__
