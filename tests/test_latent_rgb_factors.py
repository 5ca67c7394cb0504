"""The embedded model's linear latent -> RGB preview factors (issue #16): fitted by least squares on world scenes,
shipped in its vae/config.json, and a preview that tracks the rendered colours (the world renderer is the
oracle) far better than the false-colour fallback."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import sdkit
from sdkit.image import Image
from sdkit.latents import Latents, LatentSpace
from sdkit.models.shapes import world
from sdkit.models.shapes.captions import COLORS
from sdkit.models.shapes.rgb_factors import fit_rgb_factors, preview_mae, solve, world_pairs
from sdkit.previews import preview
from sdkit.vae import RGB_BIAS_KEY, RGB_FACTORS_KEY, latent_space_from_config

pytestmark = pytest.mark.usefixtures("one_thread")

# Held-out error bounds (R, G, B, mean abs error in 0..1 units) on 64 scenes the fit never saw. Measured: about
# (0.15, 0.21, 0.26) for the fitted factors and (0.43, 0.48, 0.35) for the false-colour fallback.
BOUND = (0.2, 0.27, 0.3)


@pytest.fixture(scope="module")
def vae():
    return sdkit.load("shapes").vae


@pytest.fixture(scope="module")
def unseen(vae):
    return world_pairs(vae, 64, seed=2024)  # the fit uses seed 0: other scenes


def test_shipped_factors_are_read_into_the_latent_space(vae):
    space = vae.space
    assert space.rgb_factors is not None and len(space.rgb_factors) == 4
    assert all(len(row) == 3 for row in space.rgb_factors) and len(space.rgb_bias) == 3
    config = vae.model.config
    assert [list(r) for r in space.rgb_factors] == config[RGB_FACTORS_KEY]
    assert list(space.rgb_bias) == config[RGB_BIAS_KEY]


def test_linear_preview_of_unseen_scenes_is_close_and_beats_false_colour(vae, unseen):
    latents, colours = unseen  # colours: the rendered images averaged over each latent pixel's 8x8 patch
    shown = preview(Latents(latents, vae.space), "linear").tensor
    error = (shown - colours).abs().mean(dim=(0, 2, 3)).tolist()
    false_colour = preview_mae(replace(vae.space, rgb_factors=None, rgb_bias=(0.0, 0.0, 0.0)), latents, colours)
    for channel, e, bound, fc in zip("RGB", error, BOUND, false_colour, strict=True):
        assert e < bound, f"{channel}: mean abs error {e:.3f} >= {bound}"
        assert e < 0.75 * fc, f"{channel}: {e:.3f} is not clearly below the false-colour preview's {fc:.3f}"
    assert sum(error) / 3 < 0.55 * sum(false_colour) / 3


@pytest.mark.parametrize("background", ["black", "blue", "green", "purple"])
def test_red_circle_previews_red(vae, background):
    """A large red circle in the centre is red in the preview where the renderer put it. Dark backgrounds only:
    this VAE codes colour relative to the surroundings, so on white or yellow no linear map gets it right (see
    ``rgb_factors``'s docstring). Measured: about (0.35-0.44, 0.08-0.09, 0.0) against the rendered (0.88, 0.14, 0.14):
    the right hue, darker."""
    circle = world.Thing("circle", "red", "large", "center", 32.0, 32.0, 12.0, 0.5)
    image = world.render([world.Scene((circle,), background)])
    red = torch.tensor(COLORS["red"]).view(1, 3, 1, 1) / 255
    inside = F.avg_pool2d(((image - red).abs().amax(dim=1, keepdim=True) < 0.02).float(), 8)[0, 0] == 1
    assert int(inside.sum()) >= 4  # the latent pixels wholly covered by the circle
    latents = vae.encode(Image(image))
    r, g, b = preview(latents, "linear").tensor[0][:, inside].mean(dim=1).tolist()
    assert r > 0.3 and r > g + 0.2 and r > b + 0.2, (r, g, b)


def test_solve_recovers_known_factors():
    """Analytic oracle: colours made by known factors from random latents are solved back exactly."""
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(16, 4, 8, 8, generator=g)
    factors = torch.randn(4, 3, generator=g) * 0.3
    bias = torch.tensor([0.1, -0.2, 0.05])
    signed = torch.einsum("nchw,cr->nrhw", latents, factors) + bias.view(1, 3, 1, 1)
    got_factors, got_bias = solve(latents, (signed + 1) / 2)
    assert torch.allclose(torch.tensor(got_factors), factors, atol=1e-4)
    assert torch.allclose(torch.tensor(got_bias), bias, atol=1e-4)


def test_shipped_factors_are_what_the_refit_command_computes(vae):
    """``python -m sdkit.models.shapes.rgb_factors`` (defaults: 512 scenes, 128 held out, seed 0) reproduces the
    shipped factors, so they cannot silently go stale for the shipped VAE."""
    fit = fit_rgb_factors(vae)
    assert torch.allclose(torch.tensor(fit.factors), torch.tensor(vae.space.rgb_factors), atol=2e-4)
    assert torch.allclose(torch.tensor(fit.bias), torch.tensor(vae.space.rgb_bias), atol=2e-4)
    assert all(e < b for e, b in zip(fit.held_out_mae, BOUND, strict=True))
    assert all(e < 0.75 * fc for e, fc in zip(fit.held_out_mae, fit.false_colour_mae, strict=True))
    with pytest.raises(ValueError, match="held_out"):
        fit_rgb_factors(vae, scenes=8, held_out=8)


def test_malformed_factors_fail_with_the_key_named(vae):
    from diffusers.configuration_utils import FrozenDict

    base = dict(vae.model.config)
    with pytest.raises(ValueError, match=f"{RGB_FACTORS_KEY} must be 4 rows"):
        latent_space_from_config(FrozenDict({**base, RGB_FACTORS_KEY: [[1.0, 2.0, 3.0]] * 3}), "shapes")
    with pytest.raises(ValueError, match=f"{RGB_FACTORS_KEY} must be 4 rows"):
        latent_space_from_config(FrozenDict({**base, RGB_FACTORS_KEY: [[1.0, "x", 3.0]] * 4}), "shapes")
    with pytest.raises(ValueError, match=f"{RGB_BIAS_KEY} must be 3 finite numbers"):
        latent_space_from_config(FrozenDict({**base, RGB_BIAS_KEY: [0.0, float("nan"), 0.0]}), "shapes")
    with pytest.raises(ValueError, match="rgb_factors must be 4 rows"):
        LatentSpace("shapes", rgb_factors=((1.0, 0.0, 0.0),))
