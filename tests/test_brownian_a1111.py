"""The DPM++ SDE samplers' step noise against AUTOMATIC1111's: a Brownian tree per image, seeded with its seed.

The oracle is A1111's own composition (stable-diffusion-webui 1.6+), restated: ``KDiffusionSampler.
create_noise_sampler`` builds k-diffusion's ``BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(),
seed=p.all_seeds[...])`` over the run's whole schedule (for img2img the schedule before the tail is cut), and
``sd_samplers_common.replace_torchsde_browinan`` makes torchsde draw with ``randn_local(seed, size)`` (the CPU RNG
source: a fresh CPU generator seeded ``seed``). k-diffusion's samplers then run on it. sdkit shares torchsde with
the oracle and nothing else.
"""

from __future__ import annotations

import functools

import k_diffusion.sampling as K
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from image_fixtures import gradient_image
from sampler_fixtures import GaussianDenoiser, a1111_sde_run

from sdkit import samplers
from sdkit.brownian import BROWNIAN, BrownianNoise, uses_brownian_noise
from sdkit.guidance import CFG
from sdkit.image import Image
from sdkit.noise import ImageNoise, SeedSpec, batch_seeds, randn
from sdkit.recipes import img2img
from sdkit.strength import strength_sigmas

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (4, 8, 8)
SDE_SAMPLERS = ["dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde"]


gaussian_denoiser = GaussianDenoiser(0.0, 1.0)  # the ideal denoiser for N(0, 1) data


@pytest.mark.parametrize("sampler", SDE_SAMPLERS)
@pytest.mark.parametrize("seeds", [[0, 1], [4376845645, 4376845646], [2**32 - 1]])
def test_step_noise_is_a1111s_bit_for_bit(sampler, seeds):
    sigmas = K.get_sigmas_karras(7, 0.03, 14.6)
    x = randn(seeds, SHAPE) * sigmas[0]
    theirs_draws: list[torch.Tensor] = []
    theirs = a1111_sde_run(sampler, gaussian_denoiser, x, sigmas, sigmas, seeds, record=theirs_draws)
    step_noise = ImageNoise(SHAPE, seeds).for_sampler(sampler, sigmas)
    assert isinstance(step_noise, BrownianNoise)
    ours_draws: list[torch.Tensor] = []

    def recorded(sigma, sigma_next):
        ours_draws.append(step_noise(sigma, sigma_next))
        return ours_draws[-1]

    ours = samplers.sample(sampler, gaussian_denoiser, x, sigmas, noise_sampler=recorded)
    assert len(ours_draws) == len(theirs_draws) >= 6
    for k, (a, b) in enumerate(zip(ours_draws, theirs_draws, strict=True)):
        assert torch.equal(a, b), f"draw {k}"
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_only_the_dpmpp_sde_family_uses_the_tree():
    assert all(uses_brownian_noise(name) for name in [*SDE_SAMPLERS, "dpmpp_2m_sde_heun", " DPMPP_SDE "])
    assert uses_brownian_noise(samplers.dpmpp_3m_sde)
    assert uses_brownian_noise(functools.partial(samplers.dpmpp_2m_sde, eta=0.5))
    assert not any(uses_brownian_noise(name) for name in ["euler_ancestral", "ddpm", "lcm", "euler", "nonsense"])

    def my_sampler(denoiser, x, sigmas, noise_sampler=None):  # a user's own: keeps the generator stream
        yield from samplers.dpmpp_sde(denoiser, x, sigmas, noise_sampler=noise_sampler)

    noise = ImageNoise(SHAPE, [3])
    assert noise.for_sampler(my_sampler, torch.linspace(10, 0, 4)) is noise
    marked = {name for name, fn in samplers.SAMPLERS.items() if uses_brownian_noise(fn)}
    assert marked == set(BROWNIAN)  # the names and the functions' marks agree
    assert noise.for_sampler("euler_ancestral", torch.linspace(10, 0, 4)) is noise


def test_the_first_tree_is_kept_for_a_refiner_continuing_the_run():
    noise = ImageNoise(SHAPE, [5])
    whole = torch.tensor([14.6, 6.0, 2.0, 0.5, 0.0])
    tree = noise.for_sampler("dpmpp_sde", whole)
    assert noise.for_sampler("dpmpp_2m_sde", whole[2:]) is tree  # the refiner's tail: same Brownian motion
    assert (tree.sigma_min, tree.sigma_max) == pytest.approx((0.5, 14.6))
    noise.to("cpu", torch.float64)
    assert tree(torch.tensor(2.0), torch.tensor(0.5)).dtype == torch.float64


def test_a_query_outside_the_span_is_refused():
    tree = BrownianNoise([1], SHAPE, 0.5, 10.0)
    with pytest.raises(ValueError, match="whole schedule"):
        tree(torch.tensor(20.0), torch.tensor(5.0))
    with pytest.raises(ValueError, match="sigma_min <= sigma_max"):
        BrownianNoise([1], SHAPE, 2.0, 1.0)
    point = BrownianNoise([1], SHAPE, 2.0, 2.0)  # a one-step schedule to 0: built, never asked
    with pytest.raises(ValueError, match="single sigma"):
        point(torch.tensor(2.0), torch.tensor(2.0))


@pytest.mark.parametrize("sampler", SDE_SAMPLERS)
def test_one_step_and_all_zero_schedules_need_no_tree(sampler):
    one_step = torch.tensor([14.6, 0.0])
    noise = ImageNoise(SHAPE, [2])
    x = noise.first() * one_step[0]
    out = samplers.sample(sampler, gaussian_denoiser, x, one_step, noise_sampler=noise.for_sampler(sampler, one_step))
    torch.testing.assert_close(out, gaussian_denoiser(x, one_step[:1].expand(1)))  # one step to 0: the estimate
    quiet = ImageNoise(SHAPE, [2])
    assert quiet.for_sampler(sampler, torch.zeros(3)) is quiet and quiet.brownian is None  # nothing to span


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.05, 14.0), min_size=3, max_size=3, unique=True), st.integers(0, 2**32 - 1))
def test_increments_add_up_as_a_brownian_motions(points, seed):
    """W(c) - W(a) = (W(c) - W(b)) + (W(b) - W(a)): the scaled noises over [a, b], [b, c] and [a, c] agree."""
    a, b, c = sorted(points)
    if min(b - a, c - b) < 1e-3:
        return
    tree = BrownianNoise([seed], SHAPE, 0.05, 14.0)
    t = {v: torch.tensor(v, dtype=torch.float32) for v in (a, b, c)}
    whole = tree(t[c], t[a]) * (c - a) ** 0.5
    parts = tree(t[c], t[b]) * (c - b) ** 0.5 + tree(t[b], t[a]) * (b - a) ** 0.5
    torch.testing.assert_close(whole, parts, rtol=1e-4, atol=1e-4)
    assert torch.equal(tree(t[a], t[c]), -tree(t[c], t[a]))  # the direction of the query flips the sign


def test_a_tree_keeps_images_close_across_step_counts():
    """Why A1111 uses it: the same seed at 10 and 14 steps lands much closer than with independent step noise."""

    def final(steps: int, brownian: bool) -> torch.Tensor:
        sigmas = K.get_sigmas_karras(steps, 0.03, 14.6)
        noise = ImageNoise(SHAPE, [7, 8])
        x = noise.first() * sigmas[0]
        step_noise = noise.for_sampler("dpmpp_2m_sde", sigmas) if brownian else noise
        return samplers.sample("dpmpp_2m_sde", gaussian_denoiser, x, sigmas, noise_sampler=step_noise)

    tree_drift = float((final(10, True) - final(14, True)).abs().mean())
    stream_drift = float((final(10, False) - final(14, False)).abs().mean())
    assert tree_drift < 0.5 * stream_drift, (tree_drift, stream_drift)


@pytest.mark.parametrize(("name", "sampler"), [("DPM++ SDE Karras", "dpmpp_sde"), ("DPM++ 2M SDE", "dpmpp_2m_sde")])
def test_generate_is_a1111s_txt2img(tiny_sd1_kit, name, sampler):
    kit, prompt, seed = tiny_sd1_kit, "a red circle", 4376845645
    gen = kit.generate(prompt, seed=seed, steps=5, cfg=6.0, sampler=name, width=32, height=48, batch_size=2)
    _, _, sigmas = kit.parameters(prompt, steps=5, sampler=name, width=32, height=48)
    cond, uncond = kit.prompts.encode_pair(prompt, "")
    model = CFG(kit.denoiser, cond.repeat(2), uncond.repeat(2), 6.0)
    seeds = batch_seeds(seed, 2)
    x = randn(seeds, (4, 6, 4)) * sigmas[0]
    expected = a1111_sde_run(sampler, model, x, sigmas, sigmas, seeds)
    # float64 step arithmetic here, float32 tensors in k-diffusion: 2e-5 apart on this model (other noise: ~1e-1)
    torch.testing.assert_close(gen.latents.tensor, expected, rtol=1e-4, atol=1e-4)
    # image 1 of the batch is the single image with seed + 1 ("deterministic across batch sizes")
    alone = kit.generate(prompt, seed=seed + 1, steps=5, cfg=6.0, sampler=name, width=32, height=48)
    torch.testing.assert_close(alone.latents.tensor[0], gen.latents.tensor[1], rtol=1e-4, atol=1e-4)


def test_a_variation_seed_leaves_the_trees_on_the_main_seed():
    """A1111 seeds the trees with ``p.all_seeds``: with a variation seed every image keeps ``seed``."""
    noise = ImageNoise.for_batch(SeedSpec(11, subseed=40, subseed_strength=0.3), 2, SHAPE)
    tree = noise.for_sampler("dpmpp_sde", torch.tensor([10.0, 1.0, 0.0]))
    assert tree.seeds == [11, 11]


def test_img2img_trees_span_the_whole_schedule(tiny_sd1_kit):
    kit, seed, steps, strength = tiny_sd1_kit, 21, 6, 0.5
    init = Image.from_pil(gradient_image())
    cond, uncond = kit.prompts.encode_pair("a blue square", "")
    sigmas = K.get_sigmas_karras(steps, 0.03, 14.6)
    ours = img2img(kit.denoiser, kit.vae, init, cond, uncond, sigmas=sigmas, strength=strength, strength_mode="a1111",
                   sampler="dpmpp_sde", seed=seed, cfg_scale=5.0)  # fmt: skip
    # A1111's sample_img2img: t_enc = int(strength * steps), tail sigmas[steps - t_enc - 1:], x = z + noise * tail[0]
    t_enc = int(strength * steps)
    tail = sigmas[steps - t_enc - 1 :]
    assert torch.equal(tail, strength_sigmas(sigmas, strength, "a1111"))
    z = kit.vae.encode(init).tensor
    x = z + randn([seed], z.shape[1:]) * tail[0]
    model = CFG(kit.denoiser, cond, uncond, 5.0)
    expected = a1111_sde_run("dpmpp_sde", model, x, tail, sigmas, [seed])
    torch.testing.assert_close(ours.tensor, expected, rtol=1e-4, atol=1e-4)
    tail_only = a1111_sde_run("dpmpp_sde", model, x, tail, tail, [seed])  # the span matters: a tail-only tree differs
    assert not np.allclose(tail_only.numpy(), expected.numpy(), atol=1e-3)
