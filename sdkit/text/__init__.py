"""Text conditioning: prompt -> tokens -> embeddings (CLIP tokenizers and text encoders of SD1, SD2, SDXL).

Read in this order: ``composable`` (``AND`` parts and their weights), ``prompt_syntax`` (weights, prompt
editing), ``tokenizer`` (``Tokens`` in 77-token chunks), ``encoder`` (one CLIP text model ->
``TextConditioning``), ``prompt_encoder`` (a family's tokenizers and encoders together, with caching). Importing
this package loads no model library.
"""

from __future__ import annotations

from sdkit.text.composable import Part, composable_parts
from sdkit.text.encoder import ClipTextEncoder
from sdkit.text.prompt_encoder import PromptEncoder
from sdkit.text.prompt_syntax import Span, parse_weights, prompt_schedule, schedule_at
from sdkit.text.tokenizer import (
    ClipTokenizer,
    attention_mask,
    clip_tokenizer,
    clip_tokenizers,
    pad_chunks,
    tokens_table,
)

__all__ = [
    "ClipTextEncoder",
    "ClipTokenizer",
    "Part",
    "PromptEncoder",
    "Span",
    "attention_mask",
    "clip_tokenizer",
    "clip_tokenizers",
    "composable_parts",
    "pad_chunks",
    "parse_weights",
    "prompt_schedule",
    "schedule_at",
    "tokens_table",
]
