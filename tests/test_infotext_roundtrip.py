"""The infotext keeps its promises (issue #15): what sdkit writes reads back to the same parameters, and an image
regenerates bit for bit from its own PNG, for any prompt, number, name and option ``generate`` accepts.

Two property tests (hypothesis, derandomized): the text round trip ``parse(p.infotext()) == p`` over random
parameters, and the pixel round trip ``generate -> save -> metadata.read -> generate`` on the tiny model."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import sdkit.metadata as metadata
from sdkit.hires import LATENT_UPSCALERS, PIXEL_UPSCALERS, HiresFix
from sdkit.metadata import GenerationParameters, parse
from sdkit.samplers import SAMPLERS
from sdkit.samplers.names import SAMPLER_DISPLAY
from sdkit.schedules import SCHEDULES
from sdkit.text.prompt_syntax import prompt_schedule

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT_EXAMPLES = 600
PIXEL_EXAMPLES = int(os.environ.get("ROUNDTRIP_EXAMPLES", "150"))  # the README figure: ROUNDTRIP_EXAMPLES=500

CHARS = st.characters(codec="utf-8", exclude_categories=("Cs",))  # anything a PNG's UTF-8 text chunk holds
TRICKY = st.sampled_from(
    ["\n", "\r\n", ",", ", ", ":", '"', "\\", " ", "\t", "Negative prompt:", "\nNegative prompt: ", "Steps: 2, ",
     "\u2028", "\x85", "\x00", "{", "[", "中文", "BREAK", "(a:1.2)", "<lora:x:1>"]
)  # fmt: skip
TEXTS = st.lists(st.one_of(st.text(CHARS, max_size=8), TRICKY), max_size=6).map("".join)
FLOATS = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([7.0, 7.5, 7.123456789, 0.1 + 0.2, -0.0, 1e-300, 1 / 3]),
)
SEEDS = st.integers(0, 2**64 - 1)
SCHEDULE_NAMES = st.sampled_from(
    [*SCHEDULES, "Align Your Steps", "align-your-steps", "kl-optimal", "KL Optimal", "SGM Uniform", "Karras"]
)
UPSCALERS = st.sampled_from([*LATENT_UPSCALERS, *PIXEL_UPSCALERS, "R-ESRGAN 4x+", "4x-UltraSharp"])
EXTRA_KEYS = st.from_regex(r"[A-Za-z][A-Za-z0-9 _/-]{1,10}[A-Za-z0-9]", fullmatch=True).filter(
    lambda k: k not in metadata._KNOWN and not k.startswith("ControlNet")
)
EXTRA_VALUES = st.one_of(
    st.text(st.characters(categories=("L", "N"), include_characters=" .+-_()"), max_size=12).map(str.strip),
    TEXTS.map(lambda t: json.dumps(t, ensure_ascii=False)),  # A1111's quote()
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3).map(json.dumps),  # Hashes: {...}
)


HIRES_STEPS, HIRES_SCALES = st.integers(0, 50), st.floats(0.5, 4.0)


@st.composite
def hires_fixes(draw, steps=HIRES_STEPS, scale=HIRES_SCALES):
    resize = draw(st.one_of(st.none(), st.tuples(st.integers(0, 2048), st.integers(0, 2048))))
    if resize == (0, 0):
        resize = None
    return HiresFix(draw(scale), draw(steps), draw(st.floats(0, 1)), draw(UPSCALERS), resize)


@st.composite
def parameters(draw):
    strength_of_subseed = draw(st.one_of(st.just(0.0), st.floats(0, 1)))
    schedule = draw(SCHEDULE_NAMES)
    sigmas = draw(st.one_of(st.none(), st.lists(FLOATS, min_size=2, max_size=5).map(tuple)))
    hires = draw(st.one_of(st.none(), hires_fixes()))
    return GenerationParameters(
        prompt=draw(TEXTS),
        negative_prompt=draw(TEXTS),
        steps=draw(st.integers(1, 10_000)),
        sampler=draw(st.sampled_from(list(SAMPLER_DISPLAY))),
        schedule="custom" if sigmas is not None else schedule,
        cfg=draw(FLOATS),
        seed=draw(SEEDS),
        width=draw(st.integers(8, 8192)),
        height=draw(st.integers(8, 8192)),
        model=draw(st.one_of(st.just(""), TEXTS, st.sampled_from(["tiny\nmodel", "a, b", " lead", '"q"', "m:1"]))),
        batch_size=draw(st.integers(1, 64)),
        sigmas=sigmas,
        strength=None if hires is not None else draw(st.one_of(st.none(), st.floats(0, 1))),
        mask_blur=draw(st.one_of(st.none(), st.floats(0, 64))),
        subseed=draw(SEEDS) if strength_of_subseed else None,
        subseed_strength=strength_of_subseed,
        seed_resize_from=draw(st.one_of(st.none(), st.tuples(st.integers(1, 4096), st.integers(1, 4096)))),
        eta_noise_seed_delta=draw(st.one_of(st.just(0), SEEDS)),
        clip_skip=draw(st.integers(1, 12)),
        hires=hires,
        extra=tuple(draw(st.lists(st.tuples(EXTRA_KEYS, EXTRA_VALUES), max_size=3))),
    )


@settings(max_examples=TEXT_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(parameters())
def test_text_round_trip(params: GenerationParameters):
    text = params.infotext()
    assert parse(text) == params
    negative_lines = params.negative_prompt.count("\n") + 1 if params.negative_prompt else 0
    assert text.count("\n") == params.prompt.count("\n") + negative_lines + 1  # one line of fields, whatever they hold


def test_every_name_generate_accepts_reads_back(tiny_sd1_kit):
    """Sampler x schedule, in each spelling ``generate`` accepts, through the infotext and back."""
    samplers = [*SAMPLERS, *SAMPLER_DISPLAY.values(), "k_euler_a", "DPM++ 2M Karras", "Euler a"]
    spellings = [lambda k: k, lambda k: k.replace("_", "-"), lambda k: k.replace("_", " ").title()]
    schedules = [None, *(spell(k) for k in SCHEDULES for spell in spellings)]  # "Align Your Steps", "kl-optimal"
    checked = 0
    for sampler in samplers:
        for schedule in schedules:
            try:
                params, _, _ = tiny_sd1_kit.parameters("x", sampler=sampler, schedule=schedule, steps=4)
            except ValueError as e:  # a schedule with fewer distinct steps than asked: refused, not written
                assert "distinct steps" in str(e)
                continue
            back = parse(params.infotext())
            assert (back.sampler, back.schedule) == (params.sampler, params.schedule), (sampler, schedule)
            checked += 1
    assert checked > 400


def test_issue_15_cases(tiny_sd1_kit, tmp_path):
    kit = dataclasses.replace(tiny_sd1_kit, name="tiny\nmodel, v2")  # a model folder named with a newline
    args = dict(seed=5, steps=3, width=32, height=32, cfg=7.123456789, schedule="align-your-steps")
    gen = kit.generate("  leading spaces\nNegative prompt: in the prompt", "Negative prompt: twice", **args)
    assert "CFG scale: 7.123456789," in gen.infotext and "Schedule type: Align Your Steps" in gen.infotext
    kwargs = metadata.read(gen.save(str(tmp_path / "a.png")))
    assert kwargs["prompt"] == "  leading spaces\nNegative prompt: in the prompt"
    assert kwargs["negative_prompt"] == "Negative prompt: twice"
    assert (kwargs["cfg"], kwargs["schedule"], kwargs["model"]) == (7.123456789, "align_your_steps", kit.name)
    again = kit.generate(**kwargs)
    assert np.array_equal(np.asarray(gen.images[0]), np.asarray(again.images[0]))
    kl = kit.generate("Negative prompt: first line", **{**args, "cfg": 7.0, "schedule": "kl-optimal"})
    assert "CFG scale: 7," in kl.infotext and parse(kl.infotext) == kl.parameters
    assert "CFG scale: 7.5," in kit.generate("x", **{**args, "cfg": 7.5}).infotext


@st.composite
def generate_kwargs(draw):
    hires = draw(st.one_of(st.none(), hires_fixes(st.integers(0, 2), st.sampled_from([1.0, 1.25, 1.5, 2.0]))))
    if hires is not None and hires.resize_to is not None:
        hires = dataclasses.replace(hires, resize_to=tuple(min(v, 48) for v in hires.resize_to))
    subseed_strength = draw(st.one_of(st.just(0.0), st.floats(0, 1)))
    prompt = draw(TEXTS)
    steps = draw(st.integers(1, 3))
    assume(hires is None or len(prompt_schedule(prompt, steps)) < 2)  # prompt editing + hires: refused
    return dict(
        prompt=prompt,
        negative_prompt=draw(TEXTS),
        seed=draw(SEEDS),
        steps=steps,
        cfg=draw(st.floats(-5, 15)),
        sampler=draw(st.sampled_from(sorted(SAMPLERS))),
        schedule=draw(st.sampled_from(sorted(SCHEDULES))),
        # 8 px (one latent row) is left out: A1111's variation-seed slerp divides by sin(0) there (NaN), as A1111
        width=draw(st.sampled_from([16, 24, 32])),
        height=draw(st.sampled_from([16, 24, 32])),
        batch_size=draw(st.integers(1, 2)),
        subseed=draw(SEEDS) if subseed_strength else None,
        subseed_strength=subseed_strength,
        clip_skip=draw(st.integers(1, 3)),
        hires=hires,
    ), draw(st.sampled_from(["tiny", "", "tiny\nmodel", "models/a, b", "中文模型"]))


@settings(max_examples=PIXEL_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(generate_kwargs())
def test_png_regenerates_bit_identically(tiny_sd1_kit, tmp_path_factory, example):
    kwargs, name = example
    kit = dataclasses.replace(tiny_sd1_kit, name=name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # upscaler fallbacks
        try:
            gen = kit.generate(**kwargs)
        except ValueError as e:  # refused before anything is written: a schedule that cannot give the steps, a
            # hires strength so small that the schedule its steps are sliced from would exceed MAX_STEPS
            assume("distinct steps" not in str(e) and "hires denoising_strength" not in str(e))
            raise
        assert parse(gen.infotext) == gen.parameters
        path = gen.save(str(tmp_path_factory.mktemp("png") / "x.png"))
        again = kit.generate(**metadata.read(path))
    assert again.parameters == gen.parameters
    for a, b in zip(gen.images, again.images, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
