"""The exact CLIP BPE vocabulary, built offline from the file that the open-clip-torch package ships.

The file ``bpe_simple_vocab_16e6.txt.gz`` lists CLIP's BPE merges; the token ids follow from it by CLIP's
published construction (256 byte symbols, the same with ``</w>``, one token per merge, then
``<|startoftext|>`` = 49406 and ``<|endoftext|>`` = 49407), which gives the ids of every SD tokenizer.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from typing import Any

NUM_MERGES = 49152 - 256 - 2  # CLIP uses the first 48894 merges of the file
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Padding token per family: SD1's tokenizer pads with <|endoftext|> (49407); SD2/SDXL's OpenCLIP one with "!" (0).
PAD_TOKENS = {"sd1": EOS, "sd2": "!", "sdxl": EOS, "sdxl_g": "!", "shapes": EOS}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode map (a published part of the BPE format)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _vocabulary_file() -> str:
    """The BPE file inside the installed open_clip package, found without importing open_clip (seconds)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the CLIP vocabulary comes with the open-clip-torch package: pip install open-clip-torch")
    return os.path.join(list(spec.submodule_search_locations)[0], "bpe_simple_vocab_16e6.txt.gz")


@lru_cache(maxsize=1)
def clip_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """``(token -> id, merges)`` of the CLIP tokenizer, 49408 tokens."""
    with gzip.open(_vocabulary_file(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges  # type: ignore[return-value]


def hf_clip_tokenizer(pad_token: str = EOS, model_max_length: int = 77) -> Any:
    """A transformers ``CLIPTokenizer`` with the exact SD vocabulary, built without any download.

    Its vocabulary and merges are CLIP's; its text clean-up is transformers' (NFC, no ftfy, no HTML entities), and
    with ``pad_token="!"`` it splits every ``!`` out as the pad token, as diffusers' SD2 tokenizer does.
    ``sdkit.text.ClipTokenizer`` wraps it with CLIP's own clean-up and words, for the original ids.
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocabulary()
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=list(merges),  # type: ignore[arg-type]
        bos_token=BOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=pad_token,
        model_max_length=model_max_length,
    )


def clean_piece(piece: str) -> str:
    """A vocabulary string made readable: ``'cat</w>'`` -> ``'cat'``, byte symbols back to text where they
    form whole UTF-8 characters (``'ðŁĲ±</w>'`` -> ``'🐱'``); special tokens stay as they are."""
    text = piece[: -len("</w>")] if piece.endswith("</w>") else piece
    if text.startswith("<|"):
        return text
    decoder = _byte_decoder()
    try:
        return bytes(decoder[ch] for ch in text).decode("utf-8") if all(ch in decoder for ch in text) else text
    except UnicodeDecodeError:  # part of a multi-byte character: show the byte symbols
        return text


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    return {ch: b for b, ch in _bytes_to_unicode().items()}
