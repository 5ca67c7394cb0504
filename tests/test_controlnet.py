"""ControlNet: the recipe matches diffusers' StableDiffusionControlNetPipeline (one and several ControlNets,
weights, start/end) on tiny random components; loading; Kit.generate(control=...) and its infotext."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from image_fixtures import gradient_image, save_model_with_controlnets, tiny_controlnet

import sdkit
from sdkit import metadata
from sdkit.conditioners import Control
from sdkit.conditioners.controlnet import keep, step_index
from sdkit.loading import ModelLoadError, load_controlnet
from sdkit.noise import randn
from sdkit.recipes import controlnet

PROMPT = "a red circle above a blue square"


def control_pictures() -> list[torch.Tensor]:
    a = torch.zeros(1, 3, 64, 64)
    a[..., 10:30, 20:50] = 1.0
    b = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64).contiguous()
    return [a, b]


def diffusers_pipe(folder: Path, nets):
    from diffusers import ControlNetModel, EulerDiscreteScheduler, StableDiffusionControlNetPipeline

    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        str(folder),
        controlnet=nets if isinstance(nets, ControlNetModel) else list(nets),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    return pipe


@pytest.mark.parametrize("several", [False, True], ids=["one", "two"])
def test_matches_diffusers_controlnet_pipeline(tiny_sd1_folder, tiny_sd1_kit, several):
    kit = tiny_sd1_kit
    unet = kit.denoiser.model.unet
    nets = [tiny_controlnet(unet, seed=1), tiny_controlnet(unet, seed=2)][: 2 if several else 1]
    images = control_pictures()[: len(nets)]
    weights, starts, ends = [0.8, 1.3][: len(nets)], [0.0, 0.25][: len(nets)], [0.6, 1.0][: len(nets)]
    pipe = diffusers_pipe(tiny_sd1_folder, nets if several else nets[0])
    steps, seed = 6, 4376845645
    pipe.scheduler.set_timesteps(steps)
    sigmas = pipe.scheduler.sigmas.clone().float()
    with torch.no_grad():
        theirs = pipe(
            PROMPT,
            negative_prompt="blurry",
            image=images if several else images[0],
            controlnet_conditioning_scale=weights if several else weights[0],
            control_guidance_start=starts if several else starts[0],
            control_guidance_end=ends if several else ends[0],
            num_inference_steps=steps,
            guidance_scale=7.5,
            latents=randn([seed], (4, 8, 8)),
            height=64,
            width=64,
            output_type="pt",
        ).images
    cond, uncond = kit.prompts.encode_pair(PROMPT, "blurry")
    controls = [Control(n, i, w, s, e) for n, i, w, s, e in zip(nets, images, weights, starts, ends, strict=True)]
    latents = controlnet(
        kit.denoiser, kit.vae.space, controls, cond, uncond, sigmas=sigmas, width=64, height=64, seed=seed
    )
    ours = kit.vae.decode(latents).tensor
    diff = (ours - theirs).abs().max().item()
    assert diff <= 1e-4, f"max abs difference {diff:.3g} > 1e-4"
    plain = kit.generate(PROMPT, "blurry", seed=seed, schedule=sigmas, sampler="euler", cfg=7.5, width=64, height=64)
    assert (ours - kit.vae.decode(plain.latents).tensor).abs().max() > 1e-3  # the ControlNets changed the image


def test_schedule_fractions_follow_diffusers():
    sigmas = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.0])
    assert [step_index(sigmas, s) for s in (10.0, 5.0, 3.0, 1.0, 0.5)] == [0, 1, 1, 3, 3]
    assert [keep(i, 4, 0.0, 0.6) for i in range(4)] == [True, True, False, False]
    assert [keep(i, 4, 0.25, 1.0) for i in range(4)] == [False, True, True, True]
    with pytest.raises(ValueError, match="start <= end"):
        Control(None, None, 1.0, 0.7, 0.2)


@pytest.fixture(scope="module")
def kit_with_controlnets(tmp_path_factory):
    folder = save_model_with_controlnets(tmp_path_factory.mktemp("cn") / "tiny-cn")
    return folder, sdkit.load(str(folder))


def test_kit_generate_with_a_controlnet_from_extras(kit_with_controlnets, tmp_path):
    _, kit = kit_with_controlnets
    assert set(kit.extras) == {"controlnet_depth", "controlnet_pose"}
    depth = gradient_image()
    common = dict(seed=8, steps=3, width=64, height=64)
    plain = kit.generate(PROMPT, **common)
    gen = kit.generate(PROMPT, control=("controlnet_depth", depth, 0.9, 0.0, 0.5), **common)
    assert not np.array_equal(np.asarray(gen.images[0]), np.asarray(plain.images[0]))
    line = 'ControlNet 0: "Model: controlnet_depth, Weight: 0.9, Guidance Start: 0, Guidance End: 0.5"'
    assert line in gen.infotext
    gen.save(str(tmp_path / "c.png"))
    assert metadata.parse(gen.infotext).controls == (
        "Model: controlnet_depth, Weight: 0.9, Guidance Start: 0, Guidance End: 0.5",
    )
    off = kit.generate(PROMPT, control=Control("controlnet_pose", depth, weight=0.0), **common)
    assert np.array_equal(np.asarray(off.images[0]), np.asarray(plain.images[0]))  # weight 0 adds nothing
    two = kit.generate(PROMPT, control=[("controlnet_depth", depth), ("controlnet_pose", depth, 0.5)], **common)
    assert two.infotext.count("ControlNet ") == 2


def test_controlnet_with_img2img_and_inpainting(kit_with_controlnets):
    _, kit = kit_with_controlnets
    init, mask = gradient_image(), np.zeros((64, 64), bool)
    mask[8:24, 8:24] = True
    control = ("controlnet_depth", gradient_image(seed=3))
    a = kit.generate(PROMPT, init_image=init, strength=0.5, control=control, seed=1, steps=4)
    b = kit.generate(PROMPT, init_image=init, strength=0.5, seed=1, steps=4)
    assert not np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    c = kit.generate(PROMPT, init_image=init, mask=mask, control=control, seed=1, steps=3)
    assert np.array_equal(np.asarray(c.images[0])[40:], np.asarray(init)[40:])


def test_load_controlnet_folder_file_and_refusals(kit_with_controlnets, tmp_path):
    from safetensors.torch import save_file

    folder, kit = kit_with_controlnets
    net = load_controlnet(str(folder / "controlnet_depth"))
    reference = kit.extras["controlnet_depth"].state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in net.state_dict().items())
    single = tmp_path / "cn.safetensors"
    save_file({k: v.contiguous() for k, v in reference.items()}, str(single))
    from_file = load_controlnet(str(single), config=str(folder / "controlnet_depth"))
    assert all(torch.equal(v, reference[k]) for k, v in from_file.state_dict().items())
    pickle = tmp_path / "cn.ckpt"
    torch.save(dict(reference), str(pickle))
    with pytest.raises(ModelLoadError, match="pickle"):
        load_controlnet(str(pickle))
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_controlnet(str(tmp_path))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_controlnet(str(tmp_path / "missing.safetensors"))


def test_controlnet_under_an_and_prompt(kit_with_controlnets):
    """The ControlNet sees every AND part's rows with each image's own control: the same part twice at weight 0.5 is
    the plain prompt (a part's rows without the control, or with another image's, would differ), and a weight-0
    second part adds nothing."""
    _, kit = kit_with_controlnets
    controls = [gradient_image(), gradient_image(seed=3).transpose(0)]  # one control image per image of the batch
    common = dict(seed=8, steps=3, width=64, height=64, batch_size=2, sampler="euler",
                  control=("controlnet_depth", controls, 0.9))  # fmt: skip
    plain = kit.generate(PROMPT, **common)
    halves = kit.generate(f"{PROMPT} :0.5 AND {PROMPT} :0.5", **common)
    zeroed = kit.generate(f"{PROMPT} AND a green triangle :0", **common)
    both = kit.generate(f"{PROMPT} AND a green triangle", **common)
    torch.testing.assert_close(halves.latents.tensor, plain.latents.tensor, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(zeroed.latents.tensor, plain.latents.tensor, rtol=1e-5, atol=1e-5)
    assert (both.latents.tensor - plain.latents.tensor).abs().max() > 1e-3
    shared = kit.generate(PROMPT, **{**common, "control": ("controlnet_depth", controls[0], 0.9)})
    assert (shared.latents.tensor[1] - plain.latents.tensor[1]).abs().max() > 1e-3  # the second control mattered
