"""ClipTokenizer: exact SD ids, chunking, BREAK, weights per token, word indices, padding to n chunks."""

from __future__ import annotations

import pytest
import torch

from sdkit.text import (
    ClipTokenizer,
    attention_mask,
    clip_tokenizer,
    clip_tokenizers,
    pad_chunks,
    tokens_table,
)
from sdkit.text.tokenizer import clean_piece
from sdkit.text.vocabulary import hf_clip_tokenizer

BOS, EOS = 49406, 49407
CAT_IDS = [BOS, 320, 1125, 539, 320, 2368, EOS]  # "a photo of a cat" with the real CLIP vocabulary


def test_sd1_exact_ids_and_eos_padding() -> None:
    tokens = clip_tokenizer("sd1")("a photo of a cat")
    assert tokens.ids.shape == (1, 77) and tokens.ids.dtype == torch.long
    assert tokens.ids[0, :7].tolist() == CAT_IDS
    assert tokens.ids[0, 7:].tolist() == [EOS] * 70
    assert tokens.pad_id == EOS
    assert tokens.pieces[0][:7] == (
        "<|startoftext|>",
        "a</w>",
        "photo</w>",
        "of</w>",
        "a</w>",
        "cat</w>",
        "<|endoftext|>",
    )
    assert tokens.words[0][:8] == (-1, 0, 1, 2, 3, 4, -1, -1)
    assert tokens.weights.eq(1).all()


def test_sd2_pads_with_exclamation_mark() -> None:
    tokens = clip_tokenizer("sd2")("a photo of a cat")
    assert tokens.ids[0, :7].tolist() == CAT_IDS
    assert tokens.ids[0, 7:].tolist() == [0] * 70
    assert tokens.pad_id == 0 and tokens.pieces[0][7] == "!"
    first, second = clip_tokenizers("sdxl")
    assert first.pad_id == EOS and second.pad_id == 0
    assert clip_tokenizer("sd1") is clip_tokenizer("sd1")  # built once


@pytest.mark.parametrize("pad", ["<|endoftext|>", "!"])
@pytest.mark.parametrize(
    "prompt",
    [
        "a photo of a cat",
        # no "!": with pad "!" the HF tokenizer splits it as its pad token, unlike CLIP (diffusers issue #4153;
        # tests/test_tokenizer_conformance.py checks "!" against open_clip)
        "Photorealistic  masterpiece, 8k UHD??  café's naïve résumé",
        "",
        "emoji 🐱 and ünïcödé",
    ],
)
def test_same_ids_as_the_hf_tokenizer_diffusers_uses(prompt: str, pad: str) -> None:
    hf = hf_clip_tokenizer(pad)
    expected = hf(prompt, padding="max_length", max_length=77, truncation=True).input_ids
    assert ClipTokenizer.from_hf(hf)(prompt).ids[0].tolist() == expected


def test_words_split_into_several_tokens() -> None:
    tokens = clip_tokenizer()("photorealistic cat")
    assert tokens.ids[0, :5].tolist() == [BOS, 1153, 16157, 2368, EOS]
    assert tokens.pieces[0][1:4] == ("photo", "realistic</w>", "cat</w>")
    assert tokens.words[0][:5] == (-1, 0, 0, 1, -1)  # both halves of "photorealistic" are word 0


def test_long_prompt_is_split_into_chunks_without_dropping() -> None:
    prompt = " ".join(["cat"] * 100)  # "cat" is one token: 100 tokens -> 75 + 25
    tokens = clip_tokenizer("sd1")(prompt)
    assert tokens.chunks == 2 and tokens.ids.shape == (2, 77)
    assert tokens.ids[:, 0].tolist() == [BOS, BOS]
    assert tokens.ids[0, 1:76].eq(2368).all() and tokens.ids[0, 76] == EOS  # full chunk: EOS at the end
    assert tokens.ids[1, 1:26].eq(2368).all() and tokens.ids[1, 26] == EOS
    assert tokens.ids[1, 27:].eq(EOS).all()  # sd1 padding
    assert (tokens.ids == 2368).sum() == 100  # nothing dropped
    assert tokens.words[1][1] == 75 and tokens.words[1][25] == 99
    sd2 = clip_tokenizer("sd2")(prompt)
    assert sd2.ids[1, 26] == EOS and sd2.ids[1, 27:].eq(0).all()
    assert attention_mask(sd2)[1].sum() == 27 and attention_mask(sd2)[0].sum() == 77


def test_exactly_75_tokens_fit_in_one_chunk() -> None:
    assert clip_tokenizer()(" ".join(["cat"] * 75)).chunks == 1
    assert clip_tokenizer()(" ".join(["cat"] * 76)).chunks == 2


def test_break_starts_a_new_chunk() -> None:
    tokens = clip_tokenizer()("a cat BREAK a dog")
    assert tokens.chunks == 2
    assert tokens.ids[0, :4].tolist() == [BOS, 320, 2368, EOS]
    assert tokens.ids[1, :4].tolist() == [BOS, 320, 1929, EOS]
    assert tokens.words[1][1:3] == (2, 3)  # word numbering continues across chunks
    assert clip_tokenizer()("a cat break a dog").chunks == 1  # only upper-case BREAK is the keyword
    assert clip_tokenizer()("BREAK BREAK cat").chunks == 3  # BREAK closes even an empty chunk (A1111)


def test_weights_per_token() -> None:
    tokens = clip_tokenizer()("a (cat:1.5) [dog] ((bird))")
    assert tokens.ids[0, :6].tolist() == [BOS, 320, 2368, 1929, 3329, EOS]
    assert tokens.weights[0, :6].tolist() == pytest.approx([1, 1, 1.5, 1 / 1.1, 1.21, 1])
    assert tokens.weights[0, 6:].eq(1).all()


def test_pad_chunks() -> None:
    for family, pad in (("sd1", EOS), ("sd2", 0)):
        tokens = clip_tokenizer(family)("a cat")
        padded = pad_chunks(tokens, 3)
        assert padded.ids.shape == (3, 77) and padded.chunks == 3
        assert padded.ids[0].tolist() == tokens.ids[0].tolist()
        assert padded.ids[1, :2].tolist() == [BOS, EOS] and padded.ids[2, 2:].eq(pad).all()
        assert padded.weights.shape == (3, 77) and len(padded.pieces) == len(padded.words) == 3
        assert padded.pieces[2][:3] == (
            "<|startoftext|>",
            "<|endoftext|>",
            "!" if pad == 0 else "<|endoftext|>",
        )
        assert pad_chunks(padded, 2) is padded
    full = clip_tokenizer("sd2")(" ".join(["cat"] * 75))
    assert pad_chunks(full, 2).pieces[1][2] == "!"  # pad piece found without any padding in the input


def test_tokens_table_html() -> None:
    html = tokens_table(clip_tokenizer()("photorealistic (cat:1.5) <b>"))
    assert "<table" in html and "realistic" in html and "x1.5" in html and "&lt;" in html
    assert "padding" in html


def test_from_pretrained_folder_roundtrip(tmp_path) -> None:
    """The real-weights path: a tokenizer folder saved by transformers, loaded back and wrapped."""
    from transformers import CLIPTokenizer

    hf_clip_tokenizer("!").save_pretrained(tmp_path / "tokenizer_2")
    loaded = ClipTokenizer.from_hf(CLIPTokenizer.from_pretrained(tmp_path / "tokenizer_2"), "sdxl")
    tokens = loaded("a photo of a cat")
    assert tokens.ids[0, :8].tolist() == CAT_IDS + [0] and loaded.pad_id == 0 and loaded.length == 77


def test_clean_piece() -> None:
    assert [clean_piece(p) for p in clip_tokenizer()("cat 🐱 café").pieces[0][:5]] == [
        "<|startoftext|>",
        "cat",
        "🐱",
        "café",
        "<|endoftext|>",
    ]


# A1111's comma padding backtrack, as its settings describe it: when a chunk is full and its last comma is at
# most N tokens back, the tokens after that comma start the next chunk instead.
CAT, DOG, COMMA = 2368, 1929, 267  # "cat</w>", "dog</w>", ",</w>" in the real CLIP vocabulary


def _body(tokens, chunk: int) -> list[int]:
    """The prompt tokens of one chunk (between BOS and the first EOS)."""
    ids = tokens.ids[chunk].tolist()
    return ids[1 : ids.index(EOS, 1)]


def test_comma_backtrack_moves_the_phrase_after_the_last_comma() -> None:
    prompt = "cat " * 70 + ", " + "dog " * 10  # 70 cats, a comma at position 70, then 10 dogs
    plain = clip_tokenizer("sd1")(prompt)
    assert _body(plain, 0) == [CAT] * 70 + [COMMA] + [DOG] * 4 and _body(plain, 1) == [DOG] * 6
    a1111 = clip_tokenizer("sd1").with_comma_backtrack(20)(prompt)
    assert _body(a1111, 0) == [CAT] * 70 + [COMMA] and _body(a1111, 1) == [DOG] * 10
    assert a1111.ids[0, 72:].tolist() == [EOS] * 5  # the short chunk is padded
    assert a1111.pieces[1][1] == "dog</w>" and a1111.words[1][1] == 71  # word numbering follows the tokens
    assert clip_tokenizer("sd1").comma_backtrack == 0  # the shared tokenizer was not changed


def test_comma_backtrack_only_looks_as_far_back_as_told() -> None:
    prompt = "cat " * 50 + ", " + "dog " * 40  # a full chunk's last comma is 75 - 50 = 25 tokens back
    for backtrack, first in ((24, [CAT] * 50 + [COMMA] + [DOG] * 24), (25, [CAT] * 50 + [COMMA])):
        tokens = clip_tokenizer("sd1").with_comma_backtrack(backtrack)(prompt)
        assert _body(tokens, 0) == first
        assert len(_body(tokens, 1)) == 91 - len(first)
    with pytest.raises(ValueError, match="comma_backtrack"):
        clip_tokenizer("sd1").with_comma_backtrack(75)


def test_comma_backtrack_through_the_prompt_encoder(tiny_sd1_folder) -> None:
    import sdkit

    kit = sdkit.load(str(tiny_sd1_folder))  # a kit of its own: the setting changes its prompt encoder
    prompt = "cat " * 70 + ", " + "dog " * 10
    before = kit.prompts.encode(prompt)
    kit.prompts.comma_backtrack = 20
    after = kit.prompts.encode(prompt)
    assert kit.prompts.comma_backtrack == 20 and kit.prompts.tokenize(prompt).ids[0, 72].item() == EOS
    assert before.embeds.shape == after.embeds.shape and not torch.equal(before.embeds, after.embeds)
    assert torch.equal(sdkit.load(str(tiny_sd1_folder)).prompts.encode(prompt).embeds, before.embeds)
