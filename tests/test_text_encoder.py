"""ClipTextEncoder and PromptEncoder: parity with diffusers' encode_prompt on tiny random models, weights
with mean restoration, chunks, caching."""

from __future__ import annotations

import pytest
import torch
from text_fixtures import sd_pipeline, sdxl_pipeline, tiny_text_model

from sdkit.text import ClipTextEncoder, ClipTokenizer, PromptEncoder, clip_tokenizer, schedule_at
from sdkit.text.encoder import apply_weights

PROMPT, NEGATIVE = "a photo of a cat, highly detailed", "blurry, ugly"


def diffusers_sd(pipe, prompt: str, negative: str, clip_skip: int | None = None):
    with torch.no_grad():
        return pipe.encode_prompt(prompt, "cpu", 1, True, negative, clip_skip=clip_skip)


@pytest.mark.parametrize("pad", ["<|endoftext|>", "!"])  # SD1 tokenizer, SD2-style pad-0 tokenizer
def test_sd_parity_with_diffusers(pad: str) -> None:
    pipe = sd_pipeline(pad)
    cond_ref, uncond_ref = diffusers_sd(pipe, PROMPT, NEGATIVE)
    encoder = PromptEncoder.for_family("sd1" if pad != "!" else "sd2", [pipe.tokenizer], [pipe.text_encoder])
    cond, uncond = encoder.encode_pair(PROMPT, NEGATIVE)
    assert cond.embeds.shape == (1, 77, 32) and cond.pooled is None
    torch.testing.assert_close(cond.embeds, cond_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(uncond.embeds, uncond_ref, rtol=0, atol=1e-6)


def test_pad_token_matters_for_the_embeddings() -> None:
    """Same model, SD1 vs SD2 padding: positions after EOS differ, so the padding id is part of parity."""
    model = sd_pipeline().text_encoder
    enc = ClipTextEncoder(model)
    a, b = enc(clip_tokenizer("sd1")(PROMPT)).embeds, enc(clip_tokenizer("sd2")(PROMPT)).embeds
    torch.testing.assert_close(a[:, :10], b[:, :10])  # BOS + 8 tokens + EOS: causal, unaffected by padding
    assert (a[:, 10:] - b[:, 10:]).abs().max() > 1e-3


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_sd_clip_skip_parity(clip_skip: int) -> None:
    pipe = sd_pipeline("<|endoftext|>", 3)
    # diffusers 0.42 reads `text_encoder.text_model.final_layer_norm`, which transformers 5's CLIPTextModel
    # no longer has (the model is the transformer itself): alias it, outside nn.Module's registry.
    object.__setattr__(pipe.text_encoder, "text_model", pipe.text_encoder)
    cond_ref, _ = diffusers_sd(pipe, PROMPT, "", clip_skip=clip_skip)
    encoder = ClipTextEncoder(pipe.text_encoder, clip_skip)
    cond = encoder(ClipTokenizer.from_hf(pipe.tokenizer)(PROMPT))
    torch.testing.assert_close(cond.embeds, cond_ref, rtol=0, atol=1e-6)
    last = ClipTextEncoder(pipe.text_encoder, "last")(clip_tokenizer()(PROMPT)).embeds
    zero = ClipTextEncoder(pipe.text_encoder, 0)(clip_tokenizer()(PROMPT)).embeds
    torch.testing.assert_close(zero, last)  # clip_skip 0 is the last layer
    assert (cond.embeds - last).abs().max() > 1e-3


def test_attention_mask_follows_the_config_flag() -> None:
    pipe = sd_pipeline.__wrapped__("<|endoftext|>", 2)  # a fresh pipeline: its config is changed below
    plain = ClipTextEncoder(pipe.text_encoder)(clip_tokenizer()(PROMPT)).embeds
    pipe.text_encoder.config.use_attention_mask = True
    cond_ref, _ = diffusers_sd(pipe, PROMPT, "")
    masked = ClipTextEncoder(pipe.text_encoder)
    assert masked.use_attention_mask
    cond = masked(clip_tokenizer()(PROMPT)).embeds
    torch.testing.assert_close(cond, cond_ref, rtol=0, atol=1e-6)
    assert (cond[:, 10:] - plain[:, 10:]).abs().max() > 1e-4  # the mask only changes the padding positions
    torch.testing.assert_close(cond[:, :10], plain[:, :10])


@pytest.mark.parametrize("clip_skip", [None, 1])
def test_sdxl_parity_with_diffusers(clip_skip: int | None) -> None:
    pipe = sdxl_pipeline()
    with torch.no_grad():
        ref = pipe.encode_prompt(PROMPT, device="cpu", negative_prompt=NEGATIVE, clip_skip=clip_skip)
        zeros_ref = pipe.encode_prompt(PROMPT, device="cpu")  # negative None + force_zeros_for_empty_prompt
    encoder = PromptEncoder.for_family(
        "sdxl",
        [pipe.tokenizer, pipe.tokenizer_2],
        [pipe.text_encoder, pipe.text_encoder_2],
        clip_skip=clip_skip,
        zero_empty_negative=pipe.config.force_zeros_for_empty_prompt,
    )
    assert [t.pad_id for t in encoder.tokenizers] == [49407, 0]
    cond, uncond = encoder.encode_pair(PROMPT, NEGATIVE)
    assert cond.embeds.shape == (1, 77, 64) and cond.pooled.shape == (1, 32)  # 32 + 32 features, projection
    torch.testing.assert_close(cond.embeds, ref[0], rtol=0, atol=1e-6)
    if clip_skip is None:  # diffusers applies clip_skip to the prompt but not to the negative prompt
        torch.testing.assert_close(uncond.embeds, ref[1], rtol=0, atol=1e-6)
        torch.testing.assert_close(cond.pooled, ref[2], rtol=0, atol=1e-6)
        torch.testing.assert_close(uncond.pooled, ref[3], rtol=0, atol=1e-6)
        cond, uncond = encoder.encode_pair(PROMPT, "")
        torch.testing.assert_close(cond.embeds, zeros_ref[0], rtol=0, atol=1e-6)
        assert uncond.embeds.eq(0).all() and uncond.pooled.eq(0).all()
        assert zeros_ref[1].eq(0).all() and uncond.embeds.shape == zeros_ref[1].shape


def test_sdxl_pooled_comes_from_the_first_chunk() -> None:
    pipe = sdxl_pipeline()
    encoder = PromptEncoder.for_family(
        "sdxl", [pipe.tokenizer, pipe.tokenizer_2], [pipe.text_encoder, pipe.text_encoder_2]
    )
    long = encoder.encode("a cat BREAK a dog")
    short = encoder.encode("a cat")
    assert long.embeds.shape == (1, 154, 64)
    torch.testing.assert_close(long.pooled, short.pooled)
    torch.testing.assert_close(long.embeds[:, :77], short.embeds)


def test_chunks_are_encoded_separately_and_concatenated() -> None:
    model = tiny_text_model(3)
    encoder = ClipTextEncoder(model)
    tokens = clip_tokenizer()(" ".join(["cat"] * 100))
    cond = encoder(tokens)
    assert cond.embeds.shape == (1, 154, 32)
    with torch.no_grad():
        second = model(tokens.ids[1:2]).last_hidden_state
    torch.testing.assert_close(cond.embeds[:, 77:], second)


def test_weight_scales_only_its_tokens_then_restores_the_mean() -> None:
    model = tiny_text_model(4)
    encoder = ClipTextEncoder(model)
    plain_tokens = clip_tokenizer()("a photo of a cat")
    tokens = clip_tokenizer()("a photo of a (cat:1.5)")
    assert torch.equal(tokens.ids, plain_tokens.ids)
    cat = tokens.weights[0] != 1
    assert cat.nonzero().flatten().tolist() == [5]  # only "cat" is weighted
    z, _ = encoder.hidden(tokens.ids)
    weighted = encoder(tokens).embeds[0]
    # undo the mean restoration: the ratio is a single number per chunk
    ratio = z[0].mean() / (z[0] * tokens.weights[0, :, None]).mean()
    before_restore = weighted / ratio
    torch.testing.assert_close(before_restore[~cat], z[0][~cat])
    torch.testing.assert_close(before_restore[cat], 1.5 * z[0][cat])
    torch.testing.assert_close(weighted.mean(), z[0].mean())  # mean restored
    assert not torch.allclose(weighted[5], z[0][5])
    unweighted = ClipTextEncoder(model, restore_mean=False)(tokens).embeds[0]
    torch.testing.assert_close(unweighted[~cat], z[0][~cat])
    torch.testing.assert_close(unweighted[cat], 1.5 * z[0][cat])
    assert torch.equal(encoder(plain_tokens).embeds[0], z[0])  # no weights: untouched


def test_apply_weights_per_chunk_arithmetic() -> None:
    z = torch.arange(1.0, 13.0).reshape(2, 3, 2)  # 2 chunks, 3 tokens, 2 features
    w = torch.tensor([[1.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    out = apply_weights(z, w)
    # chunk 0: mean 3.5; weighted [1,2, 6,8, 5,6] has mean 14/3; scale 3.5 / (14/3) = 0.75
    torch.testing.assert_close(out[0], torch.tensor([[1.0, 2.0], [6.0, 8.0], [5.0, 6.0]]) * 0.75)
    torch.testing.assert_close(out[1], z[1])


def test_prompt_and_negative_get_the_same_chunk_count() -> None:
    model = tiny_text_model(5)
    encoder = PromptEncoder("sd1", [clip_tokenizer()], [ClipTextEncoder(model)])
    cond, uncond = encoder.encode_pair(" ".join(["cat"] * 100), "blurry")
    assert cond.embeds.shape == uncond.embeds.shape == (1, 154, 32)
    alone = encoder.encode("blurry").embeds
    torch.testing.assert_close(uncond.embeds[:, :77], alone)
    empty = encoder.encode("").embeds
    torch.testing.assert_close(uncond.embeds[:, 77:], empty)  # padding chunk = encoding of ""


def test_repeated_prompt_is_encoded_once() -> None:
    model = tiny_text_model(6)
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(args))
    encoder = PromptEncoder("sd1", [clip_tokenizer()], [ClipTextEncoder(model)], cache_size=2)
    first = encoder.encode("a cat")
    assert encoder.encode("a cat") is first and len(calls) == 1
    encoder.encode_pair("a cat", "a dog")
    assert len(calls) == 2  # only "a dog" was new
    encoder.encode("a cat", chunks=2)  # another chunk count is another entry; evicts ("a cat", 1)
    assert len(calls) == 3
    encoder.encode("a dog")  # still cached
    assert len(calls) == 3
    encoder.encode("a cat")  # evicted by the LRU (size 2)
    assert len(calls) == 4
    encoder.clear_cache()
    encoder.encode("a cat")
    assert len(calls) == 5


def test_encode_schedule_for_prompt_editing() -> None:
    model = tiny_text_model(7)
    encoder = PromptEncoder("sd1", [clip_tokenizer()], [ClipTextEncoder(model)])
    schedule = encoder.encode_schedule("a [cat:dog:0.5]", 20)
    assert [end for end, _ in schedule] == [10, 20]
    torch.testing.assert_close(schedule_at(schedule, 10).embeds, encoder.encode("a cat").embeds)
    torch.testing.assert_close(schedule_at(schedule, 11).embeds, encoder.encode("a dog").embeds)


def test_layer_argument_is_checked() -> None:
    model = tiny_text_model(8)
    with pytest.raises(ValueError, match="layer"):
        ClipTextEncoder(model, "first")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="normalised"):
        ClipTextEncoder(model, "last", final_layer_norm=False)
    assert "2 layers" in repr(ClipTextEncoder(model))


def test_embedding_views() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sdkit.viz.embeddings import (
        cosine_similarities,
        plot_cosine_similarities,
        plot_embedding_pca,
        plot_token_embeddings,
        word_embeddings,
    )

    encoder = PromptEncoder("sd1", [clip_tokenizer()], [ClipTextEncoder(tiny_text_model(9))])
    prompts = ["a cat", "a cat", "a red car"]
    sim = cosine_similarities(encoder, prompts)
    assert sim.shape == (3, 3)
    torch.testing.assert_close(sim.diagonal(), torch.ones(3))
    assert sim[0, 1] == pytest.approx(1.0) and sim[0, 2] < 0.9999
    assert cosine_similarities(encoder, prompts, "tokens").shape == (3, 3)
    words = word_embeddings(encoder, ["cat", "photorealistic"])
    assert words.shape == (2, 32)
    ax = plot_embedding_pca(encoder, ["cat", "dog", "car", "tree"])
    assert [t.get_text() for t in ax.texts] == ["cat", "dog", "car", "tree"]
    tokens = encoder.tokenize("photorealistic (cat:1.5)")
    ax = plot_token_embeddings(encoder.encode("photorealistic (cat:1.5)"), tokens)
    assert len(ax.get_yticks()) == 4 + 1 + 2  # BOS photo realistic cat EOS + 2 padding
    plot_cosine_similarities(encoder, prompts)
    plt.close("all")
