"""Outpainting: output size, the exactly kept region, the feathered seam and canvas rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from image_fixtures import gradient_image

from sdkit.conditioners import extend_canvas
from sdkit.image import Image
from sdkit.recipes import outpaint


def run(kit, image: Image, **sides):
    cond, uncond = kit.prompts.encode_pair("a red circle", "")
    sigmas = torch.tensor([14.6, 4.0, 1.0, 0.0])
    return outpaint(kit.denoiser, kit.vae, image, cond, uncond, sigmas=sigmas, seed=11, **sides)


def test_size_and_kept_region_are_exact(tiny_sd1_kit):
    image = Image.from_pil(gradient_image(64, 48))
    out = run(tiny_sd1_kit, image, left=12, down=20, overlap=6)
    assert out.size == (64 + 12, 48 + 20)
    got, want = np.asarray(out.to_pil()[0]), np.asarray(image.to_pil()[0])
    placed = got[0:48, 12:76]  # where the original sits in the output
    assert np.array_equal(placed[:42, 6:], want[:42, 6:])  # all but the 6-pixel seam bands
    assert not np.array_equal(placed[:, :6], want[:, :6])  # the seam band was regenerated and blended
    assert got[48:, :].std() > 1.0 and got[:, :12].std() > 1.0  # the new zones hold generated pixels


def test_zero_overlap_keeps_the_whole_original(tiny_sd1_kit):
    image = Image.from_pil(gradient_image(64, 64))
    out = run(tiny_sd1_kit, image, right=16, up=8, overlap=0)
    assert out.size == (80, 72)
    got, want = np.asarray(out.to_pil()[0]), np.asarray(image.to_pil()[0])
    assert np.array_equal(got[8:, :64], want)


def test_canvas_mask_is_one_outside_feathered_inside_and_zero_beyond():
    image = Image(torch.rand(1, 3, 16, 16))
    canvas = extend_canvas(image, right=5, overlap=4)
    assert canvas.image.size == (24, 16) and canvas.box == (0, 0, 21, 16) and canvas.original_box == (0, 0, 16, 16)
    row = canvas.mask[0, 0, 7]
    assert torch.equal(row[16:], torch.ones(8))  # new zone (5 asked + 3 to round to 8)
    assert torch.allclose(row[12:16], torch.tensor([0.25, 0.5, 0.75, 1.0]))  # the seam ramp
    assert torch.equal(row[:12], torch.zeros(12))
    assert torch.equal(canvas.image.tensor[..., :16], image.tensor)
    assert torch.equal(canvas.image.tensor[..., 16:], image.tensor[..., 15:16].expand(-1, -1, -1, 8))  # edge fill
    with pytest.raises(ValueError, match="extend at least one side"):
        extend_canvas(image)
    with pytest.raises(ValueError, match="left must be an integer >= 0"):
        extend_canvas(image, left=-3)
