"""Model families and their defaults: what ``Kit.generate`` uses when the caller leaves a parameter out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FamilyDefaults:
    name: str
    width: int
    height: int
    steps: int
    cfg: float
    sampler: str
    schedule: str
    description: str


FAMILIES: dict[str, FamilyDefaults] = {
    "sd1": FamilyDefaults("sd1", 512, 512, 25, 7.5, "euler", "normal", "Stable Diffusion 1.x (CLIP ViT-L, 512)"),
    "sd2": FamilyDefaults("sd2", 768, 768, 25, 7.5, "euler", "normal", "Stable Diffusion 2.x (OpenCLIP ViT-H, 768)"),
    "sdxl": FamilyDefaults("sdxl", 1024, 1024, 30, 5.0, "euler", "normal", "SDXL 1.0 (two text encoders, 1024)"),
    "shapes": FamilyDefaults("shapes", 64, 64, 20, 7.5, "euler", "normal", "sdkit's embedded shapes model (64)"),
}


def defaults_for(family: str, *, v_prediction: bool = False, config: Mapping[str, Any] | None = None) -> FamilyDefaults:
    """Family defaults; SD 2.x epsilon models (the 512 "base") default to 512 instead of 768. The embedded model's
    ``sdkit.json`` (``config``) sets its own ``default_size``, ``default_steps`` and ``default_cfg``."""
    d = FAMILIES[family]
    if family == "sd2" and not v_prediction:
        return FamilyDefaults("sd2", 512, 512, d.steps, d.cfg, d.sampler, d.schedule, d.description)
    if family == "shapes" and config:
        size = config.get("default_size", d.width), config.get("default_size", d.height)
        steps, cfg = config.get("default_steps", d.steps), config.get("default_cfg", d.cfg)
        return FamilyDefaults("shapes", *size, steps, cfg, d.sampler, d.schedule, d.description)
    return d
