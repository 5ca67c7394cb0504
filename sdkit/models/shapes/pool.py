"""A pool of random scenes of the shapes world, packed as tensors on the training device, with their token ids.

A training batch is an index draw into the pool. Once the VAE is frozen, ``cache_latents`` encodes every scene once;
the diffusion stages then draw their latents from the cached posterior (mean, std) instead of rendering and encoding
each batch again.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor

from sdkit.models.shapes import world
from sdkit.models.shapes.captions import token_ids


class ScenePool:
    def __init__(self, n: int, seed: int, device: str | torch.device, person_fraction: float = 0.15) -> None:
        scenes = world.sample_scenes(n, seed, person_fraction=person_fraction)
        self.packed = world.pack(scenes, device)
        self.ids = token_ids([world.caption(s) for s in scenes]).to(device)
        self.n = n
        self.posterior: tuple[Tensor, Tensor] | None = None

    def batch(self, idx: Tensor) -> dict[str, Tensor]:
        return {k: v[idx] for k, v in self.packed.items()}

    @torch.no_grad()
    def cache_latents(
        self, vae: Any, chunk: int, autocast: contextlib.AbstractContextManager[Any], size: int = world.SIZE
    ) -> None:
        means, stds = [], []
        for start in range(0, self.n, chunk):
            idx = torch.arange(start, min(start + chunk, self.n), device=self.ids.device)
            with autocast:
                post = vae.encode(world.render_packed(self.batch(idx), size) * 2 - 1).latent_dist
            means.append(post.mean.float())
            stds.append(post.std.float())
        self.posterior = (torch.cat(means), torch.cat(stds))
