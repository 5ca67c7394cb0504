"""Latents -> RGB, three ways, from cheapest to truest:

- ``"linear"``: a 4x3 matrix per pixel (``LatentSpace.rgb_factors``, via ``Latents.preview``), O(latent) math
  at latent resolution, good enough to watch a sampler step by step (SD/SDXL: published factors; the embedded
  model: factors fitted to its VAE, ``sdkit.models.shapes.rgb_factors``; none known: false colour);
- ``TinyDecoder``: the TAESD architecture (Ollin Boer Bohan's "Tiny AutoEncoder for Stable Diffusion",
  github.com/madebyollin/taesd), a ~1M-parameter decoder that approximates the VAE at full resolution; its
  weights are not bundled: load a published ``taesd_decoder`` state dict with
  ``TinyDecoder.from_state_dict(sdkit.loading.read_state_dict(path))``;
- ``"vae"``: the model's own VAE decoder (``kit.vae``), the real thing.

``preview(latents, method)`` picks one and always returns an ``sdkit.image.Image``; ``channels(latents)``
shows the latent channels side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from sdkit.image import Image
from sdkit.latents import Latents


# ------------------------------------------------------------------------------------------- TAESD
class _Clamp(nn.Module):
    """Soft clamp of the input latents to about [-3, 3]: ``tanh(x / 3) * 3`` (TAESD's first layer)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class _Block(nn.Module):
    """TAESD's residual block: three 3x3 convs with ReLUs between them, plus the input, then ReLU."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(n_in, n_out, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(n_out, n_out, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(n_out, n_out, 3, padding=1),
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


class TinyDecoder(nn.Sequential):
    """The TAESD decoder: model-space latents ``[b, c, h, w]`` -> RGB ``[b, 3, 8h, 8w]`` in about [0, 1].

    Layout (as published): soft clamp, conv c->64, ReLU, then three times (3 blocks, 2x nearest upsample,
    bias-free conv), then one block and a conv 64->3. Module indices match the published
    ``taesd_decoder`` state dicts (``"1.weight"``, ``"3.conv.0.weight"``, ...); diffusers' ``AutoencoderTiny``
    keys (``"decoder.layers.N..."``, one index lower: no clamp module) are accepted too.
    TAESD takes latents already multiplied by the VAE scale, i.e. exactly what the UNet works on.
    """

    def __init__(self, latent_channels: int = 4, width: int = 64, space: Any = None) -> None:
        layers: list[nn.Module] = [_Clamp(), nn.Conv2d(latent_channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(3):
            layers += [_Block(width, width) for _ in range(3)]
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, padding=1, bias=False)]
        layers += [_Block(width, width), nn.Conv2d(width, 3, 3, padding=1)]
        super().__init__(*layers)
        self.space = space  # the LatentSpace these weights were trained for, when known (checked on decode)

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], space: Any = None) -> TinyDecoder:
        """Build from a published TAESD decoder state dict or an ``AutoencoderTiny`` one (its encoder is ignored)."""
        if any(k.startswith("decoder.layers.") for k in state):  # diffusers AutoencoderTiny
            state = {
                f"{int(k.split('.')[2]) + 1}.{k.split('.', 3)[3]}": v
                for k, v in state.items()
                if k.startswith("decoder.layers.")
            }
        elif any(k.startswith("decoder.") for k in state):
            state = {k[len("decoder.") :]: v for k, v in state.items() if k.startswith("decoder.")}
        if "1.weight" not in state:
            raise ValueError(f"not a TAESD decoder state dict (no '1.weight'; keys like {sorted(state)[:3]})")
        channels, width = int(state["1.weight"].shape[1]), int(state["1.weight"].shape[0])
        decoder = cls(channels, width, space)
        decoder.load_state_dict(state)
        return decoder.eval().requires_grad_(False)

    @torch.no_grad()
    def decode(self, latents: Latents) -> Image:
        if self.space is not None:
            self.space.check(latents.space, "TinyDecoder.decode")
        p = next(self.parameters())
        rgb = self(latents.tensor.to(device=p.device, dtype=p.dtype))
        return Image(rgb.float().cpu().clamp(0, 1))


# ------------------------------------------------------------------------------------------- previews
def linear_rgb(latents: Latents, upscale: bool = False) -> Float[Tensor, "b 3 h w"]:
    """The linear preview in [0, 1]: at latent resolution, or nearest-upscaled to pixel size."""
    rgb = latents.preview()
    if upscale:
        rgb = F.interpolate(rgb, scale_factor=latents.space.factor, mode="nearest")
    return rgb


Method = str | Callable[[Latents], Image] | Any


def preview(latents: Latents, method: Method = "linear", *, vae: Any = None, upscale: bool = False) -> Image:
    """Latents as an ``Image``: ``method`` is ``"linear"``, ``"vae"`` (with ``vae=kit.vae``), a ``VAE``,
    a ``TinyDecoder``, or any callable ``Latents -> Image``. ``upscale`` (linear only) gives pixel size."""
    if not isinstance(latents, Latents):
        raise TypeError(f"preview expects sdkit Latents, got {type(latents).__name__}")
    if isinstance(method, str):
        if method == "linear":
            return Image(linear_rgb(latents, upscale))
        if method == "vae":
            if vae is None:
                raise ValueError('preview(method="vae") needs the VAE: preview(latents, "vae", vae=kit.vae)')
            method = vae
        else:
            raise ValueError(f'preview method must be "linear", "vae", a VAE or a decoder, got {method!r}')
    decode = getattr(method, "decode", None)
    if callable(decode):
        return decode(latents)
    if callable(method):
        return method(latents)
    raise TypeError(f"preview method must be a name, a VAE/TinyDecoder or a callable, got {type(method).__name__}")


def channels(latents: Latents, index: int = 0) -> Float[Tensor, "c h w"]:
    """Each latent channel of image ``index``, min-max normalised to [0, 1]: ``[c, h, w]`` (plot side by side)."""
    x = latents.tensor[index].detach().float().cpu()
    lo, hi = x.amin(dim=(1, 2), keepdim=True), x.amax(dim=(1, 2), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-6)


def channel_strip(latents: Latents, index: int = 0) -> Image:
    """The channels of image ``index`` as one grey strip ``[1, 3, h, c*w]`` (what ``Latents`` shows too)."""
    ch = channels(latents, index)
    strip = torch.cat(list(ch), dim=1)  # [h, c*w]
    return Image(strip.expand(3, -1, -1).unsqueeze(0).contiguous())
