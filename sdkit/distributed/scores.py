"""Scorers for a sweep's table: ``scorer(image, parameters) -> {name: number}``, one call per cell.

A scorer sees the cell's PIL image and its ``GenerationParameters``. ``SCORERS`` holds the names a sweep file may
list; the Python API also takes any callable. This module imports nothing heavy (the CLI checks names without torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Scorer = Callable[[Any, Any], dict[str, float]]


def prompt_following(image: Any, parameters: Any) -> dict[str, float]:
    """The embedded model's evaluator (``sdkit.models.shapes.evaluate``): for a prompt written in the shapes world's
    caption grammar, the share of requested attributes (colour, shape, size, position, background, ...) the image
    shows, and ``all`` (1.0 when the whole prompt is right). Prompts outside the grammar score nothing (``{}``)."""
    from sdkit.models.shapes import evaluate

    try:
        result = evaluate.evaluate([image], [parameters.prompt])
    except ValueError:  # not a caption of the shapes world
        return {}
    return {k: float(v) for k, v in result.items() if k != "items"}


SCORERS: dict[str, Scorer] = {"prompt_following": prompt_following}
