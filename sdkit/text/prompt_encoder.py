"""A model family's text side in one object: its tokenizers and encoders -> ``TextConditioning``.

SD1 and SD2 have one tokenizer and one encoder. SDXL has two of each: the per-token embeddings of both are
concatenated along the features (768 + 1280 = 2048) and the pooled embedding comes from the second.
Prompt and negative prompt are padded to the same number of chunks so that CFG can batch them.

``clip_skip`` is A1111's "Clip skip" (1 = off, 2 = the penultimate layer, normalised; see ``encoder``). As in
A1111 (default settings) it changes SD1's CLIP (and the embedded model's) only: SD2's OpenCLIP and SDXL's
encoders already read the penultimate layer and ignore it (``clip_skip_applies``).

Encodings are cached per session (an LRU keyed by prompt text, chunk count and clip skip), so re-running a cell with
the same prompt does not run the encoder again. Call ``clear_cache()`` after changing the encoders' weights
(e.g. loading a LoRA). Cached results are shared: do not modify their tensors in place.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from sdkit.text.encoder import ClipTextEncoder, Layer
from sdkit.text.prompt_syntax import prompt_schedule
from sdkit.text.tokenizer import ClipTokenizer, pad_chunks
from sdkit.types import TextConditioning, Tokens


class PromptEncoder:
    """``prompt -> TextConditioning`` for one model family (``"sd1"``, ``"sd2"``, ``"sdxl"``, ...).

    ``zero_empty_negative``: an empty negative prompt gives all-zero embeddings and pooled instead of the
    encoding of ``""`` (diffusers' SDXL ``force_zeros_for_empty_prompt``).
    """

    def __init__(
        self,
        family: str,
        tokenizers: list[ClipTokenizer],
        encoders: list[ClipTextEncoder],
        *,
        zero_empty_negative: bool = False,
        cache_size: int = 32,
    ) -> None:
        if not tokenizers or len(tokenizers) != len(encoders):
            raise ValueError(f"need one tokenizer per encoder, got {len(tokenizers)} and {len(encoders)}")
        for k, (tok, enc) in enumerate(zip(tokenizers, encoders, strict=True)):
            rows = _embedding_rows(enc.model)
            ids = (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size - 1)
            if rows is not None and max(ids) >= rows:  # else: IndexError deep inside the first encode
                raise ValueError(
                    f"tokenizer{'_2' if k else ''}: its ids reach {max(ids)} (vocabulary {tok.vocab_size}, special "
                    f"tokens {ids[:3]}) but text_encoder{'_2' if k else ''} embeds only {rows} tokens; the two do "
                    "not belong together"
                )
        self.family = family
        self.tokenizers = list(tokenizers)
        self.encoders = list(encoders)
        self.zero_empty_negative = zero_empty_negative
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int, int], TextConditioning] = OrderedDict()

    @classmethod
    def for_family(
        cls,
        family: str,
        tokenizers: list[Any],
        text_models: list[Any],
        *,
        clip_skip: int | None = None,
        zero_empty_negative: bool = False,
    ) -> PromptEncoder:
        """Build from a model folder's parts (HF tokenizers or ``ClipTokenizer``s, transformers text models)
        with the family's layer convention; ``clip_skip`` here has diffusers' meaning and sets the encoders'
        layer (None = the default; diffusers' ``c`` is A1111's ``c + 1``). ``encode(..., clip_skip=)`` takes
        A1111's per call."""
        toks = [t if isinstance(t, ClipTokenizer) else ClipTokenizer.from_hf(t, family) for t in tokenizers]
        if family == "sdxl":
            layer: Layer = "penultimate" if clip_skip is None else clip_skip + 1
            encs = [ClipTextEncoder(m, layer, final_layer_norm=False) for m in text_models]
        else:
            encs = [ClipTextEncoder(m, "last" if clip_skip is None else clip_skip) for m in text_models]
        return cls(family, toks, encs, zero_empty_negative=zero_empty_negative)

    def __repr__(self) -> str:
        return f"PromptEncoder({self.family!r}, encoders={self.encoders}, cached={len(self._cache)})"

    def tokenize(self, prompt: str) -> Tokens:
        """The first tokenizer's ``Tokens`` (all of a family's tokenizers split a prompt the same way)."""
        return self.tokenizers[0](prompt)

    def chunks(self, prompt: str) -> int:
        """How many 77-token chunks ``prompt`` needs."""
        return max(t(prompt).chunks for t in self.tokenizers)

    @property
    def clip_skip_applies(self) -> bool:
        """Whether ``clip_skip`` changes this family's encodings (A1111: SD1's CLIP only, not SD2 or SDXL)."""
        return self.family not in ("sd2", "sdxl")

    def _clip_skip(self, clip_skip: int) -> int:
        """The clip skip the encoders run with (validated; 1 where the family ignores it)."""
        for enc in self.encoders:
            enc.check_clip_skip(clip_skip)
        return int(clip_skip) if self.clip_skip_applies else 1

    def encode(self, prompt: str, chunks: int | None = None, *, clip_skip: int = 1) -> TextConditioning:
        """``prompt`` -> embeds ``[1, chunks * 77, d]`` (and pooled ``[1, p]`` for SDXL), padded with empty
        chunks up to ``chunks`` when given; ``clip_skip``: A1111's (see the module doc)."""
        skip = self._clip_skip(clip_skip)
        tokens = [t(prompt) for t in self.tokenizers]
        n = max([tk.chunks for tk in tokens] + [chunks or 1])
        key = (prompt, n, skip)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        parts = [enc(pad_chunks(tk, n), clip_skip=skip) for tk, enc in zip(tokens, self.encoders, strict=True)]
        pooled = [p.pooled for p in parts if p.pooled is not None]
        cond = TextConditioning(
            torch.cat([p.embeds for p in parts], dim=-1),  # SDXL: [1, t, 768] + [1, t, 1280] -> [1, t, 2048]
            pooled[-1] if pooled else None,  # the projected one: SDXL text_encoder_2 (encoder 1 has none)
        )
        self._cache[key] = cond
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return cond

    def encode_pair(
        self, prompt: str, negative_prompt: str = "", *, clip_skip: int = 1, chunks: int | None = None
    ) -> tuple[TextConditioning, TextConditioning]:
        """``(cond, uncond)`` with the same number of chunks (at least ``chunks``), ready for
        ``TextConditioning.cat``."""
        n = max(self.chunks(prompt), self.chunks(negative_prompt), chunks or 1)
        cond = self.encode(prompt, n, clip_skip=clip_skip)
        if self.zero_empty_negative and negative_prompt == "":
            pooled = None if cond.pooled is None else torch.zeros_like(cond.pooled)
            return cond, TextConditioning(torch.zeros_like(cond.embeds), pooled)
        return cond, self.encode(negative_prompt, n, clip_skip=clip_skip)

    def encode_schedule(
        self, prompt: str, steps: int, chunks: int | None = None, *, clip_skip: int = 1
    ) -> list[tuple[int, TextConditioning]]:
        """Prompt editing (``[a:b:0.5]``): ``[(end_step, cond), ...]``, every entry with the same chunk
        count; pick the entry for a step with ``prompt_syntax.schedule_at``."""
        schedule = prompt_schedule(prompt, steps)
        n = max([self.chunks(text) for _, text in schedule] + [chunks or 1])
        return [(end, self.encode(text, n, clip_skip=clip_skip)) for end, text in schedule]

    @property
    def comma_backtrack(self) -> int:
        """``ClipTokenizer.comma_backtrack`` of this family's tokenizers (0: split at exactly 75 tokens; 20:
        A1111's default, split long prompts after a comma)."""
        return self.tokenizers[0].comma_backtrack

    @comma_backtrack.setter
    def comma_backtrack(self, tokens: int) -> None:
        self.tokenizers = [t.with_comma_backtrack(tokens) for t in self.tokenizers]
        self.clear_cache()  # cached encodings were chunked the old way

    def clear_cache(self) -> None:
        self._cache.clear()


def _embedding_rows(model: Any) -> int | None:
    """How many token ids a transformers text model embeds (None when it does not say)."""
    embeddings = getattr(model, "get_input_embeddings", lambda: None)()
    return getattr(embeddings, "num_embeddings", None)
