"""Stable Diffusion 2.x: v-prediction, 768 defaults, the OpenCLIP layer convention, parity with diffusers on a
tiny random SD2, and loading of the 9-channel (inpainting) and 5-channel (depth) UNets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from parity_fixtures import euler_txt2img_vs_diffusers

import sdkit
from sdkit.families import defaults_for
from sdkit.testing import save_tiny_model, tiny_unet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sd2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("sd2") / "tiny-sd2", "sd2")


@pytest.fixture(scope="module")
def sd2_kit(sd2_folder: Path) -> sdkit.Kit:
    return sdkit.load(str(sd2_folder))


def test_sd2_loads_as_v_prediction_with_768_defaults(sd2_kit) -> None:
    assert sd2_kit.family == "sd2"
    assert sd2_kit.denoiser.prediction_type == "v_prediction"
    assert (sd2_kit.defaults.width, sd2_kit.defaults.height) == (768, 768)
    assert (defaults_for("sd2", v_prediction=True).width, defaults_for("sd2").width) == (768, 512)
    assert sd2_kit.vae.space.family == "sd"  # SD1 and SD2 share the VAE and its latent space
    gen = sd2_kit.generate("a cat", seed=3, steps=2, width=64, height=48)
    assert gen.latents.shape == (1, 4, 6, 8) and gen.images[0].size == (64, 48)


def test_v_prediction_denoiser_returns_x0_for_a_perfect_v() -> None:
    """With v = alpha * eps - sigma_t * x0 (per unit variance), the adapter's x0 formula must invert it."""
    from sdkit.denoisers import DiscreteDenoiser, DiscreteSchedule, alphas_cumprod_from_betas
    from sdkit.types import TextConditioning

    x0, eps, sigma = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4), torch.tensor([0.5, 3.0])
    s = sigma.view(-1, 1, 1, 1)

    class PerfectV:
        in_channels = 4

        def __call__(self, x_in, t, cond, **extra):  # v in the variance-preserving parametrisation
            return (eps - s * x0) / (s**2 + 1).sqrt()

    denoiser = DiscreteDenoiser(PerfectV(), DiscreteSchedule(alphas_cumprod_from_betas()), "v_prediction")
    out = denoiser(x0 + s * eps, sigma, TextConditioning(torch.zeros(2, 1, 8)))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)


def test_sd2_text_layer_is_openclip_penultimate() -> None:
    """SD2 reads OpenCLIP's penultimate layer through its final LayerNorm; diffusers' SD2 folders store the
    encoder with its last layer removed, so "last" on a loaded folder is that penultimate layer."""
    from transformers import CLIPTextModel

    from sdkit.testing import _text_config
    from sdkit.text import PromptEncoder
    from sdkit.text.encoder import ClipTextEncoder
    from sdkit.text.vocabulary import hf_clip_tokenizer

    torch.manual_seed(0)
    full = CLIPTextModel(_text_config(48, gelu=True)).eval()  # 3 layers: the "original" OpenCLIP tower
    config = _text_config(48, gelu=True)
    config.num_hidden_layers = 2
    folder_model = CLIPTextModel(config).eval()  # what a diffusers SD2 folder holds: one layer fewer
    missing, unexpected = folder_model.load_state_dict(full.state_dict(), strict=False)
    assert not missing and all(".layers.2." in k for k in unexpected)
    prompts = PromptEncoder.for_family("sd2", [hf_clip_tokenizer(pad_token="!")], [folder_model])
    assert prompts.encoders[0].layer == "last"
    ids = prompts.tokenize("a photo of a cat").ids
    with torch.no_grad():
        hidden = full(ids, output_hidden_states=True).hidden_states[-2]
        original = full.final_layer_norm(hidden)  # ldm's FrozenOpenCLIPEmbedder(layer="penultimate")
    torch.testing.assert_close(prompts.encode("a photo of a cat").embeds, original, atol=1e-6, rtol=1e-6)
    assert ClipTextEncoder(full, "penultimate", final_layer_norm=True)(
        prompts.tokenize("a photo of a cat")
    ).embeds.allclose(original, atol=1e-6)


def test_sd2_txt2img_euler_matches_diffusers(sd2_folder, sd2_kit) -> None:
    scheduler = json.loads((Path(sd2_folder) / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction"
    ours, theirs = euler_txt2img_vs_diffusers(sd2_folder, sd2_kit, seed=2024)
    assert ours.shape == theirs.shape == (1, 3, 64, 64)
    diff = (ours - theirs).abs().max().item()
    assert diff <= 1e-4, f"max abs difference {diff:.3g} > 1e-4"
    assert theirs.std() > 1e-3


@pytest.mark.parametrize("channels", [9, 5])  # 9: SD2 inpainting (latents + mask + masked image), 5: SD2 depth
def test_inpainting_and_depth_unets_load_and_take_concat(sd2_folder, tmp_path, channels: int) -> None:
    import shutil

    folder = tmp_path / f"sd2-{channels}ch"
    shutil.copytree(sd2_folder, folder)
    shutil.rmtree(folder / "unet")
    tiny_unet("sd2", seed=1, in_channels=channels).save_pretrained(folder / "unet")
    assert json.loads((folder / "unet" / "config.json").read_text())["in_channels"] == channels
    kit = sdkit.load(str(folder))
    assert kit.family == "sd2" and kit.denoiser.model.in_channels == channels
    cond, _ = kit.prompts.encode_pair("a cat")
    x = torch.randn(1, 4, 8, 8)
    out = kit.denoiser(x, torch.tensor([2.0]), cond, concat=torch.randn(1, channels - 4, 8, 8))
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=f"expects {channels} input channels, got a tensor with 4"):
        kit.generate("a cat", seed=1, steps=1, width=64, height=64)  # txt2img gives no extra channels
