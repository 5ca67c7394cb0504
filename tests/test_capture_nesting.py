"""Attention captures nest and exit in any order; a reused Trace holds one run (issue #15)."""

from __future__ import annotations

import itertools

import pytest
import torch

from sdkit.attention import CaptureProcessor, capture_attention, cross_attention_modules
from sdkit.trace import Trace

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(width=64, height=48, steps=3, seed=3, cfg=6.0)
PROMPT = "a red circle on a blue square"


def _chain(processor) -> list:
    """The captures wrapped around a module's processor, outermost first, and the processor at the bottom."""
    out = []
    while isinstance(processor, CaptureProcessor):
        out.append(processor.capture)
        processor = processor.inner
    return [*out, processor]


def test_out_of_order_exit_restores_the_original_processors(tiny_sd1_kit):
    unet = tiny_sd1_kit.unet
    before = dict(unet.attn_processors)  # diffusers' own view: every attention module's processor
    reference = tiny_sd1_kit.generate(PROMPT, **SMALL).latents.tensor
    outer, inner = capture_attention(tiny_sd1_kit), capture_attention(tiny_sd1_kit)
    outer_maps, inner_maps = outer.__enter__(), inner.__enter__()
    both = tiny_sd1_kit.generate(PROMPT, **SMALL).latents.tensor
    outer.__exit__(None, None, None)  # the outer block ends first
    names = cross_attention_modules(unet)
    for name, module in names.items():  # the inner capture now wraps the original processor directly
        assert _chain(module.processor) == [inner, before[f"{name}.processor"]]
    inner_only = tiny_sd1_kit.generate(PROMPT, **SMALL).latents.tensor
    inner.__exit__(None, None, None)
    after = dict(unet.attn_processors)
    assert list(after) == list(before)
    assert all(after[k] is before[k] for k in before)  # the very same objects, so the same types
    assert "encode_pair" not in vars(tiny_sd1_kit.prompts)
    # while both were open both recorded; after its exit the outer one recorded nothing more
    assert len(outer_maps) == 3 * len(names) and len(inner_maps) == 6 * len(names)
    assert torch.equal(outer_maps[(2, next(iter(names)))], inner_maps[(2, next(iter(names)))])
    assert outer_maps.tokens is not None and inner_maps.tokens is not None
    # capture never changes what the UNet computes
    assert torch.equal(both, reference) and torch.equal(inner_only, reference)


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_any_exit_order_of_three_captures(tiny_sd1_kit, order):
    unet, prompts = tiny_sd1_kit.unet, tiny_sd1_kit.prompts
    before = dict(unet.attn_processors)
    captures = [capture_attention(tiny_sd1_kit, layers=[], steps=[]) for _ in range(3)]
    for capture in captures:
        capture.__enter__()
    still_open = list(captures)
    for k in order:
        captures[k].__exit__(None, None, None)
        still_open.remove(captures[k])
        for name, module in cross_attention_modules(unet).items():  # the open ones, last entered outermost
            assert _chain(module.processor) == [*reversed(still_open), before[f"{name}.processor"]]
        watches, watch = [], vars(prompts).get("encode_pair")
        while hasattr(watch, "capture"):  # prompt watches down to the class's own encode_pair
            watches.append(watch.capture)
            watch = watch.inner
        assert watches == list(reversed(still_open))
    after = dict(unet.attn_processors)
    assert all(after[k] is before[k] for k in before) and list(after) == list(before)
    assert "encode_pair" not in vars(prompts)


def test_prompt_watches_stay_linked_after_an_out_of_order_exit(tiny_sd1_kit):
    first, second = capture_attention(tiny_sd1_kit, layers=[], steps=[]), capture_attention(tiny_sd1_kit)
    with first as first_maps:
        second_maps = second.__enter__()
    # first exited while second is open: second still learns the prompt (tokens) and the uncond (cond half)
    tiny_sd1_kit.generate("a green triangle", **SMALL)
    second.__exit__(None, None, None)
    assert first_maps.tokens is None
    assert second_maps.tokens is not None and second_maps.tokens.text == "a green triangle"
    layer = next(iter(second_maps.sizes))
    assert second_maps[(0, layer)].shape[0] == 1  # [uncond, cond] was recognised: cond half only


def test_a_capture_cannot_enter_twice(tiny_sd1_kit):
    capture = capture_attention(tiny_sd1_kit, layers=[], steps=[])
    with capture, pytest.raises(RuntimeError, match="already installed"):
        capture.__enter__()
    assert not any(isinstance(p, CaptureProcessor) for p in tiny_sd1_kit.unet.attn_processors.values())


def test_reused_trace_holds_one_run(tiny_sd1_kit):
    trace = Trace()
    first = tiny_sd1_kit.generate(PROMPT, trace=trace, **SMALL)
    assert len(trace) == 3
    second = tiny_sd1_kit.generate("a blue square", trace=trace, **{**SMALL, "steps": 2})
    fresh = tiny_sd1_kit.generate("a blue square", trace=True, **{**SMALL, "steps": 2}).trace
    assert second.trace is trace and first.trace is trace
    assert len(trace) == 2 and [s.i for s in trace.steps] == [0, 1]
    assert len(trace.cfg_parts) == len(fresh.cfg_parts) == 2
    assert torch.equal(trace.x, fresh.x) and torch.equal(trace.denoised, fresh.denoised)
    assert trace.sigmas.tolist() == fresh.sigmas.tolist()


def test_start_keeps_live_attention_and_drops_stale_attention(tiny_sd1_kit):
    trace = Trace()
    with capture_attention(tiny_sd1_kit, layers=["up_blocks"], trace=trace) as maps:
        tiny_sd1_kit.generate(PROMPT, trace=trace, **SMALL)
        assert trace.attention is maps and maps.steps == [0, 1, 2]
        assert trace.start() is trace and trace.attention is maps  # the block is open: its maps stay
    assert len(trace) == 0 and trace.cfg_parts == [] and trace.attention is maps
    trace.start()  # a later run without a capture: the earlier block's maps do not describe it
    assert trace.attention is None
