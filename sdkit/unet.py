"""The NoisePredictor over a diffusers ``UNet2DConditionModel``: ``(x_in, timestep, cond) -> eps or v``.

It translates sdkit's ``TextConditioning`` into the UNet's keyword arguments (SDXL's pooled embedding and
``time_ids`` micro-conditioning, ControlNet residuals) and checks the channel count before the call.
"""

from __future__ import annotations

from typing import Any

from jaxtyping import Float
from torch import Tensor

from sdkit.types import TextConditioning


class UNetPredictor:
    """Wraps a diffusers UNet; ``in_channels`` (4, or 9 for inpainting, 5 for SD2-depth) is checked per call."""

    def __init__(self, unet: Any) -> None:  # a diffusers UNet2DConditionModel
        self.unet = unet

    @property
    def in_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def cross_attention_dim(self) -> int:
        dim = self.unet.config.cross_attention_dim
        return int(dim[0] if isinstance(dim, (list, tuple)) else dim)

    def __call__(
        self,
        x_in: Float[Tensor, "b c h w"],
        timestep: Float[Tensor, " b"],
        cond: TextConditioning,
        down_residuals: list[Tensor] | None = None,
        mid_residual: Tensor | None = None,
        **extra: Any,
    ) -> Float[Tensor, "b c h w"]:
        if x_in.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet expects {self.in_channels} input channels, got a tensor with {x_in.shape[1]} "
                f"(shape {tuple(x_in.shape)})"
            )
        if cond.embeds.shape[-1] != self.cross_attention_dim:
            raise ValueError(
                f"UNet cross-attention expects text embeddings of width {self.cross_attention_dim}, "
                f"got {cond.embeds.shape[-1]} (text encoder of another model family?)"
            )
        if cond.batch != x_in.shape[0]:
            cond = cond.repeat(x_in.shape[0] // cond.batch) if x_in.shape[0] % cond.batch == 0 else cond
        added = None
        if cond.pooled is not None and "time_ids" in cond.extra:
            added = {
                "text_embeds": cond.pooled.to(x_in.dtype),
                "time_ids": cond.extra["time_ids"].to(x_in.dtype),
            }
        return self.unet(
            x_in,
            timestep,
            encoder_hidden_states=cond.embeds.to(x_in.dtype),
            added_cond_kwargs=added,
            down_block_additional_residuals=down_residuals,
            mid_block_additional_residual=mid_residual,
            return_dict=False,
        )[0]
