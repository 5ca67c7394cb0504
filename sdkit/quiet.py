"""Library chatter that sdkit's own calls cause and a user cannot act on, silenced around those calls only.

Two sources, both seen in the notebooks:

- transformers (>= 5) draws a "Loading weights 0/68" progress bar in every ``from_pretrained``, so loading even
  the embedded model printed one (``sdkit.loading`` loads inside ``quiet_libraries()``);
- diffusers' ``ModelMixin.to`` warns "There are modules in UNet2DConditionModel that should be kept in float32:
  []" on every call with a dtype, also when the model keeps no module in float32 (diffusers 0.42 tests
  ``fp32_modules is not None`` on a list it just defaulted to ``[]``). Stable Diffusion's UNet, VAE and ControlNet
  keep none, so ``load_vae`` and every ControlNet moved to the kit's dtype printed it. ``to_device`` makes such
  casts quietly, and only when the list is empty: a model that does keep modules in float32 still warns.

Nothing here changes global state for good: each library's verbosity and progress-bar switches are put back as
they were when the block exits, error or not.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Inside the block, diffusers and transformers log errors only and draw no progress bars; afterwards their
    verbosity and progress-bar switches (and huggingface_hub's, which transformers' switch drives) are restored."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    hub_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")  # the module (the package exports a class)

    libraries = (diffusers_logging, transformers_logging)
    saved = [(lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libraries]
    hub_states = dict(hub_tqdm.progress_bar_states)  # transformers' switch also flips the hub's bars
    try:
        for lib in libraries:
            lib.set_verbosity_error()
            lib.disable_progress_bar()
        yield
    finally:
        for lib, (verbosity, bars) in zip(libraries, saved, strict=True):
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()
        hub_tqdm.progress_bar_states.clear()
        hub_tqdm.progress_bar_states.update(hub_states)


def to_device(module: Any, device: Any = None, dtype: Any = None) -> Any:
    """``module.to(device=device, dtype=dtype)`` (either may be None), without diffusers' float32 warning when
    the model keeps no module in float32 (see the module doc). Returns the module."""
    if dtype is None:
        return module.to(device=device)
    if getattr(module, "_keep_in_fp32_modules", None):  # the warning is real: the cast overrides those modules
        return module.to(device=device, dtype=dtype)
    with quiet_libraries():
        return module.to(device=device, dtype=dtype)
