"""sdkit: a Jupyter-first, modular Stable Diffusion toolkit.

Importing sdkit does no work: heavy modules (diffusers, transformers) load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from sdkit.kit import Generation, Kit

__all__ = ["load", "load_vae", "Kit", "Generation", "__version__"]


def load(source: str, device: Any = None, dtype: Any = None, **options: Any) -> Kit:
    """Load a model: ``"shapes"`` (the embedded model), a diffusers folder, a single ``.safetensors``/``.ckpt``
    file, or a hub id. See ``sdkit.loading.load``."""
    from sdkit.loading import load as _load

    return _load(source, device=device, dtype=dtype, **options)


def load_vae(source: str, family: str = "sd1", device: Any = None, dtype: Any = None) -> Any:
    """Load a VAE alone (a diffusers ``vae`` folder, a single file or a hub id), e.g. to swap it into a kit:
    ``kit.vae = sdkit.load_vae(...)``. See ``sdkit.loading.load_vae``."""
    from sdkit.loading import load_vae as _load_vae

    return _load_vae(source, family=family, device=device, dtype=dtype)


def __getattr__(name: str) -> Any:
    if name in ("Kit", "Generation"):
        from sdkit import kit

        return getattr(kit, name)
    raise AttributeError(f"module 'sdkit' has no attribute {name!r}")
