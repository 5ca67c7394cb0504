"""Steps <-> a flat dict of tensors, so a run can be saved (``sdkit.loading`` does the file I/O, e.g. with
safetensors), reloaded and resumed or branched from any saved step."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from sdkit.types import Step

_TENSORS = ("x", "denoised", "x_next")


def steps_to_tensors(steps: Iterable[Step]) -> dict[str, Tensor]:
    """Stack steps into ``{"i": [k], "sigma": [k], "sigma_next": [k], "x": [k, b, c, h, w], ...}``.

    All values are contiguous CPU tensors (what safetensors stores); sigmas are float64 so they round-trip
    exactly. An empty run gives empty ``i``/``sigma``/``sigma_next`` and no latent entries.
    """
    steps = list(steps)
    out: dict[str, Tensor] = {
        "i": torch.tensor([s.i for s in steps], dtype=torch.int64),
        "sigma": torch.tensor([s.sigma for s in steps], dtype=torch.float64),
        "sigma_next": torch.tensor([s.sigma_next for s in steps], dtype=torch.float64),
    }
    if steps:
        for name in _TENSORS:
            out[name] = torch.stack([getattr(s, name).detach().cpu() for s in steps]).contiguous()
    return out


def steps_from_tensors(tensors: dict[str, Tensor]) -> list[Step]:
    """The inverse of ``steps_to_tensors``."""
    missing = [k for k in ("i", "sigma", "sigma_next") if k not in tensors]
    if missing:
        raise ValueError(f"not a sampler trace: missing {missing} (have {sorted(tensors)})")
    k = int(tensors["i"].shape[0])
    if k and any(name not in tensors for name in _TENSORS):
        raise ValueError(f"sampler trace with {k} steps lacks latents {[n for n in _TENSORS if n not in tensors]}")
    return [
        Step(
            int(tensors["i"][j]),
            float(tensors["sigma"][j]),
            float(tensors["sigma_next"][j]),
            tensors["x"][j],
            tensors["denoised"][j],
            tensors["x_next"][j],
        )
        for j in range(k)
    ]
