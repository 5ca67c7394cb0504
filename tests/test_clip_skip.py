"""Clip skip as A1111 (``CLIP_stop_at_last_layers``): 1 is the last layer, ``k >= 2`` is ``hidden_states[-k]``
through the final layer norm (``modules/sd_hijack_clip.py``), checked against transformers' hidden states and
against diffusers' ``encode_prompt(clip_skip=k - 1)`` (diffusers counts skipped layers: its 1 is A1111's 2).
SD2 (OpenCLIP) and SDXL ignore it in A1111 with its default settings, and so here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from text_fixtures import sd_pipeline, tiny_text_model

from sdkit import metadata
from sdkit.kit import Kit
from sdkit.testing import tiny_components
from sdkit.text import ClipTextEncoder, ClipTokenizer, PromptEncoder, clip_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "a photo of a cat, highly detailed"


@pytest.mark.parametrize("clip_skip", [1, 2, 3, 4])
def test_matches_transformers_hidden_states(clip_skip: int) -> None:
    model = tiny_text_model(seed=3, layers=4)
    tokens = clip_tokenizer()(PROMPT)
    got = ClipTextEncoder(model)(tokens, clip_skip=clip_skip).embeds
    with torch.no_grad():
        out = model(tokens.ids, output_hidden_states=True)
        inner = getattr(model, "text_model", model)
        expected = out.last_hidden_state if clip_skip == 1 else inner.final_layer_norm(out.hidden_states[-clip_skip])
    torch.testing.assert_close(got, expected.reshape(1, -1, 32), rtol=0, atol=0)
    if clip_skip > 1:
        assert (got - ClipTextEncoder(model)(tokens).embeds).abs().max() > 1e-3


@pytest.mark.parametrize("a1111_clip_skip", [1, 2, 3])
def test_matches_diffusers_clip_skip_minus_one(a1111_clip_skip: int) -> None:
    pipe = sd_pipeline("<|endoftext|>", 3)
    # diffusers 0.42 reads `text_encoder.text_model.final_layer_norm`, which transformers 5's CLIPTextModel no
    # longer has (the model is the transformer itself): alias it, outside nn.Module's registry.
    object.__setattr__(pipe.text_encoder, "text_model", pipe.text_encoder)
    diffusers_skip = None if a1111_clip_skip == 1 else a1111_clip_skip - 1
    with torch.no_grad():
        ref, _ = pipe.encode_prompt(PROMPT, "cpu", 1, True, "", clip_skip=diffusers_skip)
    prompts = PromptEncoder.for_family("sd1", [ClipTokenizer.from_hf(pipe.tokenizer)], [pipe.text_encoder])
    cond = prompts.encode(PROMPT, clip_skip=a1111_clip_skip)
    torch.testing.assert_close(cond.embeds, ref, rtol=0, atol=1e-6)


def test_cache_keeps_clip_skips_apart() -> None:
    model = tiny_text_model(seed=1, layers=3)
    prompts = PromptEncoder("sd1", [clip_tokenizer()], [ClipTextEncoder(model)])
    one, two = prompts.encode(PROMPT), prompts.encode(PROMPT, clip_skip=2)
    assert (one.embeds - two.embeds).abs().max() > 1e-3
    assert prompts.encode(PROMPT, clip_skip=2) is two and prompts.encode(PROMPT) is one


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_sd2_and_sdxl_ignore_clip_skip_as_a1111(family: str) -> None:
    parts = tiny_components(family)
    names = [k for k in ("tokenizer", "tokenizer_2") if k in parts]
    prompts = PromptEncoder.for_family(
        family, [parts[k] for k in names], [parts[k.replace("tokenizer", "text_encoder")] for k in names]
    )
    assert not prompts.clip_skip_applies
    a, b = prompts.encode(PROMPT), prompts.encode(PROMPT, clip_skip=2)
    assert torch.equal(a.embeds, b.embeds)
    kit = Kit.from_components(parts, family=family, name="tiny")
    with pytest.warns(UserWarning, match=f"clip_skip=2 does not change {family}"):
        params, _, _ = kit.parameters("x", clip_skip=2, steps=2, width=64, height=64)
    assert params.clip_skip == 2 and "Clip skip: 2" in params.infotext()  # recorded, as A1111 does


def test_generate_with_clip_skip_reads_back_and_regenerates(tiny_sd1_kit, tmp_path) -> None:
    args = dict(seed=21, steps=3, width=32, height=32)
    plain = tiny_sd1_kit.generate(PROMPT, **args)
    skipped = tiny_sd1_kit.generate(PROMPT, **args, clip_skip=2)
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(skipped.images[0]))
    assert "Clip skip: 2" in skipped.infotext and "Clip skip" not in plain.infotext  # A1111 writes it when > 1
    kwargs = metadata.read(skipped.save(str(tmp_path / "c.png")))
    assert kwargs["clip_skip"] == 2
    again = tiny_sd1_kit.generate(**kwargs)
    assert np.array_equal(np.asarray(skipped.images[0]), np.asarray(again.images[0]))
    cond, _ = tiny_sd1_kit.prompts.encode_pair(PROMPT, "", clip_skip=2)
    encoder, tokens = tiny_sd1_kit.prompts.encoders[0], tiny_sd1_kit.prompts.tokenizers[0](PROMPT)
    torch.testing.assert_close(cond.embeds, encoder(tokens, clip_skip=2).embeds)


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (4, ValueError), (2.0, TypeError), (True, TypeError)])
def test_bad_clip_skip_is_one_clear_error(tiny_sd1_kit, value, error) -> None:
    with pytest.raises(error, match="clip_skip") as info:
        tiny_sd1_kit.generate("x", seed=1, steps=2, width=32, height=32, clip_skip=value)
    assert "\n" not in str(info.value)
