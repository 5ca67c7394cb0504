"""The VAE: the only place that converts between pixels and latents, and the only owner of the latent scale.

``encode``: pixels in [-1, 1] -> posterior mean (or a sample) -> ``(z - shift) * scale`` in the model's space.
``decode``: the inverse. A decode that produces non-finite values in half precision (the SDXL VAE's known
fp16 overflow) is retried in float32, and a decode that runs out of memory is retried with diffusers' tiled
decoding; either retry is reported through ``last_decode_note``.
"""

from __future__ import annotations

from typing import Any

import torch

from sdkit.image import Image
from sdkit.latents import SD_RGB_FACTORS, SDXL_RGB_BIAS, SDXL_RGB_FACTORS, Latents, LatentSpace, checked_rgb_factors
from sdkit.quiet import to_device

# Preview factors fitted for one VAE's weights travel in its config.json (the embedded model's, written by
# ``python -m sdkit.models.shapes.rgb_factors``); diffusers keeps "_" keys in ``model.config`` and ignores them.
RGB_FACTORS_KEY, RGB_BIAS_KEY = "_sdkit_latent_rgb_factors", "_sdkit_latent_rgb_bias"


def latent_space_from_config(config: Any, family: str) -> LatentSpace:
    """Read a diffusers ``AutoencoderKL`` config into a ``LatentSpace``; preview factors from the config when it
    carries fitted ones, else by family."""
    factor = 2 ** (len(config.block_out_channels) - 1)
    shift = getattr(config, "shift_factor", None) or 0.0
    rgb, bias = None, (0.0, 0.0, 0.0)
    if getattr(config, RGB_FACTORS_KEY, None) is not None:
        rgb, bias = checked_rgb_factors(
            getattr(config, RGB_FACTORS_KEY), getattr(config, RGB_BIAS_KEY, bias), int(config.latent_channels),
            f"vae config {RGB_FACTORS_KEY}", f"vae config {RGB_BIAS_KEY}",
        )  # fmt: skip
    elif config.latent_channels == 4 and family in ("sd1", "sd2"):
        rgb = SD_RGB_FACTORS
    elif config.latent_channels == 4 and family == "sdxl":
        rgb, bias = SDXL_RGB_FACTORS, SDXL_RGB_BIAS
    # SD1 and SD2 share one VAE and so one latent space; SDXL's VAE is another space.
    space_family = "sd" if family in ("sd1", "sd2") else family
    return LatentSpace(
        family=space_family,
        channels=int(config.latent_channels),
        factor=factor,
        scale=float(config.scaling_factor),
        shift=float(shift),
        rgb_factors=rgb,
        rgb_bias=bias,
    )


class VAE:
    """Encoder/decoder between ``Image`` and ``Latents`` over a diffusers ``AutoencoderKL``."""

    def __init__(self, model: Any, space: LatentSpace) -> None:  # a diffusers AutoencoderKL
        self.model = model
        self.space = space
        self.last_decode_note = ""

    @classmethod
    def from_diffusers(cls, model: Any, family: str) -> VAE:
        return cls(model, latent_space_from_config(model.config, family))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def encode(self, image: Image, *, sample: bool = False, generator: torch.Generator | None = None) -> Latents:
        """Posterior mean by default (deterministic); ``sample=True`` draws from the posterior instead."""
        if not isinstance(image, Image):
            raise TypeError(f"VAE.encode expects an sdkit Image, got {type(image).__name__}")
        w, h = image.size
        if w % self.space.factor or h % self.space.factor:
            raise ValueError(f"image size {w}x{h} must be a multiple of {self.space.factor} for this VAE")
        x = image.to_signed().to(device=self.device, dtype=self.dtype)
        dist = self.model.encode(x).latent_dist
        if sample:
            noise = torch.randn(dist.mean.shape, generator=generator, dtype=torch.float32).to(dist.mean)
            z = dist.mean + dist.std * noise
        else:
            z = dist.mean
        return Latents((z.float() - self.space.shift) * self.space.scale, self.space)

    @torch.no_grad()
    def decode(self, latents: Latents) -> Image:
        if not isinstance(latents, Latents):
            raise TypeError(f"VAE.decode expects sdkit Latents, got {type(latents).__name__}")
        self.space.check(latents.space, "VAE.decode")
        z = latents.tensor / self.space.scale + self.space.shift
        self.last_decode_note = ""
        x = self._decode_or_tile(z)
        if not torch.isfinite(x).all() and self.dtype in (torch.float16, torch.bfloat16):
            note = f"VAE decode in {self.dtype} gave non-finite values; retried in float32"
            self.last_decode_note = "; ".join(n for n in (self.last_decode_note, note) if n)
            x = self._decode_float32(z)
        if not torch.isfinite(x).all():
            raise FloatingPointError("VAE decode produced non-finite pixels (NaN/inf) from finite latents")
        return Image.from_signed(x.float())

    def _decode_or_tile(self, z: torch.Tensor) -> torch.Tensor:
        """Decode; on out-of-memory, retry once with tiled decoding (restored afterwards) and say so."""
        try:
            return self.model.decode(z.to(device=self.device, dtype=self.dtype)).sample
        except RuntimeError as e:  # torch.OutOfMemoryError (CUDA, MPS) is a RuntimeError
            if not (isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()):
                raise
            if not hasattr(self.model, "enable_tiling") or getattr(self.model, "use_tiling", False):
                raise
            reason = type(e).__name__
        # retried outside the except block, so the failed attempt's frames (and their tensors) are freed first
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.last_decode_note = f"VAE decode ran out of memory ({reason}); retried with tiled decoding"
        self.model.enable_tiling()
        try:
            return self.model.decode(z.to(device=self.device, dtype=self.dtype)).sample
        finally:
            self.model.disable_tiling()

    def _decode_float32(self, z: torch.Tensor) -> torch.Tensor:
        original = self.dtype
        to_device(self.model, dtype=torch.float32)
        try:
            return self.model.decode(z.to(device=self.device, dtype=torch.float32)).sample
        finally:
            to_device(self.model, dtype=original)
