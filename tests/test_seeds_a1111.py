"""Seeds and noise against AUTOMATIC1111's CPU RNG scheme, bit for bit.

The oracle below restates the algorithm of A1111's ``ImageRNG`` (stable-diffusion-webui ``modules/rng.py``, v1.6+,
``randn_source = "CPU"``) with torch's *global* generator, the way A1111 itself draws most of it
(``torch.manual_seed(seed); torch.randn(shape)``), so it shares no code path with ``sdkit.noise``'s generator
objects. Its steps, as published:

- image ``i`` gets a CPU generator seeded ``seeds[i]`` (``seed + i``; with a variation seed every image keeps
  ``seed`` and the subseeds count up instead, ``modules/processing.py``);
- the starting noise is that generator's first draw; with a variation seed, a second noise from ``subseed`` is
  mixed in by ``slerp(strength, noise, subnoise)``, normalised along dim 1 of ``[c, h, w]``;
- with "Seed resize from" (w, h) the noise (and subnoise) is drawn at ``(c, h // 8, w // 8)`` by the global
  generator, then pasted centred into the generator's first full-size draw;
- k-diffusion's ``torch.randn_like`` is hijacked (``sd_samplers_common.TorchHijack``) to return ``rng.next()``: the
  following draws of the same generators, or of generators re-seeded ``seed + ENSD`` when ENSD is set.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from k_diffusion import sampling as k_sampling

from sdkit import samplers
from sdkit.loading import read_image_parameters
from sdkit.metadata import parse
from sdkit.noise import ImageNoise, SeedSpec, noise_sampler_for, randn

pytestmark = pytest.mark.usefixtures("one_thread")

SEEDS = [0, 7, 4376845645, 2**32 - 1]  # 4376845645: the article's example seed (above 2^32)
SHAPE = (4, 8, 8)


# ------------------------------------------------------------------------------------------------ the oracle
def a1111_slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    low_unit = low / torch.norm(low, dim=1, keepdim=True)
    high_unit = high / torch.norm(high, dim=1, keepdim=True)
    cos = (low_unit * high_unit).sum(1)
    if cos.mean() > 0.9995:
        return low * val + high * (1 - val)
    angle = torch.acos(cos)
    sin = torch.sin(angle)
    return (torch.sin((1.0 - val) * angle) / sin).unsqueeze(1) * low + (torch.sin(val * angle) / sin).unsqueeze(
        1
    ) * high


def global_randn(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(shape)


class A1111Rng:
    """A1111's ImageRNG (CPU source), restated over torch's global generator where A1111 uses it."""

    def __init__(self, shape, seeds, subseeds=None, strength=0.0, resize_hw=(0, 0), ensd=0):
        self.shape, self.seeds, self.subseeds, self.strength = shape, seeds, subseeds, strength
        self.resize_hw, self.ensd = resize_hw, ensd
        self.generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        self.drawn = 0

    def _first(self) -> torch.Tensor:
        c, h, w = self.shape
        rh, rw = self.resize_hw
        small = (c, rh // 8, rw // 8) if rh > 0 and rw > 0 else self.shape
        out = []
        with torch.random.fork_rng(devices=[]):
            for i, seed in enumerate(self.seeds):
                sub = None
                if self.subseeds is not None and self.strength != 0:
                    sub = global_randn(self.subseeds[i] if i < len(self.subseeds) else 0, small)
                if small == self.shape:
                    torch.manual_seed(seed)
                    noise = torch.randn(self.shape, generator=self.generators[i])
                else:
                    noise = global_randn(seed, small)
                if sub is not None:
                    noise = a1111_slerp(self.strength, noise, sub)
                if small != self.shape:
                    torch.manual_seed(seed)
                    full = torch.randn(self.shape, generator=self.generators[i])
                    dx, dy = (w - small[2]) // 2, (h - small[1]) // 2
                    cols = small[2] if dx >= 0 else small[2] + 2 * dx
                    rows = small[1] if dy >= 0 else small[1] + 2 * dy
                    tx, ty, sx, sy = max(dx, 0), max(dy, 0), max(-dx, 0), max(-dy, 0)
                    full[:, ty : ty + rows, tx : tx + cols] = noise[:, sy : sy + rows, sx : sx + cols]
                    noise = full
                out.append(noise)
        if self.ensd:
            self.generators = [torch.Generator("cpu").manual_seed(int(s) + self.ensd) for s in self.seeds]
        return torch.stack(out)

    def next(self) -> torch.Tensor:
        self.drawn += 1
        if self.drawn == 1:
            return self._first()
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])


class RandnLikeHijack:
    """A1111's TorchHijack: k-diffusion's ``torch.randn_like`` returns the image RNG's next draw."""

    def __init__(self, rng: A1111Rng) -> None:
        self.rng, self.draws = rng, []

    def __getattr__(self, name: str):
        return getattr(torch, name)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        self.draws.append(self.rng.next())
        return self.draws[-1]


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The ideal denoiser for N(0, 1) data: x / (1 + sigma^2)."""
    return x / (1 + sigma.view(-1, 1, 1, 1) ** 2)


class Recorder:
    """Wraps a noise sampler and keeps each draw."""

    def __init__(self, inner) -> None:
        self.inner, self.draws = inner, []

    def __call__(self, sigma=None, sigma_next=None) -> torch.Tensor:
        self.draws.append(self.inner(sigma, sigma_next))
        return self.draws[-1]


# ------------------------------------------------------------------------------------------------ the tests
def test_torch_cpu_seeding_is_the_published_one():
    """A fact from outside: torch.manual_seed(0); torch.randn(4) is [1.5410, -0.2934, -2.1788, 0.5684]."""
    assert torch.allclose(randn([0], (4,))[0], torch.tensor([1.5410, -0.2934, -2.1788, 0.5684]), atol=1e-4)


@pytest.mark.parametrize("seed", SEEDS)
def test_starting_noise_and_euler_a_step_noise_equal_a1111_bit_for_bit(seed):
    sigmas = k_sampling.get_sigmas_karras(5, 0.03, 14.6)
    # A1111: x = rng.next() * sigma_max, then k-diffusion's sample_euler_ancestral with randn_like hijacked
    rng = A1111Rng(SHAPE, [seed + i for i in range(3)])
    theirs_start = rng.next()
    hijack = RandnLikeHijack(rng)
    original = k_sampling.torch
    k_sampling.torch = hijack
    try:
        theirs = k_sampling.sample_euler_ancestral(gaussian_denoiser, theirs_start * sigmas[0], sigmas, disable=True)
    finally:
        k_sampling.torch = original
    draws = hijack.draws
    # sdkit
    noise = ImageNoise.for_batch(seed, 3, SHAPE)
    ours_start = noise.first()
    recorder = Recorder(noise)
    ours = samplers.sample("euler_ancestral", gaussian_denoiser, ours_start * sigmas[0], sigmas, noise_sampler=recorder)
    assert torch.equal(ours_start, theirs_start)
    assert len(recorder.draws) == len(draws) == 4  # no draw after the last step (sigma_next = 0)
    for k in range(3):
        assert torch.equal(recorder.draws[k], draws[k]), f"step noise {k}"
        assert not torch.equal(recorder.draws[k], ours_start), "a step re-added the starting noise"
        for i in range(3):
            assert not torch.equal(recorder.draws[k][i], ours_start[i])
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5)
    # the same stream from noise_sampler_for, the helper notebooks use after randn()
    later = noise_sampler_for(seed, ours_start)
    assert torch.equal(later(), recorder.draws[0])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
def test_variation_seed_equals_a1111_slerp(seed, strength):
    subseed = 1234567
    seeds = [seed] * 3 if strength else [seed + i for i in range(3)]  # A1111's all_seeds rule (processing.py)
    rng = A1111Rng(SHAPE, seeds, subseeds=[subseed + i for i in range(3)], strength=strength)
    theirs_start, theirs_steps = rng.next(), [rng.next() for _ in range(2)]
    spec = SeedSpec(seed, subseed, strength)
    noise = ImageNoise.for_batch(spec, 3, SHAPE)
    assert torch.equal(noise.first(), theirs_start)
    assert all(torch.equal(noise(), t) for t in theirs_steps)
    if strength == 0.0:
        assert torch.equal(theirs_start, randn([seed + i for i in range(3)], SHAPE))  # no variation: seed + i
    if strength == 0.5:  # a real mix: neither noise, and still unit variance
        plain = randn([seed], SHAPE)[0]
        assert not torch.equal(theirs_start[0], plain)
        assert abs(float(theirs_start.std()) - 1.0) < 0.15
    # image i of the batch alone: same seed, subseed + i
    single = ImageNoise.for_batch(spec.for_image(2), 1, SHAPE).first()
    assert torch.equal(single[0], theirs_start[2])


@pytest.mark.parametrize("resize", [(48, 80), (96, 40), (72, 72), (64, 64)])
def test_seed_resize_from_equals_a1111(resize):
    w, h = resize  # target latents 8x8 (64 px): smaller, larger, odd differences and equal sizes
    for subseed, strength in ((None, 0.0), (99, 0.3)):
        seeds = [5, 5] if strength else [5, 6]
        subseeds = None if subseed is None else [99, 100]
        rng = A1111Rng(SHAPE, seeds, subseeds=subseeds, strength=strength, resize_hw=(h, w))
        theirs = [rng.next() for _ in range(3)]
        noise = ImageNoise.for_batch(SeedSpec(5, subseed, strength, (w, h)), 2, SHAPE)
        ours = [noise.first(), noise(), noise()]
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_ensd_reseeds_the_step_noise_as_a1111():
    rng = A1111Rng(SHAPE, [42, 43], ensd=31337)
    theirs = [rng.next() for _ in range(3)]
    noise = ImageNoise.for_batch(SeedSpec(42, eta_noise_seed_delta=31337), 2, SHAPE)
    ours = [noise.first(), noise(), noise()]
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert torch.equal(theirs[1], randn([42 + 31337, 43 + 31337], SHAPE))


def test_seeds_alias_modulo_2_32_as_torch_and_a1111_do():
    """torch's CPU generator keeps a seed's low 32 bits; sdkit accepts seeds up to 2^64 and says so."""
    assert torch.equal(randn([4376845645], SHAPE), randn([4376845645 - 2**32], SHAPE))
    assert torch.equal(randn([4376845645], SHAPE), A1111Rng(SHAPE, [4376845645]).next())


@pytest.fixture(scope="module")
def recording_sampler():
    calls: dict[str, list[torch.Tensor]] = {"x": [], "draws": []}

    def euler_a_recorded(denoiser, x, sigmas, noise_sampler=None):
        calls["x"].append(x)
        recorder = Recorder(noise_sampler)
        calls["draws"].append(recorder.draws)
        yield from samplers.euler_ancestral(denoiser, x, sigmas, noise_sampler=recorder)

    euler_a_recorded.__name__ = "euler_ancestral"
    return euler_a_recorded, calls


def test_generate_draws_the_a1111_noise(tiny_sd1_kit, recording_sampler):
    """Kit.generate wires the same scheme: starting noise and each Euler a step noise, batch of 3."""
    sampler, calls = recording_sampler
    seed = 4376845645
    gen = tiny_sd1_kit.generate("a red circle", seed=seed, steps=4, sampler=sampler, width=64, height=48,
                                batch_size=3, subseed=77, subseed_strength=0.25)  # fmt: skip
    _, _, sigmas = tiny_sd1_kit.parameters("a red circle", steps=4, sampler="euler_ancestral", width=64, height=48)
    rng = A1111Rng((4, 6, 8), [seed] * 3, subseeds=[77, 78, 79], strength=0.25)
    assert torch.equal(calls["x"][-1], rng.next() * sigmas[0])
    draws = calls["draws"][-1]
    assert len(draws) == 3 and all(torch.equal(d, rng.next()) for d in draws)
    assert gen.parameters.subseed == 77 and gen.parameters.subseed_strength == 0.25
    text = gen.infotext
    assert f"Seed: {seed}," in text and "Variation seed: 77" in text and "Variation seed strength: 0.25" in text
    back = parse(text)
    assert (back.seed, back.subseed, back.subseed_strength) == (seed, 77, 0.25)


def test_a1111_infotext_seed_fields_regenerate(tiny_sd1_kit):
    """An A1111-style infotext with variation seed, seed resize and ENSD regenerates with the same noise."""
    text = (
        "a red circle\nNegative prompt: blurry\n"
        "Steps: 3, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 4376845645, Size: 64x48, "
        "Model: tiny, Variation seed: 12, Variation seed strength: 0.4, Seed resize from: 80x40, ENSD: 31337"
    )
    params = parse(text)
    assert (params.subseed, params.subseed_strength, params.seed_resize_from, params.eta_noise_seed_delta) == (
        12, 0.4, (80, 40), 31337,
    )  # fmt: skip
    kwargs = params.generate_kwargs()
    kwargs.pop("model")
    a = tiny_sd1_kit.generate(**kwargs)
    b = tiny_sd1_kit.generate(**kwargs)
    c = tiny_sd1_kit.generate(**{**kwargs, "eta_noise_seed_delta": 0})
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    assert not np.array_equal(np.asarray(a.images[0]), np.asarray(c.images[0]))  # ENSD changes Euler a's steps
    assert "Seed resize from: 80x40" in a.infotext and "ENSD: 31337" in a.infotext


def test_seed_and_seed_plus_2_32_give_the_same_image_and_keep_their_own_infotext(tiny_sd1_kit):
    a = tiny_sd1_kit.generate("a blue square", seed=7, steps=3, width=64, height=48, sampler="euler_ancestral")
    b = tiny_sd1_kit.generate("a blue square", seed=7 + 2**32, steps=3, width=64, height=48, sampler="euler_ancestral")
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    assert "Seed: 4294967303," in b.infotext and b.seed == 7 + 2**32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(subseed_strength=1.5), "subseed_strength"),
        (dict(subseed_strength=True), "subseed_strength"),
        (dict(subseed=-5, subseed_strength=0.5), "subseed"),
        (dict(seed_resize_from=(0, 64)), "seed_resize_from"),
        (dict(seed_resize_from="64x64"), "seed_resize_from"),
        (dict(eta_noise_seed_delta=-1), "eta_noise_seed_delta"),
    ],
)
def test_bad_seed_options_name_the_parameter(tiny_sd1_kit, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        tiny_sd1_kit.generate("x", seed=1, steps=2, width=64, height=48, **kwargs)


def test_random_subseed_is_drawn_and_recorded(tiny_sd1_kit):
    gen = tiny_sd1_kit.generate("x", seed=1, steps=2, width=64, height=48, subseed_strength=0.5)
    assert isinstance(gen.parameters.subseed, int) and 0 <= gen.parameters.subseed < 2**32
    again = tiny_sd1_kit.generate(**{**parse(gen.infotext).generate_kwargs(), "model": None})
    assert np.array_equal(np.asarray(gen.images[0]), np.asarray(again.images[0]))


def test_variation_seed_on_one_row_latents_stays_finite():
    """8-px-high images have one latent row: A1111's slerp divides 0 by 0 there; sdkit mixes linearly instead."""
    noise = ImageNoise.for_batch(SeedSpec(3, 5, 0.5), 2, (4, 1, 6)).first()
    low, high = randn([3], (4, 1, 6))[0], randn([5], (4, 1, 6))[0]
    assert torch.isfinite(noise).all()
    assert torch.allclose(noise[0], low * 0.5 + high * 0.5)


@pytest.mark.parametrize("variation", [False, True])
def test_each_image_of_a_batch_carries_its_own_seed(tiny_sd1_kit, tmp_path, variation):
    """As A1111 writes them: image i's file says its own Seed (or Variation seed) and Batch pos; it regenerates as
    the first image of a batch of the same size."""
    extra = dict(subseed=40, subseed_strength=0.3) if variation else {}
    gen = tiny_sd1_kit.generate("a red circle", seed=5, steps=3, width=32, height=32, batch_size=3,
                                sampler="euler_ancestral", **extra)  # fmt: skip
    path = gen.save(str(tmp_path / "b1.png"), index=1)
    text = read_image_parameters(path)
    own = "Seed: 5," if variation else "Seed: 6,"
    assert own in text and "Batch size: 3" in text and "Batch pos: 1" in text
    assert ("Variation seed: 41," in text) == variation
    again = tiny_sd1_kit.generate(**{**parse(text).generate_kwargs(), "model": None})
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(gen.images[1]))


def test_the_kit_docstring_names_a_load_vae_that_exists(tiny_sd1_kit, tiny_sd1_folder):
    """``Kit``'s docstring says ``kit.vae = sdkit.load_vae(...)``: that call works and swaps in a VAE."""
    import sdkit
    from sdkit.kit import Kit

    assert "sdkit.load_vae(" in (Kit.__doc__ or "") + (sys.modules["sdkit.kit"].__doc__ or "")
    vae = sdkit.load_vae(str(tiny_sd1_folder / "vae"))
    assert vae.space == tiny_sd1_kit.vae.space
