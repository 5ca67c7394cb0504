"""txt2img with Euler equals diffusers' StableDiffusionPipeline + EulerDiscreteScheduler on the same tiny
random SD1 components, the same starting noise and the same sigmas."""

from __future__ import annotations

from parity_fixtures import euler_txt2img_vs_diffusers


def test_txt2img_euler_matches_diffusers_pipeline(tiny_sd1_folder, tiny_sd1_kit):
    ours, theirs = euler_txt2img_vs_diffusers(tiny_sd1_folder, tiny_sd1_kit, seed=4376845645)
    assert ours.shape == theirs.shape == (1, 3, 64, 64)
    diff = (ours - theirs).abs().max().item()
    assert diff <= 1e-4, f"max abs difference {diff:.3g} > 1e-4"
    assert theirs.std() > 1e-3  # the images are not flat: the comparison is meaningful
