"""A 2-step smoke run of the shapes training writes a diffusers folder that loads with from_pretrained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sdkit.models.shapes import train
from sdkit.models.shapes.architecture import MAX_FP16_MB


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    args = ["--out", str(out), "--device", "cpu", "--vae-steps", "2", "--unet-steps", "2"]
    args += ["--controlnet-steps", "2", "--batch", "2", "--pool", "64", "--eval-n", "1", "--log-every", "1"]
    train.main(args)
    return out


def test_schedule_is_stable_diffusions() -> None:
    from diffusers import DDPMScheduler

    ref = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").alphas_cumprod
    assert torch.allclose(train.alphas_cumprod(), ref, atol=1e-6)


def test_export_loads_with_diffusers_and_transformers(run: Path) -> None:
    from diffusers import AutoencoderKL, ControlNetModel, EulerDiscreteScheduler, UNet2DConditionModel
    from safetensors import safe_open
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = run / "model"
    meta = json.loads((folder / "sdkit.json").read_text())
    assert meta["family"] == "shapes" and meta["default_size"] == 64 and meta["trained_stages"][-1] == "controlnet"
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    assert vae.config.scaling_factor == pytest.approx(meta["latent_scale"])
    assert CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").config.hidden_size == 64
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    assert tokenizer("a red circle").input_ids == [49406, 320, 736, 7117, 49407]
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    assert unet.config.in_channels == 4 and unet.config.sample_size == 8
    for name in ("depth", "pose"):
        ControlNetModel.from_pretrained(folder, subfolder=f"controlnet_{name}")
    scheduler = EulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
    assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.beta_end == 0.012
    weights = list(folder.rglob("*.safetensors"))
    assert len(weights) == 5
    for f in weights:
        with safe_open(str(f), "pt") as st:
            assert {st.get_slice(k).get_dtype() for k in st.keys()} == {"F16"}
    assert sum(f.stat().st_size for f in weights) / 1e6 <= MAX_FP16_MB
    # the folder as a whole is a Stable Diffusion pipeline
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    image = pipe("a red circle", num_inference_steps=2, height=64, width=64, output_type="pt").images
    assert image.shape == (1, 3, 64, 64)


def test_resume_restores_the_finished_run(run: Path) -> None:
    cfg = train.Config(out=str(run), resume=True)
    trainer = train.Trainer(cfg)
    trainer.load_checkpoint()
    assert trainer.stage == "done" and set(trainer.controlnets) == {"depth", "pose"}
    assert "vae_psnr" in trainer.metrics and "depth_iou" in trainer.metrics
    trainer.run()  # nothing left to do: returns at once
    assert (run / "metrics.json").exists()


def test_controlnet_stage_from_an_exported_model_trains_only_the_controlnets(run: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "cn"
    args = ["--out", str(out), "--device", "cpu", "--init-from", str(run / "model"), "--init-stage", "controlnet"]
    args += ["--fresh-controlnets", "--controlnet-steps", "2", "--batch", "2", "--pool", "64", "--eval-n", "1"]
    train.main(args)
    meta = json.loads((out / "model" / "sdkit.json").read_text())
    assert meta["metrics"]["controlnet_steps"] == 2 and meta["metrics"]["init_controlnet_steps"] == 0
    for part in ("unet/diffusion_pytorch_model", "text_encoder/model", "vae/diffusion_pytorch_model"):
        before, after = (
            load_file(run / "model" / f"{part}.safetensors"),
            load_file(out / "model" / f"{part}.safetensors"),
        )
        assert all(torch.equal(before[k], after[k]) for k in before), part  # frozen
    new = load_file(out / "model" / "controlnet_depth" / "diffusion_pytorch_model.safetensors")
    old = load_file(run / "model" / "controlnet_depth" / "diffusion_pytorch_model.safetensors")
    assert not torch.equal(new["controlnet_mid_block.weight"], old["controlnet_mid_block.weight"])
    init = dict(init_from=str(run / "model"), init_stage="controlnet")
    fresh = train.Trainer(train.Config(out=str(tmp_path / "fresh"), fresh_controlnets=True, **init))
    kept = train.Trainer(train.Config(out=str(tmp_path / "kept"), **init))
    assert fresh.controlnets == {} and set(kept.controlnets) == {"depth", "pose"}  # fresh: copied at stage start
    with pytest.raises(ValueError, match="init_stage"):
        train.Trainer(train.Config(out=str(tmp_path / "bad"), init_from=str(run / "model"), init_stage="vae"))
    with pytest.raises(ValueError, match="nothing to train"):
        train.Trainer(train.Config(out=str(tmp_path / "bad"), init_stage="controlnet", skip_controlnet=True))


def test_controlnets_are_copied_from_the_unet_at_their_stage_not_at_an_earlier_export(tmp_path: Path) -> None:
    trainer = train.Trainer(train.Config(out=str(tmp_path), device="cpu", pool=16, batch=2, eval_n=1))
    trainer.export()  # after the VAE stage: the folder gets placeholder ControlNets ...
    assert (tmp_path / "model" / "controlnet_depth").is_dir() and trainer.controlnets == {}  # ... which are not kept
    with torch.no_grad():
        trainer.unet.conv_in.weight.add_(1.0)  # stands in for the UNet stage
    trainer.ensure_controlnets()
    assert torch.equal(trainer.controlnets["depth"].conv_in.weight, trainer.unet.conv_in.weight)


def test_a_new_controlnet_adds_nothing_but_already_sees_its_condition() -> None:
    """Output convolutions start at zero (the UNet is unchanged), the condition embedding's last one does not."""
    from sdkit.models.shapes import architecture as arch

    torch.manual_seed(0)
    unet = arch.make_unet().eval()
    net = arch.make_controlnet(unet).eval()
    x, t, text = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 7, arch.TEXT_HIDDEN)
    cond = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        down, mid = net(x, t, text, controlnet_cond=cond, return_dict=False)
        plain = unet(x, t, text).sample
        steered = unet(x, t, text, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        embedded = net.controlnet_cond_embedding(cond)
    assert torch.equal(plain, steered) and all(float(d.abs().max()) == 0 for d in (*down, mid))
    assert float(embedded.abs().mean()) > 1e-3  # the condition reaches the ControlNet's features from step 0
    assert torch.equal(
        arch.make_controlnet(unet).controlnet_cond_embedding.conv_out.weight,
        net.controlnet_cond_embedding.conv_out.weight,
    )  # seeded: the same init every time


def test_cached_latents_equal_encoding_each_batch(tmp_path: Path) -> None:
    """The latent cache gives the diffusion loss the same x_0 as rendering and encoding the batch at each step."""
    trainer = train.Trainer(train.Config(out=str(tmp_path), device="cpu", pool=48, batch=6))
    trainer.vae.eval().requires_grad_(False)
    trainer.latent_scale = 0.9
    scenes, _, g, idx = trainer.draw("main", "unet", 3)
    cached = trainer.clean_latents("main", idx, scenes, g)
    trainer.cfg.cache_latents = False
    _, _, g, _ = trainer.draw("main", "unet", 3)
    encoded = trainer.clean_latents("main", idx, scenes, g)
    assert trainer.pool("main").posterior is not None and trainer.pool("main").posterior[0].shape == (48, 4, 8, 8)
    assert cached.shape == (6, 4, 8, 8) and float(cached.std()) > 0.1
    torch.testing.assert_close(cached, encoded, atol=1e-5, rtol=1e-5)


def test_learning_curve_points_score_the_ema_weights(tmp_path: Path) -> None:
    """``--eval-every``: a point per N steps in curve.jsonl, with samples seen and every series, scored by the evaluator
    on the model as trained (here: 2 tiny-lr steps on the shipped weights, which get the one-object colours right)."""
    from PIL import Image

    from sdkit.models.shapes import curve

    weights = Path(__file__).resolve().parents[1] / "sdkit" / "models" / "shapes" / "weights"
    args = ["--out", str(tmp_path), "--device", "cpu", "--init-from", str(weights), "--skip-controlnet",
            "--unet-steps", "2", "--batch", "4", "--pool", "32", "--eval-n", "1", "--unet-lr", "1e-7",
            "--eval-every", "1", "--curve-n", "8"]  # fmt: skip
    train.main(args)
    points = curve.read(tmp_path / "curve.jsonl")
    assert [(p["step"], p["samples"]) for p in points] == [(1, 4), (2, 8)]
    for p in points:
        assert set(curve.SERIES) <= set(p) and all(0 <= p[k] <= 1 for k in curve.SERIES)
        assert p["one_color"] >= 0.75 and p["short_color"] >= 0.75  # the shipped model's colours (100% and 97%)
    curve.main([str(tmp_path)])
    with Image.open(tmp_path / "curve.png") as im:
        assert im.width > 600 and im.height > 250
    assert curve.plot(points)._repr_png_().startswith(b"\x89PNG")
    curve.main([str(tmp_path), "--compare", f"again={tmp_path}"])
    with Image.open(tmp_path / "compare.png") as im:
        assert im.width > 500
    figure = curve.compare({"a": points, "b": points[:1]})
    assert [len(ax.lines) for ax in figure.axes] == [2, 2] and len(figure.axes[1].lines[1].get_xdata()) == 1


def test_a_model_trained_at_128_pixels_loads_and_generates_at_its_size(tmp_path: Path) -> None:
    """``--image-size 128``: 16x16 latents through every stage (VAE, UNet, both ControlNets), exported with its
    default size, so ``sdkit.load`` generates 128-pixel images without being told."""
    import sdkit

    args = ["--out", str(tmp_path), "--device", "cpu", "--image-size", "128", "--vae-steps", "1", "--unet-steps",
            "1", "--controlnet-steps", "2", "--batch", "2", "--pool", "16", "--eval-n", "1"]  # fmt: skip
    train.main(args)
    meta = json.loads((tmp_path / "model" / "sdkit.json").read_text())
    assert meta["default_size"] == 128 and meta["trained_stages"][-1] == "controlnet"
    unet = json.loads((tmp_path / "model" / "unet" / "config.json").read_text())
    assert unet["sample_size"] == 16
    kit = sdkit.load(str(tmp_path / "model"))
    generation = kit.generate("a red circle", steps=2, seed=1)
    assert generation.images[0].size == (128, 128) and generation.latents.tensor.shape[-2:] == (16, 16)
    with pytest.raises(ValueError, match="image_size"):
        train.Trainer(train.Config(out=str(tmp_path / "bad"), image_size=100))


def test_a_resume_from_a_unet_stage_export_drops_its_placeholder_controlnets(run: Path, tmp_path: Path) -> None:
    """An export taken in the middle of the UNet stage holds placeholder ControlNets; resuming from it must not keep
    them (the ControlNet stage copies the UNet it ends up with), and a folder of another image size is refused."""
    args = ["--out", str(tmp_path), "--device", "cpu", "--init-from", str(run / "model"), "--unet-steps", "4",
            "--run-steps", "1", "--batch", "2", "--pool", "16", "--eval-n", "1"]  # fmt: skip
    train.main(args)
    (tmp_path / "checkpoint.pt").unlink()
    trainer = train.Trainer(train.Config(out=str(tmp_path), device="cpu", resume=True))
    trainer.resume_from_export(tmp_path / "model")
    assert trainer.stage == "unet" and trainer.step == 1 and trainer.controlnets == {}
    with pytest.raises(ValueError, match="--image-size 64"):
        train.Trainer(train.Config(out=str(tmp_path), device="cpu", image_size=128)).resume_from_export(
            tmp_path / "model"
        )


def test_an_fp16_step_the_scaler_skips_leaves_weights_and_ema_alone(tmp_path: Path) -> None:
    """With inf gradients the GradScaler skips the optimizer step; the EMA must not move toward the unchanged weights
    either (after a real step it lags them, so it would), and the skip is counted."""
    trainer = train.Trainer(train.Config(out=str(tmp_path), device="cpu", pool=16, batch=2, precision="fp16"))
    trainer.stage = "unet"
    trainer.prepare("unet")
    trainer.make_optimizer()
    assert trainer.ema is not None
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    trainer.train_step(trainer.diffusion_batch(0, "unet"), 1.0, 0)  # a real step: the EMA now lags the weights
    weights = [p.detach().clone() for p in trainer.trainable()]
    ema = [e.clone() for e in trainer.ema]
    assert not all(torch.equal(w, e) for w, e in zip(weights, ema, strict=True))
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # the scaled loss overflows: inf gradients
    trainer.train_step(trainer.diffusion_batch(1, "unet"), 1.0, 1)
    assert trainer.skipped_steps == {"unet": 1} and trainer.scaler.get_scale() == 2.0**126
    assert all(torch.equal(w, p) for w, p in zip(weights, trainer.trainable(), strict=True))
    assert all(torch.equal(a, e) for a, e in zip(ema, trainer.ema, strict=True))
