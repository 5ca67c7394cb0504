"""Loading through one module: diffusers folders, single-file checkpoints, refused pickles, clear errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import sdkit
from sdkit.loading import ModelLoadError, detect_format, read_state_dict
from sdkit.testing import save_single_file


def test_folder_family_detection(tiny_sd1_kit, tmp_path):
    from sdkit.testing import save_tiny_model

    assert tiny_sd1_kit.family == "sd1"
    assert tiny_sd1_kit.denoiser.prediction_type == "epsilon"
    sd2 = sdkit.load(str(save_tiny_model(tmp_path / "sd2", "sd2")))
    assert sd2.family == "sd2" and sd2.denoiser.prediction_type == "v_prediction"
    assert sd2.prompts.tokenize("a cat").ids[0, -1].item() == 0  # OpenCLIP pads with 0


def test_single_file_loads_through_diffusers_conversion(tiny_sd1_folder, tiny_sd1_kit, tmp_path):
    path = save_single_file(tmp_path / "tiny.safetensors")
    assert detect_format(path) == "safetensors"
    kit = sdkit.load(str(path), config=str(tiny_sd1_folder))
    assert kit.family == "sd1"
    for name in ("unet", "vae"):
        ours = kit.vae.model if name == "vae" else kit.denoiser.model.unet
        ref = tiny_sd1_kit.vae.model if name == "vae" else tiny_sd1_kit.denoiser.model.unet
        a, b = ours.state_dict(), ref.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    args = dict(seed=5, steps=3, width=64, height=64)
    assert np.array_equal(
        np.asarray(kit.generate("a cat", **args).images[0]),
        np.asarray(tiny_sd1_kit.generate("a cat", **args).images[0]),
    )


class Payload:
    """Unpickling this would create a marker file: the canary of code execution."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile(path, marker, zipped: bool) -> None:
    if zipped:
        torch.save({"state_dict": {"w": Payload(str(marker))}}, str(path))
    else:
        path.write_bytes(pickle.dumps({"state_dict": {"w": Payload(str(marker))}}))


@pytest.mark.parametrize("zipped", [False, True])
@pytest.mark.parametrize("name", ["model.ckpt", "model.safetensors", "model.bin"])
def test_pickles_are_refused_without_opt_in(tmp_path, monkeypatch, zipped, name):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    path = tmp_path / name
    _hostile(path, marker, zipped)
    assert detect_format(path) in ("pickle", "zip")
    with pytest.raises(ModelLoadError, match="pickle"):
        sdkit.load(str(path))
    with pytest.raises(ModelLoadError):
        read_state_dict(path, allow_pickle=True)  # opt-in still loads weights only: the payload is refused
    assert not marker.exists()


def test_ckpt_with_opt_in_loads_weights_only(tmp_path):
    path = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {"a": torch.ones(2)}}, str(path))
    with pytest.raises(ModelLoadError, match="allow_pickle"):
        read_state_dict(path)
    assert torch.equal(read_state_dict(path, allow_pickle=True)["a"], torch.ones(2))


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    path = save_single_file(tmp_path / "tiny.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="not a readable safetensors"):
        read_state_dict(tmp_path / "cut.safetensors")
