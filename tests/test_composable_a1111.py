"""Composable diffusion (``AND``) against AUTOMATIC1111's, restated from stable-diffusion-webui 1.6+:
``modules/prompt_parser.py`` (``re_AND``, ``re_weight``, ``get_multicond_prompt_list``: the parts and weights) and
``modules/sd_samplers_cfg_denoiser.py`` (``CFGDenoiser.combine_denoised``: ``denoised = uncond + sum_k (cond_k -
uncond) * (weight_k * cond_scale)``), run with k-diffusion's samplers on the tiny model.
"""

from __future__ import annotations

import re

import k_diffusion.sampling as K
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from image_fixtures import gradient_image

from sdkit import metadata
from sdkit.attention import capture_attention
from sdkit.conditioners import prepare_mask
from sdkit.guidance import CFG, Composed
from sdkit.noise import randn
from sdkit.recipes import txt2img
from sdkit.sweep import sweep
from sdkit.text.composable import Part, composable_parts, is_composable
from sdkit.types import TextConditioning

pytestmark = pytest.mark.usefixtures("one_thread")

# ------------------------------------------------------------------------------------------------ the oracle
A1111_AND = re.compile(r"\bAND\b")
A1111_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def a1111_parts(prompt: str) -> list[tuple[str, float]]:
    out = []
    for subprompt in A1111_AND.split(prompt):
        match = A1111_WEIGHT.search(subprompt)
        text, weight = match.groups() if match is not None else (subprompt, 1.0)
        out.append((text, float(weight) if weight is not None else 1.0))
    return out


def a1111_combine(x_out: torch.Tensor, conds_list: list[list[tuple[int, float]]], cond_scale: float) -> torch.Tensor:
    """combine_denoised: x_out holds every cond row, then the uncond rows (one per image)."""
    denoised_uncond = x_out[-len(conds_list) :]
    denoised = torch.clone(denoised_uncond)
    for i, conds in enumerate(conds_list):
        for cond_index, weight in conds:
            denoised[i] += (x_out[cond_index] - denoised_uncond[i]) * (weight * cond_scale)
    return denoised


class A1111CFGDenoiser:
    """k-diffusion model for one image: the parts' conds and the uncond in one batch, combined as A1111 does."""

    def __init__(self, denoiser, parts: list[TextConditioning], weights: list[float], uncond, scale: float) -> None:
        self.denoiser, self.conds = denoiser, TextConditioning.cat([*parts, uncond])
        self.conds_list, self.scale = [[(k, w) for k, w in enumerate(weights)]], scale

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        n = self.conds.batch
        x_out = self.denoiser(x.repeat(n, 1, 1, 1), sigma.repeat(n), self.conds)
        return a1111_combine(x_out, self.conds_list, self.scale)


# ------------------------------------------------------------------------------------------------ the parser
PROMPTS = [
    "a cat",
    "a cat AND a dog",
    "a red circle AND a blue square :0.7",
    "a cat:1.5 AND a dog : -0.5 AND a bird:+.25",
    "photo in 16:9",  # A1111 reads the 9 as the weight of "photo in 16"
    "ANDROID AND android and AND",
    "(a cat:1.2) AND [a:b:0.5]",
    "a cat :1. ",
    "a cat :. AND x:1.2.3",
    " AND ",
    "",
    ":2",
    "a\nAND\tb :\n3\n",
    "multi: colon: 4",
    "a cat ::3",
    "arabic-indic \u0663.\u0665 weight :\u0663",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_parts_and_weights_are_a1111s(prompt):
    assert [tuple(p) for p in composable_parts(prompt)] == a1111_parts(prompt)


def test_parts_by_hand():
    assert composable_parts("a red circle AND a blue square :0.7") == [
        Part("a red circle", 1.0),
        Part(" a blue square", 0.7),
    ]
    assert composable_parts("photo in 16:9") == [Part("photo in 16", 9.0)]
    assert not is_composable("a cat") and not is_composable("a cat :1") and not is_composable("ANDROID")
    assert composable_parts("a cat :1") == [Part("a cat", 1.0)]  # one part of weight 1: plain CFG on "a cat"
    assert is_composable("a cat AND") and is_composable("a cat :0.5")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([" ", "a", "b", "AND", ":", "1", "0", ".", "-", "+", "\n", "(", ")", "\t", "x"])))
def test_any_prompt_splits_as_a1111s(pieces):
    prompt = "".join(pieces)
    assert [tuple(p) for p in composable_parts(prompt)] == a1111_parts(prompt)


def test_bounds():
    with pytest.raises(ValueError, match="beyond a float"):
        composable_parts("a cat :" + "9" * 400)
    with pytest.raises(ValueError, match="MAX_PROMPT_CHARS"):
        composable_parts("a" * 20_001)
    with pytest.raises(TypeError):
        composable_parts(None)  # type: ignore[arg-type]
    spaces = "a" + " " * 19_000 + "b :2"  # A1111's expression backtracks quadratically here; this parser is linear
    assert composable_parts(spaces) == [Part("a" + " " * 19_000 + "b", 2.0)]


# ------------------------------------------------------------------------------------------------ guidance
def test_composed_cfg_is_a1111s_combine_denoised():
    def model(x, sigma, cond):  # any conditional model: x scaled by its conditioning
        return x * (1 + cond.embeds.mean(dim=(1, 2)).view(-1, 1, 1, 1)) / (1 + sigma.view(-1, 1, 1, 1))

    g = torch.Generator().manual_seed(0)
    parts = [TextConditioning(torch.randn(1, 77, 8, generator=g)) for _ in range(3)]
    uncond = TextConditioning(torch.randn(1, 77, 8, generator=g))
    x, sigma = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([3.0])
    weights = [1.0, 0.7, -0.4]
    ours = CFG(model, Composed.of(parts, weights), uncond, 6.5)(x, sigma)
    theirs = A1111CFGDenoiser(model, parts, weights, uncond, 6.5)(x, sigma)
    assert torch.equal(ours, theirs)
    one = CFG(model, Composed.of(parts[:1], [1.0]), uncond, 6.5)(x, sigma)  # one part of weight 1: plain CFG
    torch.testing.assert_close(one, CFG(model, parts[0], uncond, 6.5)(x, sigma), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="one weight per part"):
        Composed.of(parts, [1.0])


# ------------------------------------------------------------------------------------------------ Kit.generate
def test_generate_is_a1111s_composable_txt2img(tiny_sd1_kit):
    kit, seed, prompt = tiny_sd1_kit, 4376845645, "a red circle AND a blue square :0.7 AND a dog:-0.3"
    gen = kit.generate(prompt, "blurry", seed=seed, steps=4, cfg=6.0, sampler="euler", width=32, height=48)
    _, _, sigmas = kit.parameters(prompt, steps=4, sampler="euler", width=32, height=48)
    parts = [kit.prompts.encode(text, 1) for text, _ in a1111_parts(prompt)]
    model = A1111CFGDenoiser(kit.denoiser, parts, [w for _, w in a1111_parts(prompt)], kit.prompts.encode("blurry"), 6)
    expected = K.sample_euler(model, randn([seed], (4, 6, 4)) * sigmas[0], sigmas, disable=True)
    torch.testing.assert_close(gen.latents.tensor, expected, rtol=1e-5, atol=1e-5)
    plain = kit.generate(prompt.replace(" AND ", " and "), "blurry", seed=seed, steps=4, cfg=6.0, sampler="euler",
                         width=32, height=48)  # fmt: skip
    assert (plain.latents.tensor - gen.latents.tensor).abs().max() > 1e-2  # composing changed the image
    assert gen.parameters.prompt == prompt and metadata.parse(gen.infotext).prompt == prompt  # kept as written


def test_a_weight_alone_scales_the_guidance(tiny_sd1_kit):
    """uncond + (cond - uncond) * (2 * 3) is CFG 6: ``a red circle :2`` at CFG 3 is ``a red circle`` at CFG 6."""
    common = dict(seed=3, steps=3, sampler="euler", width=32, height=32)
    weighted = tiny_sd1_kit.generate("a red circle :2", cfg=3.0, **common)
    plain = tiny_sd1_kit.generate("a red circle", cfg=6.0, **common)
    torch.testing.assert_close(weighted.latents.tensor, plain.latents.tensor, rtol=1e-5, atol=1e-5)


def test_the_negative_prompt_is_plain_text(tiny_sd1_kit):
    kit = tiny_sd1_kit
    gen = kit.generate("a red circle", "blurry AND dark :2", seed=8, steps=3, cfg=5.0, sampler="euler", width=32,
                       height=32)  # fmt: skip
    cond, uncond = kit.prompts.encode_pair("a red circle", "blurry AND dark :2")
    _, _, sigmas = kit.parameters("a red circle", steps=3, sampler="euler", width=32, height=32)
    expected = txt2img(kit.denoiser, kit.vae.space, cond, uncond, sigmas=sigmas, sampler="euler", cfg_scale=5.0,
                       seed=8, width=32, height=32)  # fmt: skip
    assert torch.equal(gen.latents.tensor, expected.tensor)


def test_img2img_inpaint_and_hires_compose(tiny_sd1_kit):
    kit, prompt = tiny_sd1_kit, "a red circle AND a blue square"
    common = dict(seed=5, steps=4, cfg=6.0, sampler="euler_ancestral", batch_size=2)
    img = kit.generate(prompt, init_image=gradient_image(), strength=0.6, **common)
    plain = kit.generate("a red circle", init_image=gradient_image(), strength=0.6, **common)
    mask = np.zeros((64, 64), bool)
    mask[16:40, 16:40] = True
    inpainted = kit.generate(prompt, init_image=gradient_image(), mask=mask, **common)
    hires_args = dict(width=32, height=32, hires=dict(scale=1.5, steps=2, denoising_strength=0.5), **common)
    hires = kit.generate(prompt, **hires_args)
    assert len(img.images) == len(inpainted.images) == 2 and hires.images[0].size == (48, 48)
    # both passes compose: a weight-0 second part is the first part alone, at the hires size too
    zeroed, alone = kit.generate(prompt + " :0", **hires_args), kit.generate("a red circle", **hires_args)
    torch.testing.assert_close(zeroed.latents.tensor, alone.latents.tensor, rtol=1e-5, atol=1e-5)
    assert (hires.latents.tensor - alone.latents.tensor).abs().max() > 1e-3
    assert not torch.equal(img.latents.tensor, plain.latents.tensor)
    keep = prepare_mask(mask, blur=4.0)[0, 0].numpy() == 0  # outside the (blurred) mask: the original, pasted back
    assert np.array_equal(np.asarray(inpainted.images[1])[keep], np.asarray(gradient_image())[keep])


def test_a_trailing_colon_one_is_dropped_from_the_text_as_in_a1111(tiny_sd1_kit):
    """A1111 always splits off the weight: ``aspect ratio 1:1`` is the text ``aspect ratio 1`` at weight 1."""
    common = dict(seed=2, steps=3, sampler="euler", width=32, height=32)
    a = tiny_sd1_kit.generate("a red circle, aspect ratio 1:1", **common)
    b = tiny_sd1_kit.generate("a red circle, aspect ratio 1", **common)
    assert torch.equal(a.latents.tensor, b.latents.tensor) and "aspect ratio 1:1" in a.infotext


def test_parts_of_different_lengths_pad_as_a1111s_stack_conds(tiny_sd1_kit):
    """A 2-chunk part AND a 1-chunk part: A1111 repeats the shorter part's last token vector (``stack_conds``);
    with a 2-chunk negative no cond/uncond padding enters."""
    kit, seed = tiny_sd1_kit, 6
    long_part = ", ".join(["a red circle"] * 30)  # > 75 tokens: two chunks
    prompt, negative = f"{long_part} AND a blue square :0.8", ", ".join(["blurry"] * 50)
    assert kit.prompts.chunks(long_part) == 2 == kit.prompts.chunks(negative)
    gen = kit.generate(prompt, negative, seed=seed, steps=3, cfg=5.0, sampler="euler", width=32, height=32)
    first, second = kit.prompts.encode(long_part), kit.prompts.encode(" a blue square")
    last = second.embeds[:, -1:].expand(-1, first.embeds.shape[1] - second.embeds.shape[1], -1)
    stacked = TextConditioning(torch.cat([second.embeds, last], 1))
    model = A1111CFGDenoiser(kit.denoiser, [first, stacked], [1.0, 0.8], kit.prompts.encode(negative), 5.0)
    _, _, sigmas = kit.parameters(prompt, steps=3, sampler="euler", width=32, height=32)
    expected = K.sample_euler(model, randn([seed], (4, 4, 4)) * sigmas[0], sigmas, disable=True)
    torch.testing.assert_close(gen.latents.tensor, expected, rtol=1e-5, atol=1e-5)


def test_many_parts_count_against_the_batch_limit(tiny_sd1_kit):
    with pytest.raises(ValueError, match="AND parts x batch_size"):
        tiny_sd1_kit.generate(" AND ".join(["x"] * 33), seed=1, steps=2, width=32, height=32, batch_size=2)


def test_unsupported_places_say_so(tiny_sd1_kit):
    with pytest.raises(NotImplementedError, match="prompt editing"):
        tiny_sd1_kit.generate("a [cat:dog:0.5] AND a hat", seed=1, steps=3, width=32, height=32)
    for cond_only in (None, True):
        with capture_attention(tiny_sd1_kit, cond_only=cond_only), pytest.raises(NotImplementedError, match="capture"):
            tiny_sd1_kit.generate("a cat AND a hat", seed=1, steps=3, width=32, height=32)
    tiny_sd1_kit.generate("a cat AND a hat", seed=1, steps=2, width=32, height=32)  # after the block: composes
    with pytest.raises(NotImplementedError, match="sweeps"):
        sweep(tiny_sd1_kit, "a cat AND a dog", x=("cfg", [3.0, 6.0]), steps=2, width=32, height=32)
