"""Cross-attention capture on tiny random UNets (SD1 and SDXL), against the installed diffusers classes."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from sdkit.attention import CaptureProcessor, capture_attention, cross_attention_modules

SMALL = dict(width=64, height=48, steps=3, seed=3, cfg=6.0)
PROMPT = "a red circle on a blue square"


def _processors(unet) -> dict[str, object]:
    return {n: m.processor for n, m in unet.named_modules() if isinstance(m, Attention)}


def test_installed_on_exactly_the_cross_attention_modules(tiny_sd1_kit):
    unet = tiny_sd1_kit.denoiser.model.unet
    before = _processors(unet)
    assert all(isinstance(p, AttnProcessor2_0) for p in before.values())
    with capture_attention(tiny_sd1_kit, layers=[], steps=[]):
        during = _processors(unet)
        captured = {n for n, p in during.items() if isinstance(p, CaptureProcessor)}
        assert captured == {n for n in during if n.endswith(".attn2")} and len(captured) == 4
        assert captured == set(cross_attention_modules(unet))
        for n in captured:  # each wraps the processor that was there
            assert during[n].inner is before[n]
        for n in set(during) - captured:  # self-attention (attn1) untouched
            assert during[n] is before[n] and n.endswith(".attn1")
    assert _processors(unet) == before  # removed: the very same processor objects are back
    assert "encode_pair" not in vars(tiny_sd1_kit.prompts)


def test_outputs_are_bit_identical_with_capture_off_on_and_removed(tiny_sd1_kit):
    reference = tiny_sd1_kit.generate(PROMPT, **SMALL).latents.tensor
    with capture_attention(tiny_sd1_kit, layers=[], steps=[]) as off:
        assert torch.equal(tiny_sd1_kit.generate(PROMPT, **SMALL).latents.tensor, reference)
    assert len(off) == 0
    with capture_attention(tiny_sd1_kit) as on:  # recording does not alter the computation either
        assert torch.equal(tiny_sd1_kit.generate(PROMPT, **SMALL).latents.tensor, reference)
    assert len(on) == 3 * 4
    assert torch.equal(tiny_sd1_kit.generate(PROMPT, **SMALL).latents.tensor, reference)


def test_probabilities_are_token_distributions_of_the_cond_half(tiny_sd1_kit):
    with capture_attention(tiny_sd1_kit) as maps:
        tiny_sd1_kit.generate(PROMPT, batch_size=2, **SMALL)
    assert maps.steps == [0, 1, 2] and len(maps.sigmas) == 3 and maps.sigmas[0] > maps.sigmas[-1]
    assert maps.latent_size == (6, 8)
    modules = cross_attention_modules(tiny_sd1_kit.denoiser.model.unet)
    for (_, layer), p in maps.probs.items():
        h, w = maps.sizes[layer]
        # [batch (cond half only), heads, query pixels, tokens]
        assert p.shape == (2, modules[layer].heads, h * w, 77), (layer, p.shape)
        assert (p.sum(-1) - 1).abs().max() < 1e-5
        assert p.min() >= 0
    assert maps.sizes["mid_block.attentions.0.transformer_blocks.0.attn2"] == (3, 4)


def test_probabilities_match_an_independent_computation(tiny_sd1_kit):
    """Record one layer and recompute softmax(QK^T/sqrt(d)) by hand from its inputs with a forward hook."""
    unet = tiny_sd1_kit.denoiser.model.unet
    name = "up_blocks.1.attentions.1.transformer_blocks.0.attn2"
    module = dict(unet.named_modules())[name]
    seen = []
    handle = module.register_forward_pre_hook(lambda m, a, k: seen.append((a, k)), with_kwargs=True)
    try:
        with capture_attention(tiny_sd1_kit, layers=[name], steps=[1]) as maps:
            tiny_sd1_kit.generate(PROMPT, **SMALL)
    finally:
        handle.remove()
    assert list(maps.probs) == [(1, name)]
    args, kwargs = seen[1]
    x, ctx = args[0][1:], kwargs["encoder_hidden_states"][1:]  # the cond half of [uncond, cond]
    q = module.to_q(x).view(1, -1, module.heads, 4).transpose(1, 2)
    k = module.to_k(ctx).view(1, -1, module.heads, 4).transpose(1, 2)
    expected = torch.softmax(q @ k.transpose(-1, -2) / 4**0.5, dim=-1)
    assert torch.allclose(maps.probs[(1, name)], expected, atol=1e-6)


def test_layer_and_step_selection(tiny_sd1_kit):
    with capture_attention(tiny_sd1_kit, layers=["up_blocks"], steps=range(1, 3), keep_heads=False) as maps:
        tiny_sd1_kit.generate(PROMPT, **SMALL)
    assert maps.steps == [1, 2] and all(n.startswith("up_blocks.") for n in maps.layers) and len(maps.layers) == 2
    p = next(iter(maps.probs.values()))
    assert p.shape[1] == 1 and torch.allclose(p.sum(-1), torch.full_like(p.sum(-1), 4.0), atol=1e-5)


def test_without_cfg_the_whole_batch_is_kept(tiny_sd1_kit):
    with capture_attention(tiny_sd1_kit, steps=[0]) as maps:
        tiny_sd1_kit.generate(PROMPT, **{**SMALL, "cfg": 1.0})
    assert next(iter(maps.probs.values())).shape[0] == 1


def test_long_prompts_have_chunks_times_77_tokens(tiny_sd1_kit):
    prompt = ", ".join(["a red circle"] * 30) + ", a green hexagon"
    assert tiny_sd1_kit.prompts.chunks(prompt) == 2
    with capture_attention(tiny_sd1_kit, steps=[0]) as maps:
        tiny_sd1_kit.generate(prompt, **SMALL)
    p = next(iter(maps.probs.values()))
    assert p.shape[-1] == 2 * 77 and (p.sum(-1) - 1).abs().max() < 1e-5
    positions = maps.token_positions("hexagon")
    assert positions and all(77 <= q < 154 for q in positions)  # the word sits in the second chunk


def test_daam_aggregation_and_word_maps(tiny_sd1_kit):
    with capture_attention(tiny_sd1_kit) as maps:
        tiny_sd1_kit.generate(PROMPT, **SMALL)
    tokens = tiny_sd1_kit.prompts.tokenize(PROMPT)
    assert maps.tokens is not None and torch.equal(maps.tokens.ids, tokens.ids)
    heat = maps.token_maps()
    assert heat.shape == (1, 77, 48, 64)  # image resolution
    assert heat.min() >= 0 and torch.allclose(heat.amax(dim=(2, 3)), torch.ones(1, 77))
    word = maps.word_map("circle", tokens)
    position = maps.token_positions("circle", tokens)
    assert position == [3]  # BOS a red circle
    assert torch.allclose(word[0], heat[0, 3], atol=1e-6)
    # unnormalised, the sum over all tokens of every layer's maps is (layers * steps * heads) everywhere,
    # before upsampling: check on one record through the unaggregated view
    spatial = maps.spatial(0, maps.layers[0])
    assert spatial.shape[:3] == (1, 4, 77) and torch.allclose(spatial.sum(2), torch.ones_like(spatial.sum(2)))
    with pytest.raises(KeyError, match="triangle"):
        maps.word_map("triangle")


def test_maps_round_trip_through_tensors(tiny_sd1_kit):
    from sdkit.trace import Trace

    trace = Trace()
    with capture_attention(tiny_sd1_kit, steps=[2], trace=trace) as maps:
        tiny_sd1_kit.generate(PROMPT, trace=trace, **SMALL)
    assert trace.attention is maps and len(maps) == 4
    back = Trace.from_tensors(trace.to_tensors()).attention
    assert back is not None
    assert back.sizes == maps.sizes and back.latent_size == maps.latent_size and back.sigmas == maps.sigmas
    assert all(torch.equal(back.probs[k], v) for k, v in maps.probs.items())


@pytest.fixture(scope="module")
def tiny_sdxl_kit(tmp_path_factory):
    import sdkit
    from sdkit.testing import save_tiny_model

    return sdkit.load(str(save_tiny_model(tmp_path_factory.mktemp("m") / "tiny-sdxl", "sdxl")))


def test_sdxl(tiny_sdxl_kit):
    unet = tiny_sdxl_kit.denoiser.model.unet
    small = dict(width=64, height=64, steps=2, seed=1, cfg=5.0)
    reference = tiny_sdxl_kit.generate(PROMPT, **small).latents.tensor
    with capture_attention(tiny_sdxl_kit) as maps:
        assert torch.equal(tiny_sdxl_kit.generate(PROMPT, **small).latents.tensor, reference)
    names = set(cross_attention_modules(unet))
    assert set(maps.layers) == names and len(names) == 5  # the tiny SDXL mid block has 2 transformer layers
    for p in maps.probs.values():
        assert p.shape[0] == 1 and p.shape[-1] == 77 and (p.sum(-1) - 1).abs().max() < 1e-5
    assert maps.word_map("square").shape == (1, 64, 64)
