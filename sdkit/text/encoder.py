"""CLIP text encoder: ``Tokens`` -> ``TextConditioning`` (per-token embeddings, and pooled for SDXL).

Which hidden layer each family uses (matching diffusers' ``encode_prompt``, checked in the tests):

* SD1 (``CLIPTextModel``, ViT-L): ``layer="last"``, the final layer after ``final_layer_norm``
  (``last_hidden_state``). ``layer=k`` is diffusers' ``clip_skip=k``: ``hidden_states[-(k + 1)]``, then
  ``final_layer_norm`` (A1111's "CLIP skip" is ``k + 1``).
* SD2 (OpenCLIP ViT-H): the original model reads the penultimate layer and normalises it; diffusers' SD2
  text encoder folders store the model with the last layer removed (23 layers), so on a loaded SD2 model
  ``layer="last"`` is right.
* SDXL: both encoders use ``layer="penultimate"``: ``hidden_states[-2]`` *without* the final layer norm;
  the pooled embedding is the second encoder's projected EOS token (``text_embeds``). Diffusers' SDXL
  ``clip_skip=c`` is ``layer=c + 1, final_layer_norm=False``.

A1111's "Clip skip" (``CLIP_stop_at_last_layers``, the ``clip_skip`` argument of ``__call__``; 1 = off):
``clip_skip=k >= 2`` reads ``hidden_states[-k]`` and applies ``final_layer_norm``, so A1111's k is diffusers'
``clip_skip=k - 1`` (``layer=k - 1``). A1111 applies it to SD1's CLIP only: its SD2 (OpenCLIP) encoder ignores
it, and SDXL's encoders ignore it unless the "Clip skip SDXL" option (``sdxl_clip_l_skip``, off by default)
is set; ``PromptEncoder`` follows the defaults (see there).

Each 77-token chunk is encoded on its own and the chunks are concatenated along the tokens, so the result
is ``[1, chunks * 77, d]``; the pooled embedding comes from the first chunk (as in A1111).

Weights (A1111's "original" emphasis): per chunk, ``z = z * w[..., None]`` and then ``z *= mean_before /
mean_after``, the means taken over the whole ``[77, d]`` chunk. Scaling a token's vector and restoring the
overall mean makes ``(cat:1.5)`` louder relative to the other tokens without changing the tensor's overall
level. ``restore_mean=False`` gives plain multiplication ("No norm" in A1111).
"""

from __future__ import annotations

import numbers
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit.text.tokenizer import attention_mask
from sdkit.types import TextConditioning, Tokens

Layer = Literal["last", "penultimate"] | int


def apply_weights(z: Float[Tensor, "c n d"], weights: Float[Tensor, "c n"], restore_mean: bool = True) -> Tensor:
    """Multiply each token's embedding by its weight; then rescale each chunk to its original mean."""
    if bool((weights == 1).all()):
        return z  # nothing weighted: leave the encoder output bit-identical
    z32 = z.float()
    w = weights.to(device=z.device, dtype=torch.float32)[..., None]  # [c, n, 1]
    before = z32.mean(dim=(1, 2), keepdim=True)  # [c, 1, 1]
    weighted = z32 * w
    if restore_mean:  # a weighted mean of exactly 0 (A1111: a division by zero, inf) keeps the plain product
        after = weighted.mean(dim=(1, 2), keepdim=True)
        weighted = weighted * torch.where(after == 0, torch.ones_like(after), before / after)
    return weighted.to(z.dtype)


class ClipTextEncoder:
    """A transformers ``CLIPTextModel`` / ``CLIPTextModelWithProjection`` as an sdkit ``TextEncoder``.

    ``layer``: ``"last"`` | ``"penultimate"`` | ``int`` (diffusers' clip_skip, see the module doc).
    ``final_layer_norm``: apply the model's final LayerNorm to the chosen layer; default: yes for
    ``"last"`` and ints, no for ``"penultimate"`` (SDXL).
    ``use_attention_mask``: pass a padding mask to the model; default: the model config's
    ``use_attention_mask`` flag (diffusers' rule; SD checkpoints do not set it, so no mask).
    """

    def __init__(
        self,
        text_model: Any,
        layer: Layer = "last",
        *,
        final_layer_norm: bool | None = None,
        use_attention_mask: bool | None = None,
        restore_mean: bool = True,
    ) -> None:
        if not (layer in ("last", "penultimate") or (isinstance(layer, int) and layer >= 0)):
            raise ValueError(f"layer must be 'last', 'penultimate' or a clip_skip >= 0, got {layer!r}")
        self.model = text_model
        self.layer = layer
        self.final_layer_norm = layer != "penultimate" if final_layer_norm is None else final_layer_norm
        if layer == "last" and not self.final_layer_norm:
            raise ValueError("layer='last' is always normalised; use layer=0, final_layer_norm=False for the raw one")
        config = text_model.config
        self.use_attention_mask = (
            bool(getattr(config, "use_attention_mask", False)) if use_attention_mask is None else use_attention_mask
        )
        self.restore_mean = restore_mean
        # CLIPTextModel is the transformer itself (transformers 5); 4.x and WithProjection wrap .text_model
        inner = getattr(text_model, "text_model", text_model)
        self._norm = inner.final_layer_norm
        self.has_projection = hasattr(text_model, "text_projection")
        self.dim = int(config.hidden_size)

    def __repr__(self) -> str:
        name = type(self.model).__name__
        layers = self.model.config.num_hidden_layers
        return f"ClipTextEncoder({name}, {layers} layers, d={self.dim}, layer={self.layer!r})"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def check_clip_skip(self, clip_skip: int) -> int:
        """A1111's clip skip: an integer from 1 (the last layer) to the number of layers."""
        layers = int(self.model.config.num_hidden_layers)
        if isinstance(clip_skip, bool) or not isinstance(clip_skip, numbers.Integral) or not 1 <= clip_skip <= layers:
            raise ValueError(f"clip_skip must be an integer in [1, {layers}] for this text encoder, got {clip_skip!r}")
        return int(clip_skip)

    @torch.no_grad()
    def hidden(
        self, ids: Tensor, mask: Tensor | None = None, *, clip_skip: int = 1
    ) -> tuple[Float[Tensor, "c n d"], Float[Tensor, "c p"] | None]:
        """Raw per-chunk embeddings of the chosen layer ``[c, n, d]`` and the projected pooled ``[c, p]``
        (None without a projection), before any weighting. ``clip_skip > 1`` (A1111's) overrides ``layer``."""
        layer, norm = (self.layer, self.final_layer_norm) if clip_skip == 1 else (clip_skip - 1, True)
        out = self.model(
            ids.to(self.device),
            attention_mask=None if mask is None else mask.to(self.device),
            output_hidden_states=layer != "last",
        )
        if layer == "last":
            z = out.last_hidden_state  # already after final_layer_norm
        else:
            skip = 1 if layer == "penultimate" else int(layer)
            z = out.hidden_states[-(skip + 1)]  # hidden_states[0] is the embedding layer, [-1] the last block
            if norm:
                z = self._norm(z)
        pooled = out.text_embeds if self.has_projection else None
        return z, pooled

    def __call__(self, tokens: Tokens, *, clip_skip: int = 1) -> TextConditioning:
        """``Tokens`` ``[c, 77]`` -> embeds ``[1, c * 77, d]``, pooled ``[1, p]`` (first chunk) or None.
        ``clip_skip``: A1111's (1 = this encoder's ``layer``; ``k >= 2``: ``hidden_states[-k]``, normalised)."""
        mask = attention_mask(tokens) if self.use_attention_mask else None
        z, pooled = self.hidden(tokens.ids, mask, clip_skip=self.check_clip_skip(clip_skip))
        z = apply_weights(z, tokens.weights, self.restore_mean)
        embeds = z.reshape(1, -1, z.shape[-1])
        return TextConditioning(embeds, None if pooled is None else pooled[:1])
