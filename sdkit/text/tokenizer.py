"""CLIP tokenizer: prompt -> ``Tokens`` in 77-token chunks, with the exact ids of the real SD tokenizers.

A prompt is first split into weighted spans (``prompt_syntax.parse_weights``: ``(cat:1.3)``, ``BREAK``),
each span is BPE-tokenized, and the tokens are laid out in chunks of 75, each wrapped as
``BOS + 75 tokens + EOS + padding`` = 77 ids, which is what the text encoder sees at once. Longer prompts
get more chunks (encoded separately and concatenated, as in A1111); nothing is ever dropped.

Chunking convention: a chunk is full after 75 tokens, and ``BREAK`` always closes the current chunk (even
an empty one, as A1111 does). By default the split is at exactly 75 tokens. ``comma_backtrack = 20`` gives
A1111's default ("comma padding backtrack"): when a chunk is full and its last comma is at most that many
tokens back, the tokens after the comma move to the next chunk, so that a phrase is not cut in two
(``ClipTokenizer.with_comma_backtrack``, or ``kit.prompts.comma_backtrack = 20``).

Each span of text goes through the original CLIP tokenizer's steps, as A1111 tokenizes each span: the clean-up
(``clip_normalize``: ftfy, HTML entities, whitespace, lower case), the split into words (``clip_words``), then
the BPE merges (the ``tokenizers`` library, fast).

Padding differs by family: SD1's tokenizer pads with ``<|endoftext|>`` (49407), SD2's and SDXL's second
(OpenCLIP) tokenizer with ``!`` (id 0). The ids come from the real vocabulary, built offline
(``sdkit.text.vocabulary``); ``ClipTokenizer.from_hf`` wraps the tokenizer that a model folder brings.

``Tokens`` show themselves: ``eos_positions`` and the HTML table ``tokens_table`` live with the record in
``sdkit.types``, ``clean_piece`` (a vocabulary string as text) in ``sdkit.text.vocabulary``; all import from here too.
"""

from __future__ import annotations

import copy
import html
import json
import numbers
import re
from functools import lru_cache
from typing import Any

import torch

from sdkit.text.prompt_syntax import parse_weights
from sdkit.text.vocabulary import clean_piece as clean_piece
from sdkit.types import Tokens, eos_positions
from sdkit.types import tokens_table as tokens_table

CHUNK_TOKENS = 75  # prompt tokens per chunk; +BOS +EOS = CLIP's 77 positions

# Text that ftfy.fix_text and html.unescape return unchanged: printable ASCII without "&" (no entity, no
# mojibake, no control or escape character), plus the whitespace that the collapse below turns into " ".
_UNCHANGED_BY_FTFY = re.compile(r"[\t\n\r !-%'-~]*")
_WHITESPACE = re.compile(r"\s+")
# CLIP's pre-tokenizer pattern (OpenAI CLIP's simple_tokenizer.py, the same in every CLIP tokenizer.json): its
# special tokens, English contractions, a run of letters, a single digit, a run of anything else.
_CLIP_WORDS = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def clip_normalize(text: str) -> str:
    """Text as CLIP's tokenizer sees it, the clean-up of OpenAI CLIP's ``simple_tokenizer`` (and open_clip's):
    ``ftfy.fix_text`` (mojibake, ligatures ``ﬁ`` -> ``fi``, full-width ``ＡＢ１`` -> ``AB1``, curly quotes,
    control characters, lone surrogates -> U+FFFD), HTML entities unescaped twice (``&amp;amp;`` -> ``&``),
    whitespace runs -> one space, stripped, lower case.

    >>> clip_normalize("  Fish &amp;amp; “Chips”   ＸＬ ")
    'fish & "chips" xl'
    """
    if not _UNCHANGED_BY_FTFY.fullmatch(text):  # plain prompts skip ftfy, which is slow
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return _WHITESPACE.sub(" ", text).strip().lower()


def clip_words(text: str) -> list[str]:
    """CLIP's words of normalized text, the units that BPE splits further: ``"it's 4k"`` -> ``["it", "'s",
    "4", "k"]``.

    Python's ``regex`` module, as in the original: its Unicode tables (which letters exist) are newer than the
    ones compiled into the ``tokenizers`` library, and the original matches ignoring case.
    """
    return _word_pattern().findall(text)


@lru_cache(maxsize=1)
def _word_pattern() -> Any:
    import regex

    return regex.compile(_CLIP_WORDS, regex.IGNORECASE)


def _bpe_backend(backend: Any, specials: tuple[str, ...]) -> Any:
    """A copy of a ``tokenizers`` backend that only BPE-encodes words that ``clip_words`` made.

    Its normalizer and pre-tokenizer are dropped: their NFC is not CLIP's (in ``"<i>e&#769;"``, which ftfy
    leaves alone, CLIP's ``html.unescape`` makes ``e`` + a combining accent, two words). So are its added
    tokens other than ``specials`` (BOS, EOS): SD2's tokenizer adds its pad token ``"!"``, which would split
    every ``!`` out of the words (diffusers issue #4153). A copy also because the caller's tokenizer may have
    truncation/padding switched on, which would silently drop tokens.
    """
    from tokenizers import Tokenizer, pre_tokenizers

    config = json.loads(backend.to_str())
    config["added_tokens"] = [t for t in config.get("added_tokens") or [] if t["content"] in specials]
    config.update(normalizer=None, pre_tokenizer=None, truncation=None, padding=None)
    bpe = Tokenizer.from_str(json.dumps(config))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)  # bytes -> symbols
    return bpe


class ClipTokenizer:
    """Prompt -> ``Tokens``: ids ``[chunks, 77]``, per-token weights, token strings and word indices.

    ``pieces`` are the raw vocabulary strings (``'cat</w>'``: ``</w>`` ends a word; ``'photo'`` +
    ``'realistic</w>'`` is one word in two tokens). A *word* is one piece of CLIP's pre-tokenizer: a run of
    letters, a single digit, or a run of punctuation; ``words`` numbers them across the whole prompt.
    """

    def __init__(self, hf_tokenizer: Any, family: str = "custom") -> None:
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise TypeError(
                f"{type(hf_tokenizer).__name__} has no `backend_tokenizer`: pass a tokenizers-backed "
                "CLIPTokenizer (transformers >= 5) or a CLIPTokenizerFast"
            )
        # Our own copy, that only maps CLIP's words to BPE tokens (see ``_bpe_backend``).
        self._backend = _bpe_backend(backend, (str(hf_tokenizer.bos_token), str(hf_tokenizer.eos_token)))
        self.hf = hf_tokenizer
        self.family = family
        length = int(getattr(hf_tokenizer, "model_max_length", 77))
        self.length = length if length <= 4096 else 77  # unset model_max_length is a huge sentinel
        self.chunk_tokens = self.length - 2
        self.bos_id = int(hf_tokenizer.bos_token_id)
        self.eos_id = int(hf_tokenizer.eos_token_id)
        pad = hf_tokenizer.pad_token_id
        self.pad_id = self.eos_id if pad is None else int(pad)
        self.bos, self.eos, self.pad = (
            str(self._backend.id_to_token(i)) for i in (self.bos_id, self.eos_id, self.pad_id)
        )
        comma = self._backend.token_to_id(",</w>")
        self.comma_id = -1 if comma is None else int(comma)
        self._comma_backtrack = 0

    @property
    def vocab_size(self) -> int:
        """How many token ids the BPE vocabulary has (ids ``0 .. vocab_size - 1``)."""
        return int(self._backend.get_vocab_size())

    @property
    def comma_backtrack(self) -> int:
        """How far back (in tokens) a full chunk looks for a comma to split at; 0 = split at exactly 75 tokens,
        A1111's default is 20. Set it with ``with_comma_backtrack``."""
        return self._comma_backtrack

    def with_comma_backtrack(self, tokens: int) -> ClipTokenizer:
        """A copy of this tokenizer that splits full chunks after a comma up to ``tokens`` back (tokenizers are
        shared between kits, so they are never changed in place)."""
        if isinstance(tokens, bool) or not isinstance(tokens, numbers.Integral):
            raise TypeError(f"comma_backtrack must be an int in [0, {self.chunk_tokens}), got {tokens!r}")
        if not 0 <= tokens < self.chunk_tokens:
            raise ValueError(f"comma_backtrack must be an int in [0, {self.chunk_tokens}), got {tokens!r}")
        other = copy.copy(self)
        other._comma_backtrack = int(tokens)
        return other

    @classmethod
    def from_hf(cls, hf_tokenizer: Any, family: str = "custom") -> ClipTokenizer:
        """Wrap a transformers ``CLIPTokenizer`` (``CLIPTokenizer.from_pretrained(folder / "tokenizer")``)."""
        return cls(hf_tokenizer, family)

    def __repr__(self) -> str:
        return f"ClipTokenizer(family={self.family!r}, length={self.length}, pad={self.pad!r} ({self.pad_id}))"

    def encode_text(self, text: str) -> tuple[list[int], list[str], list[int]]:
        """Plain text (no weight syntax) -> ``(ids, pieces, word index per token)``, without BOS/EOS.

        The text goes through CLIP's own steps (``clip_normalize``, ``clip_words``), then BPE: the ids are those
        of the original tokenizer.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        clip_split = clip_words(clip_normalize(text))
        if not clip_split:
            return [], [], []
        enc = self._backend.encode(clip_split, is_pretokenized=True, add_special_tokens=False)
        words = [-1 if w is None else int(w) for w in enc.word_ids]
        return list(enc.ids), list(enc.tokens), words

    def __call__(self, prompt: str) -> Tokens:
        chunks: list[list[tuple[int, str, int, float]]] = []  # per chunk: (id, piece, word, weight)
        current: list[tuple[int, str, int, float]] = []
        first_word = 0  # word numbering runs across spans
        last_comma = -1  # position of the current chunk's last comma
        for span in parse_weights(prompt):
            if span.chunk_break:
                chunks.append(current)
                current, last_comma = [], -1
                continue
            ids, pieces, words = self.encode_text(span.text)
            for token_id, piece, word in zip(ids, pieces, words, strict=True):
                full = len(current) == self.chunk_tokens
                if token_id == self.comma_id:
                    last_comma = len(current)
                elif full and last_comma >= 0 and len(current) - last_comma <= self._comma_backtrack:
                    chunks.append(current[: last_comma + 1])  # split after the comma ...
                    current, last_comma = current[last_comma + 1 :], -1  # ... and carry the phrase over
                if len(current) == self.chunk_tokens:
                    chunks.append(current)
                    current, last_comma = [], -1
                current.append((token_id, piece, first_word + word, span.weight))
            first_word += max(words, default=-1) + 1
        if current or not chunks:
            chunks.append(current)
        return self._wrap(chunks, prompt)

    def _wrap(self, chunks: list[list[tuple[int, str, int, float]]], text: str) -> Tokens:
        """Each chunk -> BOS + tokens + EOS + padding (``self.length`` positions)."""
        ids, weights, pieces, words = [], [], [], []
        for chunk in chunks:
            pad = self.chunk_tokens - len(chunk)
            ids.append([self.bos_id, *(t[0] for t in chunk), self.eos_id] + [self.pad_id] * pad)
            pieces.append((self.bos, *(t[1] for t in chunk), self.eos) + (self.pad,) * pad)
            words.append((-1, *(t[2] for t in chunk), -1) + (-1,) * pad)
            weights.append([1.0, *(t[3] for t in chunk), 1.0] + [1.0] * pad)
        return Tokens(
            ids=torch.tensor(ids, dtype=torch.long),
            weights=torch.tensor(weights, dtype=torch.float32),
            pieces=tuple(pieces),
            words=tuple(words),
            text=text,
            pad_id=self.pad_id,
        )


@lru_cache(maxsize=8)
def clip_tokenizer(family: str = "sd1") -> ClipTokenizer:
    """The tokenizer of a model family, built offline with the exact SD vocabulary.

    ``"sd1"`` pads with ``<|endoftext|>`` (49407), ``"sd2"`` with ``"!"`` (0); for SDXL, ``"sdxl"`` is the
    first tokenizer (like SD1) and ``"sdxl_g"`` the second, OpenCLIP one (like SD2); see ``clip_tokenizers``.
    Instances are cached and shared: treat them as read-only.
    """
    from sdkit.text.vocabulary import PAD_TOKENS, hf_clip_tokenizer

    if family not in PAD_TOKENS:
        raise ValueError(f"unknown tokenizer family {family!r}; expected one of {sorted(PAD_TOKENS)}")
    return ClipTokenizer(hf_clip_tokenizer(pad_token=PAD_TOKENS[family]), family)


def clip_tokenizers(family: str) -> list[ClipTokenizer]:
    """All tokenizers of a family, in encoder order: two for SDXL, one otherwise."""
    return [clip_tokenizer("sdxl"), clip_tokenizer("sdxl_g")] if family == "sdxl" else [clip_tokenizer(family)]


# ------------------------------------------------------------------------------------------------ chunks
def attention_mask(tokens: Tokens) -> torch.Tensor:
    """``[chunks, n]`` mask: 1 for BOS, the prompt tokens and EOS, 0 for padding (as HF tokenizers do)."""
    positions = torch.arange(tokens.ids.shape[1])
    return (positions[None, :] <= torch.tensor(eos_positions(tokens))[:, None]).long()


def pad_chunks(tokens: Tokens, n: int) -> Tokens:
    """``tokens`` with empty chunks (BOS EOS pad ...) appended up to ``n`` chunks (unchanged if it has more).

    Used to give a prompt and its negative prompt the same length, so they can be batched for CFG.
    """
    missing = n - tokens.chunks
    if missing <= 0:
        return tokens
    eos_at = eos_positions(tokens)[0]
    row = tokens.ids[0]
    bos_id, eos_id = int(row[0]), int(row[eos_at])
    pad_piece = next(
        (
            p
            for ids, ps in zip(tokens.ids.tolist(), tokens.pieces, strict=True)
            for i, p in zip(ids, ps, strict=True)
            if i == tokens.pad_id
        ),
        None,
    )
    if pad_piece is None:  # every chunk is full: look the pad token up in the vocabulary
        from sdkit.text.vocabulary import clip_vocabulary

        pad_piece = {i: t for t, i in clip_vocabulary()[0].items()}.get(tokens.pad_id, "<pad>")
    n_pos = tokens.ids.shape[1]
    empty_ids = torch.tensor([bos_id, eos_id] + [tokens.pad_id] * (n_pos - 2), dtype=tokens.ids.dtype)
    empty_pieces = (tokens.pieces[0][0], tokens.pieces[0][eos_at]) + (pad_piece,) * (n_pos - 2)
    return Tokens(
        ids=torch.cat([tokens.ids, empty_ids.expand(missing, -1)]),
        weights=torch.cat([tokens.weights, tokens.weights.new_ones(missing, n_pos)]),
        pieces=tokens.pieces + (empty_pieces,) * missing,
        words=tokens.words + ((-1,) * n_pos,) * missing,
        text=tokens.text,
        pad_id=tokens.pad_id,
    )
