"""Prompt editing ``[a:b:0.5]`` switches the conditioning at the middle step, seen in the trace and in what the
UNet actually receives."""

from __future__ import annotations

import torch


def test_prompt_editing_switches_at_the_middle_step(tiny_sd1_kit):
    kit = tiny_sd1_kit
    seen: list[torch.Tensor] = []
    unet = kit.denoiser.model.unet
    handle = unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["encoder_hidden_states"].detach().clone()), with_kwargs=True
    )
    try:
        gen = kit.generate("[a red circle:a blue square:0.5]", seed=3, steps=10, width=64, height=64, trace=True)
    finally:
        handle.remove()
    # A1111's rule: "a red circle" for steps 0..5 (end step int(0.5 * 10) = 5, inclusive), then "a blue square".
    assert gen.trace.prompt_entries == [0] * 6 + [1] * 4
    red = kit.prompts.encode("a red circle").embeds
    blue = kit.prompts.encode("a blue square").embeds
    assert len(seen) == 10  # Euler: one batched [uncond, cond] UNet call per step
    for i, states in enumerate(seen):
        expected = red if i <= 5 else blue
        assert torch.equal(states[1:2], expected), f"step {i} used the wrong prompt"
    # A plain prompt gives no schedule and the same image as its first entry alone up to the switch.
    plain = kit.generate("a red circle", seed=3, steps=10, width=64, height=64, trace=True)
    assert plain.trace.prompt_entries == []
    assert torch.equal(plain.trace[5].x_next, gen.trace[5].x_next)
    assert not torch.equal(plain.trace[6].x_next, gen.trace[6].x_next)
