"""SDXL: micro-conditioning, buckets, base parity with StableDiffusionXLPipeline and the base -> refiner handoff
against diffusers' ``denoising_end`` -> ``denoising_start`` pipelines, on tiny random components."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import sdkit
from sdkit import sdxl
from sdkit.image import Image
from sdkit.latents import SDXL_RGB_FACTORS
from sdkit.noise import randn
from sdkit.testing import save_tiny_model, save_tiny_refiner

PROMPT, NEGATIVE = "a red circle above a blue square", "blurry"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sdxl")
    return save_tiny_model(root / "tiny-sdxl", "sdxl"), save_tiny_refiner(root / "tiny-refiner")


@pytest.fixture(scope="module")
def kits(folders) -> tuple[sdkit.Kit, sdkit.Kit]:
    return sdkit.load(str(folders[0])), sdkit.load(str(folders[1]))


@pytest.fixture(scope="module")
def pipes(folders):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    base = StableDiffusionXLPipeline.from_pretrained(str(folders[0]), add_watermarker=False)
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(folders[1]), add_watermarker=False)
    for pipe in (base, refiner):
        pipe.set_progress_bar_config(disable=True)
        # "linspace": diffusers then starts from sigma_max itself, as our txt2img does.
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    return base, refiner


def _sigmas(pipe, steps: int) -> torch.Tensor:
    pipe.scheduler.set_timesteps(steps)
    return pipe.scheduler.sigmas.clone().float()


def test_buckets_are_the_published_sdxl_resolutions() -> None:
    assert len(sdxl.BUCKETS) == 26 and (1024, 1024) in sdxl.BUCKETS
    for w, h in sdxl.BUCKETS:
        assert w % 64 == 0 and h % 64 == 0
        assert (h, w) in sdxl.BUCKETS or w / h > 2  # portrait/landscape pairs up to 1:2
        assert 0.85 < w * h / 1024**2 <= 1.0
    assert sdxl.nearest_bucket(1920, 1080) == (1344, 768)  # 16:9
    assert sdxl.nearest_bucket(1080, 1920) == (768, 1344)
    assert sdxl.nearest_bucket(512, 512) == (1024, 1024)


def test_micro_conditioning_tensors() -> None:
    micro = sdxl.MicroConditioning(original_size=(512, 768), crops_coords_top_left=(16, 0), negative_target_size=(1, 2))
    pos, neg = micro.tensors(width=1216, height=832)
    assert pos.tolist() == [[512, 768, 16, 0, 832, 1216]]
    assert neg.tolist() == [[512, 768, 16, 0, 1, 2]]
    pos, neg = micro.tensors(width=1216, height=832, count=5)
    assert pos.tolist() == [[512, 768, 16, 0, 6.0]] and neg.tolist() == [[512, 768, 16, 0, 2.5]]


def test_time_ids_follow_the_unet(kits) -> None:
    base, refiner = kits
    assert sdxl.time_id_count(base.denoiser.model.unet, 32) == 6
    assert sdxl.time_id_count(refiner.denoiser.model.unet, 32) == 5
    with pytest.raises(ValueError, match="5 or 6 time ids"):
        sdxl.time_id_count(base.denoiser.model.unet, 33)
    cond, uncond = base.prompts.encode_pair("a cat", "a dog")
    c, u = sdxl.add_time_ids(base.denoiser.model.unet, cond, uncond, 64, 48)
    assert c.extra["time_ids"].tolist() == [[48, 64, 0, 0, 48, 64]] and "time_ids" not in cond.extra  # no mutation
    c, u = sdxl.add_time_ids(refiner.denoiser.model.unet, *refiner.prompts.encode_pair("a cat", "a dog"), 64, 48)
    assert c.extra["time_ids"].tolist() == [[48, 64, 0, 0, 6.0]] and u.extra["time_ids"][0, -1].item() == 2.5


def test_sdxl_kits_generate_in_their_latent_space(kits) -> None:
    base, refiner = kits
    assert (base.defaults.width, base.defaults.height) == (1024, 1024)
    for kit in kits:
        gen = kit.generate("a cat", seed=1, steps=2, width=64, height=64, batch_size=2)
        assert gen.latents.shape == (2, 4, 8, 8) and gen.latents.space.family == "sdxl"
        assert gen.latents.space.scale == 0.13025 and len(gen.images) == 2
        assert gen.latents.space.rgb_factors == SDXL_RGB_FACTORS  # SDXL's own preview factors
    assert refiner.prompts.encoders[0].layer == "penultimate" and len(refiner.prompts.encoders) == 1


def test_sdxl_txt2img_matches_diffusers(pipes, kits) -> None:
    from sdkit.recipes import txt2img

    pipe, base = pipes[0], kits[0]
    steps, seed = 10, 77
    sigmas = _sigmas(pipe, steps)
    common = dict(num_inference_steps=steps, guidance_scale=5.0, height=64, width=64, output_type="pt")
    micro = sdxl.MicroConditioning(original_size=(256, 128), crops_coords_top_left=(8, 16), target_size=(64, 80))
    with torch.no_grad():
        theirs = pipe(PROMPT, negative_prompt=NEGATIVE, latents=randn([seed], (4, 8, 8)), **common).images
        theirs_micro = pipe(
            PROMPT, negative_prompt=NEGATIVE, latents=randn([seed], (4, 8, 8)), **common,
            original_size=(256, 128), crops_coords_top_left=(8, 16), target_size=(64, 80),
        ).images  # fmt: skip
    ours = base.vae.decode(
        base.generate(
            PROMPT, NEGATIVE, seed=seed, sampler="euler", schedule=sigmas, cfg=5.0, width=64, height=64
        ).latents
    ).tensor
    cond, uncond = sdxl.add_time_ids(
        base.denoiser.model.unet, *base.prompts.encode_pair(PROMPT, NEGATIVE), 64, 64, micro
    )
    with torch.no_grad():
        latents = txt2img(
            base.denoiser, base.vae.space, cond, uncond, sigmas=sigmas, cfg_scale=5.0, seed=seed, width=64, height=64
        )
    ours_micro = base.vae.decode(latents).tensor
    for a, b in ((ours, theirs), (ours_micro, theirs_micro)):
        assert a.shape == b.shape == (1, 3, 64, 64)
        diff = (a - b).abs().max().item()
        assert diff <= 1e-4, f"max abs difference {diff:.3g} > 1e-4"
    assert (theirs - theirs_micro).abs().max() > 1e-3  # the micro-conditioning reaches the model


@pytest.mark.parametrize("steps", [10, 25, 30])
def test_split_follows_diffusers_denoising_end(pipes, kits, steps: int) -> None:
    scheduler, schedule = pipes[0].scheduler, kits[0].denoiser.schedule
    sigmas = _sigmas(pipes[0], steps)
    timesteps = scheduler.timesteps
    for f in (0.05, 0.3, 0.5, 0.7, 0.8, 0.889, 0.9, 0.95):
        cutoff = int(round(1000 - f * 1000))
        k_base = len([t for t in timesteps if t >= cutoff])  # StableDiffusionXLPipeline, denoising_end
        k_refiner = int((timesteps < cutoff).sum())  # StableDiffusionXLImg2ImgPipeline, denoising_start
        head, tail = sdxl.split_sigmas(sigmas, schedule, f)
        assert len(head) - 1 == k_base and len(tail) - 1 == k_refiner and head[-1] == tail[0]
        assert torch.equal(torch.cat([head, tail[1:]]), sigmas)


def test_base_refiner_handoff_matches_diffusers(pipes, kits) -> None:
    base_pipe, refiner_pipe = pipes
    base, refiner = kits
    steps, seed, f = 10, 77, 0.7
    sigmas = _sigmas(base_pipe, steps)
    with torch.no_grad():
        handoff = base_pipe(
            PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=5.0,
            latents=randn([seed], (4, 8, 8)), height=64, width=64, output_type="latent", denoising_end=f,
        ).images  # fmt: skip
        theirs = refiner_pipe(
            PROMPT, negative_prompt=NEGATIVE, image=handoff, num_inference_steps=steps, guidance_scale=5.0,
            denoising_start=f, output_type="pt",
        ).images  # fmt: skip
    gen = sdxl.generate_refined(
        base, refiner, PROMPT, NEGATIVE, denoising_end=f, seed=seed, schedule=sigmas, cfg=5.0, width=64, height=64
    )
    ours = refiner.vae.decode(gen.latents).tensor
    diff = (ours - theirs).abs().max().item()
    assert diff <= 1e-4, f"max abs difference {diff:.3g} > 1e-4"
    base_only = base.generate(PROMPT, NEGATIVE, seed=seed, schedule=sigmas, cfg=5.0, width=64, height=64)
    assert (base.vae.decode(base_only.latents).tensor - ours).abs().max() > 1e-3  # the refiner did its part
    assert "Refiner switch at: 0.7" in gen.infotext and gen.seed == seed


def test_offloading_the_base_gives_the_same_image(folders, kits) -> None:
    base, refiner = sdkit.load(str(folders[0])), kits[1]
    args = dict(denoising_end=0.75, seed=5, steps=4, width=64, height=64, sampler="euler_ancestral")
    kept = sdxl.generate_refined(base, refiner, "a cat", **args)
    moved = sdxl.generate_refined(base, refiner, "a cat", offload_base=True, **args)
    assert base.device == torch.device("cpu") and next(base.denoiser.model.unet.parameters()).device.type == "cpu"
    assert np.array_equal(np.asarray(kept.images[0]), np.asarray(moved.images[0]))


def test_refiner_as_plain_img2img(kits) -> None:
    refiner = kits[1]
    image = Image(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    clean = refiner.vae.encode(image)
    out = sdxl.refine_image(refiner, image, "a cat", strength=0.5, steps=6, seed=3)
    again = sdxl.refine_image(refiner, image, "a cat", strength=0.5, steps=6, seed=3)
    assert out.shape == clean.shape and out.space == clean.space and torch.equal(out.tensor, again.tensor)
    assert (out.tensor - clean.tensor).abs().max() > 1e-3
    unchanged = sdxl.refine_image(refiner, image, "a cat", strength=0.0, steps=6)
    assert torch.equal(unchanged.tensor, clean.tensor)
    with pytest.raises(ValueError, match="latents are at sigma"):
        sdxl.refine(
            refiner.denoiser, *refiner.prompts.encode_pair("a"), clean.with_tensor(clean.tensor, 1.0),
            sigmas=torch.tensor([2.0, 0.0]),
        )  # fmt: skip


def test_single_file_sdxl_round_trips_the_weights(folders, kits, tmp_path) -> None:
    from sdkit.single_file import family_of_checkpoint
    from sdkit.testing import ldm_state_dict, save_single_file, tiny_components

    state = ldm_state_dict(tiny_components("sdxl"))
    assert family_of_checkpoint(set(state)) == "sdxl"
    assert state["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"].shape == (3 * 48, 48)
    kit = sdkit.load(str(save_single_file(tmp_path / "xl.safetensors", "sdxl")), config=str(folders[0]))
    ref = kits[0]
    assert kit.family == "sdxl" and kit.prompts.zero_empty_negative == ref.prompts.zero_empty_negative
    pairs = [(kit.denoiser.model.unet, ref.denoiser.model.unet), (kit.vae.model, ref.vae.model)]
    pairs += list(zip((e.model for e in kit.prompts.encoders), (e.model for e in ref.prompts.encoders), strict=True))
    for ours, theirs in pairs:
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    args = dict(seed=5, steps=3, width=64, height=64)
    # same weights; float32 kernels may round differently for the reloaded projection (~1e-7), hence a tolerance
    torch.testing.assert_close(
        kit.generate("a cat", **args).latents.tensor, ref.generate("a cat", **args).latents.tensor, atol=1e-3, rtol=0
    )


def test_base_and_refiner_walk_one_brownian_motion(kits, monkeypatch) -> None:
    """A1111 runs base and refiner as one DPM++ SDE run: one tree per image over the whole schedule serves both."""
    from sdkit.brownian import BrownianNoise

    base, refiner = kits
    served: list[tuple[int, float]] = []
    original = BrownianNoise.__call__

    def recording(self, sigma, sigma_next):
        served.append((id(self), float(sigma_next)))
        return original(self, sigma, sigma_next)

    monkeypatch.setattr(BrownianNoise, "__call__", recording)
    _, _, sigmas = base.parameters("a cat", steps=6, sampler="DPM++ 2M SDE Karras", width=64, height=64)
    gen = sdxl.generate_refined(base, refiner, "a cat", denoising_end=0.5, seed=9, steps=6,
                                sampler="DPM++ 2M SDE Karras", width=64, height=64)  # fmt: skip
    assert np.isfinite(np.asarray(gen.images[0])).all()
    assert len({tree for tree, _ in served}) == 1  # one noise source for the whole run
    assert [s for _, s in served] == pytest.approx(sigmas[1:-1].tolist(), rel=1e-6)  # both halves drew from it


def test_and_prompts_compose_on_the_base_and_are_refused_by_the_refiner(kits) -> None:
    """Every AND part gets the base's micro-conditioning (its time_ids and pooled embedding): the two-part prompt
    at weights (1, 0) is the first part alone; the refiner handoff says it does not compose yet."""
    base, refiner = kits
    args = dict(seed=4, steps=3, cfg=5.0, sampler="euler", width=64, height=64)
    alone = base.generate("a cat", **args)
    zeroed = base.generate("a cat AND a dog :0", **args)
    both = base.generate("a cat AND a dog", **args)
    torch.testing.assert_close(zeroed.latents.tensor, alone.latents.tensor, rtol=1e-5, atol=1e-5)
    assert (both.latents.tensor - alone.latents.tensor).abs().max() > 1e-3
    with pytest.raises(NotImplementedError, match="SDXL refiner"):
        sdxl.generate_refined(base, refiner, "a cat AND a dog", **args)


def test_refine_image_spans_its_trees_over_the_whole_schedule(kits, monkeypatch) -> None:
    """Plain img2img with the refiner, as A1111's img2img: the trees span the schedule before strength cuts it."""
    from sdkit.brownian import BrownianNoise

    refiner = kits[1]
    spans: list[tuple[float, float]] = []
    original = BrownianNoise.__init__

    def recording(self, seeds, shape, sigma_min, sigma_max, **options):
        spans.append((sigma_min, sigma_max))
        original(self, seeds, shape, sigma_min, sigma_max, **options)

    monkeypatch.setattr(BrownianNoise, "__init__", recording)
    image = Image(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    sdxl.refine_image(refiner, image, "a cat", strength=0.3, steps=6, seed=3, sampler="dpmpp_sde")
    _, _, sigmas = refiner.parameters("a cat", steps=6)
    assert spans == [pytest.approx((float(sigmas[-2]), float(sigmas[0])))]
