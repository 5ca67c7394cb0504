"""Malformed model files: every bad config, index or weights file is refused when the model is loaded, as one
``ModelLoadError`` line naming the file and the field (not an AttributeError, a KeyError, a meta-tensor error at
the first ``generate``, or a flat grey image)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import sdkit
from sdkit.loading import ModelLoadError, load_vae
from sdkit.testing import ldm_state_dict, tiny_components

pytestmark = pytest.mark.usefixtures("one_thread")


def write_json(relative: str, value: Any) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        (folder / relative).write_text(value if isinstance(value, str) else json.dumps(value))

    return mutate


def edit_json(relative: str, **changes: Any) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        path = folder / relative
        config = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**config, **changes}))

    return mutate


def edit_weights(relative: str, edit: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]):
    def mutate(folder: Path) -> None:
        path = folder / relative
        save_file(edit(load_file(str(path))), str(path))

    return mutate


def rename_keys(part: str) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    return lambda state: {("old." + k if part in k else k): v for k, v in state.items()}


def cast(part: str, dtype: torch.dtype) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    return lambda state: {k: (v.to(dtype) if part in k else v) for k, v in state.items()}


UNET = "unet/diffusion_pytorch_model.safetensors"
VAE = "vae/diffusion_pytorch_model.safetensors"
TEXT = "text_encoder/model.safetensors"
SCHEDULER = "scheduler/scheduler_config.json"

# (id, change to a copy of the tiny SD1 folder, texts the one-line message must show: the file, the field, the value)
CASES: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
    ("model_index.json a list", write_json("model_index.json", ["unet"]), ("model_index.json", "list")),
    ("model_index.json not JSON", write_json("model_index.json", '{"unet": ['), ("model_index.json", "not valid JSON")),
    ("model_index.json entry", edit_json("model_index.json", unet="diffusers"), ("model_index.json", "unet")),
    ("sdkit.json family", edit_json("sdkit.json", family="bogus"), ("sdkit.json", "family", "'bogus'", "sd1")),
    ("sdkit.json default_size", edit_json("sdkit.json", default_size=-3), ("sdkit.json", "default_size", "-3")),
    ("sdkit.json default_size 60", edit_json("sdkit.json", default_size=60), ("sdkit.json", "default_size", "60")),
    ("sdkit.json default_steps", edit_json("sdkit.json", default_steps="x"), ("sdkit.json", "default_steps", "'x'")),
    ("sdkit.json default_steps 0", edit_json("sdkit.json", default_steps=0), ("sdkit.json", "default_steps", "0")),
    ("sdkit.json default_cfg", edit_json("sdkit.json", default_cfg="7"), ("sdkit.json", "default_cfg", "'7'")),
    ("sdkit.json default_cfg nan", write_json("sdkit.json", '{"default_cfg": NaN}'), ("sdkit.json", "default_cfg")),
    ("sdkit.json a list", write_json("sdkit.json", []), ("sdkit.json", "list")),
    ("sdkit.json not JSON", write_json("sdkit.json", "{family: sd1}"), ("sdkit.json", "not valid JSON")),
    ("timesteps 0", edit_json(SCHEDULER, num_train_timesteps=0), ("scheduler_config.json", "num_train_timesteps")),
    ("timesteps bool", edit_json(SCHEDULER, num_train_timesteps=True), ("scheduler_config.json", "True")),
    ("beta_end 2", edit_json(SCHEDULER, beta_end=2), ("scheduler_config.json", "beta_end", "2")),
    ("beta_start negative", edit_json(SCHEDULER, beta_start=-0.1), ("scheduler_config.json", "beta_start", "-0.1")),
    ("beta_schedule", edit_json(SCHEDULER, beta_schedule="cosine"), ("scheduler_config.json", "beta_schedule")),
    ("prediction_type", edit_json(SCHEDULER, prediction_type="sample"), ("scheduler_config.json", "prediction_type")),
    ("scheduler config missing", lambda f: (f / SCHEDULER).unlink(), ("scheduler_config.json", "does not exist")),
    ("unet config not JSON", write_json("unet/config.json", "{"), ("unet", "config.json")),
    ("unet keys wrong", edit_weights(UNET, rename_keys("conv_in")), ("unet", "conv_in.weight", "old.conv_in")),
    ("text encoder keys wrong", edit_weights(TEXT, rename_keys("final_layer_norm")), ("text_encoder", "final_layer")),
    ("unet int8 weights", edit_weights(UNET, cast("conv_in", torch.int8)), (UNET, "conv_in", "I8", "floating")),
    ("vae bool weights", edit_weights(VAE, cast("conv_out", torch.bool)), (VAE, "conv_out", "BOOL", "floating")),
    ("text encoder int weights", edit_weights(TEXT, cast("token_embedding", torch.int32)), (TEXT, "I32", "floating")),
]


@pytest.mark.parametrize("mutate,shows", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_model_folder_is_one_clear_line(tiny_sd1_folder, tmp_path, mutate, shows):
    folder = tmp_path / "m"
    shutil.copytree(tiny_sd1_folder, folder)
    mutate(folder)
    with pytest.raises(ModelLoadError) as info:
        sdkit.load(str(folder))
    message = str(info.value)
    assert "\n" not in message and len(message) < 1000, message
    assert all(s in message for s in shows), message


def test_the_table_covers_every_file(tiny_sd1_folder):
    assert len(CASES) >= 20 and len({c[0] for c in CASES}) == len(CASES)


def test_integer_index_buffers_are_weights_too(tiny_sd1_folder, tiny_sd1_kit, tmp_path):
    """Checkpoints written by older transformers carry ``position_ids`` as int64: not a weight, still accepted."""
    folder = tmp_path / "m"
    shutil.copytree(tiny_sd1_folder, folder)
    state = load_file(str(folder / TEXT))
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    save_file(state, str(folder / TEXT))
    kit = sdkit.load(str(folder))
    a, b = kit.modules()["text_encoder"].state_dict(), tiny_sd1_kit.modules()["text_encoder"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_good_sdkit_json_defaults_are_used(tiny_sd1_folder, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_sd1_folder, folder)
    edit_json("sdkit.json", family="shapes", default_size=32, default_steps=3, default_cfg=4)(folder)
    kit = sdkit.load(str(folder))
    assert (kit.defaults.width, kit.defaults.height, kit.defaults.steps, kit.defaults.cfg) == (32, 32, 3, 4)


def test_integer_weights_in_a_single_file_are_refused(tiny_sd1_folder, tmp_path):
    state = ldm_state_dict(tiny_components("sd1"))
    key = next(k for k in state if k.startswith("model.diffusion_model.input_blocks.0.0.weight"))
    state[key] = state[key].to(torch.int8)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "int8.safetensors"))
    with pytest.raises(ModelLoadError, match=rf"int8\.safetensors holds tensor '{key}' as I8; weights must be float"):
        sdkit.load(str(tmp_path / "int8.safetensors"), config=str(tiny_sd1_folder))
    vae = {k.removeprefix("first_stage_model."): v for k, v in state.items() if k.startswith("first_stage_model.")}
    vae["decoder.conv_out.weight"] = vae["decoder.conv_out.weight"].to(torch.bool)
    save_file({k: v.contiguous() for k, v in vae.items()}, str(tmp_path / "vae.safetensors"))
    with pytest.raises(ModelLoadError, match=r"vae\.safetensors holds tensor 'decoder.conv_out.weight' as BOOL"):
        load_vae(str(tmp_path / "vae.safetensors"))


def test_a_checkpoint_that_does_not_fit_local_configs_blames_the_conversion(tmp_path):
    """With the configs at hand (a local folder), a failure is the checkpoint's, not the configs' reading."""
    from sdkit.testing import save_single_file, save_tiny_model

    path = save_single_file(tmp_path / "sd1.safetensors", "sd1")
    sd2 = save_tiny_model(tmp_path / "sd2", "sd2")
    with pytest.raises(ModelLoadError) as info:
        sdkit.load(str(path), config=str(sd2))
    message = str(info.value)
    assert message.startswith(f"model: could not convert {path} with the sd1 configs of {sd2} (ValueError: ")
    assert "position_embedding.weight" in message and "\n" not in message
