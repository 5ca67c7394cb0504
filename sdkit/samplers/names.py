"""A1111 (stable-diffusion-webui) display names <-> sdkit's (sampler, schedule) names: ``resolve``,
``display_name`` and their tables. They live in ``sdkit.names``, which imports no torch (the CLI checks names
with them before loading anything); this module is their place in the samplers package.
"""

from __future__ import annotations

from sdkit.names import AUTOMATIC, SAMPLER_DISPLAY, SCHEDULE_DISPLAY, DisplayName, display_name, resolve

__all__ = ["AUTOMATIC", "SAMPLER_DISPLAY", "SCHEDULE_DISPLAY", "DisplayName", "display_name", "resolve"]
