"""Fuzzing ``Kit.generate`` on the tiny SD1 model: any mix of arguments either gives finite images of the asked
size, or fails with a clear error (ValueError / TypeError / NotImplementedError, one line)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from sdkit.samplers import SAMPLERS
from sdkit.schedules import SCHEDULES

CLEAR_ERRORS = (ValueError, TypeError, NotImplementedError)
PROMPT_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs",))
PROMPTS = st.one_of(
    st.text(PROMPT_CHARS, max_size=40),
    st.text(alphabet="ab []():|,0.5-_", max_size=30),  # prompt syntax: weights, editing, alternation
    st.sampled_from([None, 3, b"x"]),
)
SIZES = st.one_of(st.sampled_from([8, 16, 32, 48, 64]), st.integers(-8, 72), st.sampled_from([None, 64.0, "64"]))
NUMBERS = st.one_of(st.floats(-20, 30), st.sampled_from([math.nan, math.inf, "7", None, True]))
IMAGES = st.sampled_from(
    [
        None,
        PILImage.new("RGB", (32, 32), (200, 10, 10)),
        PILImage.new("LA", (24, 16)),
        PILImage.new("RGB", (30, 32)),
        np.full((16, 16, 3), 0.5, np.float32),
        torch.rand(3, 8, 16),
        "not an image",
    ]
)

ARGUMENTS = st.fixed_dictionaries(
    {
        "prompt": PROMPTS,
        "negative_prompt": st.one_of(st.text(PROMPT_CHARS, max_size=10), st.none()),
        "seed": st.one_of(st.integers(-3, 2**64 + 2), st.sampled_from([1.5, "1", None])),
        "steps": st.one_of(st.integers(-1, 3), st.sampled_from([None, 2.0])),
        "cfg": NUMBERS,
        "sampler": st.one_of(st.sampled_from([*SAMPLERS, "Euler a", "DPM++ 2M Karras", "nope", 7])),
        "schedule": st.one_of(st.sampled_from([None, *SCHEDULES, "nope"]), st.just(torch.tensor([3.0, 0.5, 0.0]))),
        "width": SIZES,
        "height": SIZES,
        "batch_size": st.one_of(st.integers(-1, 2), st.just(1.0)),
        "init_image": IMAGES,
        "strength": st.one_of(st.none(), st.floats(-0.5, 1.5), st.just(math.nan)),
        "mask": st.sampled_from([None, PILImage.new("L", (32, 32), 255), np.ones((8, 8), bool)]),
    }
)

VALID_ARGUMENTS = st.fixed_dictionaries(
    {
        "prompt": st.one_of(st.text(PROMPT_CHARS, max_size=40), st.text(alphabet="ab []():|,0.5-_", max_size=30)),
        "negative_prompt": st.text(PROMPT_CHARS, max_size=10),
        "seed": st.one_of(st.just(-1), st.integers(0, 2**64 - 1)),
        "steps": st.integers(1, 3),
        "cfg": st.floats(-5, 15),
        "sampler": st.sampled_from([*SAMPLERS, "Euler a", "DPM++ 2M Karras", "DPM++ SDE Exponential"]),
        "schedule": st.sampled_from([None, *SCHEDULES]),
        "width": st.integers(1, 5).map(lambda k: 8 * k),
        "height": st.integers(1, 5).map(lambda k: 8 * k),
        "batch_size": st.integers(1, 2),
    },
    optional={
        "init_image": st.sampled_from([PILImage.new("RGB", (32, 32), (200, 10, 10)), torch.rand(3, 8, 16)]),
        "strength": st.floats(0, 1),
        "mask": st.sampled_from([PILImage.new("L", (32, 32), 255), np.ones((8, 16), bool)]),
    },
)


def check(kwargs: dict[str, Any], kit: Any) -> bool:
    """Generate; True if it gave images, False after a clear one-line error (anything else fails the test)."""
    try:
        out = kit.generate(kwargs.pop("prompt"), **kwargs)
    except CLEAR_ERRORS as e:
        message = str(e)
        assert message and "\n" not in message, repr(message)
        return False
    size = (out.parameters.width, out.parameters.height)
    assert len(out.images) == out.parameters.batch_size and all(im.size == size for im in out.images)
    if out.latents is not None:
        assert bool(torch.isfinite(out.latents.tensor).all())
    assert f"Seed: {out.seed}" in out.infotext
    return True


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(VALID_ARGUMENTS)
def test_valid_arguments_generate(tiny_sd1_kit, kwargs: dict[str, Any]):
    init = kwargs.get("init_image")
    if init is None:
        kwargs.pop("strength", None), kwargs.pop("mask", None)
    elif "mask" in kwargs:  # a mask must match the init image's size
        kwargs["mask"] = PILImage.new("L", init.size if isinstance(init, PILImage.Image) else (16, 8), 255)
    prompt = kwargs["prompt"]
    # valid arguments generate; only prompt editing ([a:b:0.5]) with an init image is not implemented (yet)
    assert check(kwargs, tiny_sd1_kit) or ("[" in prompt and init is not None)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(ARGUMENTS)
def test_generate_never_crashes_unclearly(tiny_sd1_kit, kwargs: dict[str, Any]):
    prompt = kwargs.pop("prompt")
    if kwargs["negative_prompt"] is None:
        kwargs.pop("negative_prompt")
    for key in ("width", "height"):  # keep the run tiny: 8..72 px unless an init image sets the size
        if kwargs[key] is None and kwargs["init_image"] is None:
            kwargs[key] = 32
    check({"prompt": prompt, **kwargs}, tiny_sd1_kit)
