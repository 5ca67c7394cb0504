"""Hostile files through every load path: pickles whose payload would create a marker file, renamed pickles,
archives holding pickles, truncated safetensors and non-finite weights.

Every hostile case runs with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` set (the variable that makes a bare
``torch.load`` unpickle anything) and asserts the marker file never appears.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import sdkit
from sdkit.loading import (
    ModelLoadError,
    detect_format,
    load_controlnet,
    load_controlnet_model,
    load_midas,
    load_vae,
    read_state_dict,
)
from sdkit.testing import save_single_file

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
MIDAS_FILE = "dpt_hybrid-midas-501f0c75.pt"


class Payload:
    """Unpickling this creates the marker file: the canary of code execution."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.marker, "w"))


def write_hostile(path: Path, marker: Path, kind: str) -> Path:
    """A file whose loading by a plain unpickler runs ``open(marker, "w")``."""
    data = {"state_dict": {"w": Payload(str(marker))}}
    if kind == "pickle":
        path.write_bytes(pickle.dumps(data))
    elif kind == "torch-zip":
        torch.save(data, str(path))
    elif kind == "zip":  # a plain zip archive holding a pickle, laid out like torch's container
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", pickle.dumps(data))
            z.writestr("archive/version", "3\n")
    elif kind == "7z":  # a 7z signature followed by a pickle
        path.write_bytes(b"7z\xbc\xaf\x27\x1c" + pickle.dumps(data))
    else:
        raise AssertionError(kind)
    return path


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a pickle payload ran"


def _vae_file(path: str, allow_pickle: bool) -> Any:
    return load_vae(path)  # single VAE files are safetensors only: no opt-in exists


def _midas_folder(path: str, allow_pickle: bool) -> Any:
    folder = Path(path).parent / "midas"
    folder.mkdir(exist_ok=True)
    shutil.copy(path, folder / MIDAS_FILE)
    return load_midas(str(folder), allow_pickle=allow_pickle)


FILE_LOADERS: dict[str, Callable[[str, bool], Any]] = {
    "sdkit.load": lambda p, ap: sdkit.load(p, allow_pickle=ap),
    "read_state_dict": lambda p, ap: read_state_dict(p, allow_pickle=ap),
    "load_vae": _vae_file,
    "load_controlnet_model": lambda p, ap: load_controlnet_model(p, allow_pickle=ap),
    "load_controlnet": lambda p, ap: load_controlnet(p, allow_pickle=ap),
    "load_midas(file)": lambda p, ap: load_midas(p, allow_pickle=ap),
    "load_midas(folder)": _midas_folder,
}


@pytest.mark.parametrize("allow_pickle", [False, True])
@pytest.mark.parametrize("kind,name", [("pickle", "m.ckpt"), ("torch-zip", "m.pt"), ("pickle", "m.safetensors")])
@pytest.mark.parametrize("loader", sorted(FILE_LOADERS))
def test_pickle_payload_is_refused_by_every_file_loader(tmp_path, marker, loader, kind, name, allow_pickle):
    path = write_hostile(tmp_path / name, marker, kind)
    with pytest.raises(ModelLoadError) as info:
        FILE_LOADERS[loader](str(path), allow_pickle)
    message = str(info.value)
    assert "\n" not in message and (path.name in message or MIDAS_FILE in message)
    # refused up front without the opt-in; with it, torch's weights-only unpickler rejects the payload
    assert ("pickle" in message) if not allow_pickle else ("weights_only" in message or "pickle" in message)


@pytest.mark.parametrize("allow_pickle", [False, True])
@pytest.mark.parametrize("kind", ["zip", "7z"])
def test_archives_holding_pickles_are_refused(tmp_path, marker, kind, allow_pickle):
    path = write_hostile(tmp_path / "model.safetensors", marker, kind)
    for loader in ("sdkit.load", "read_state_dict", "load_controlnet_model"):
        with pytest.raises(ModelLoadError):
            FILE_LOADERS[loader](str(path), allow_pickle)


def test_weights_only_is_explicit_so_the_environment_cannot_weaken_it(tmp_path, marker):
    """With the override set, a bare ``torch.load`` runs the payload; sdkit's opt-in path still refuses it
    and still loads honest weights."""
    hostile = write_hostile(tmp_path / "h.ckpt", marker, "torch-zip")
    with pytest.raises(ModelLoadError, match="weights_only"):
        read_state_dict(hostile, allow_pickle=True)
    assert not marker.exists()
    with pytest.warns(UserWarning, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        torch.load(str(hostile))  # the control: what the environment variable does to an unguarded load
    assert marker.exists()
    marker.unlink()
    honest = tmp_path / "honest.ckpt"
    torch.save({"state_dict": {"a": torch.arange(3.0)}}, str(honest))
    assert torch.equal(read_state_dict(honest, allow_pickle=True)["a"], torch.arange(3.0))


# ------------------------------------------------------------------------------------------ folders
def _folder_with_pickled(
    src: Path, dst: Path, component: str, marker: Path | None, weights: str = "diffusion_pytorch_model"
) -> Path:
    """A copy of ``src`` whose ``component`` weights are a pickle: hostile (``marker``) or honest (None)."""
    shutil.copytree(src, dst)
    folder = dst / component
    safe = folder / f"{weights}.safetensors"
    state = load_file(str(safe))
    safe.unlink()
    if marker is None:
        torch.save(state, str(folder / f"{weights}.bin"))
    else:
        write_hostile(folder / f"{weights}.bin", marker, "torch-zip")
    return dst


FOLDER_CASES = [
    ("unet", "diffusion_pytorch_model", lambda p, ap: sdkit.load(p, allow_pickle=ap)),
    ("text_encoder", "model", lambda p, ap: sdkit.load(p, allow_pickle=ap)),
    ("vae", "diffusion_pytorch_model", lambda p, ap: load_vae(p)),
]


@pytest.mark.parametrize("allow_pickle", [False, True])
@pytest.mark.parametrize("component,weights,loader", FOLDER_CASES)
def test_folder_with_pickled_weights_is_refused(
    tiny_sd1_folder, tmp_path, marker, component, weights, loader, allow_pickle
):
    folder = _folder_with_pickled(tiny_sd1_folder, tmp_path / "m", component, marker, weights)
    with pytest.raises(ModelLoadError) as info:
        loader(str(folder), allow_pickle)
    assert component in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_controlnet_folder_with_pickled_weights_is_refused(tiny_sd1_folder, tmp_path, marker, allow_pickle):
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(tiny_sd1_folder / "unet"))
    ControlNetModel.from_unet(unet).save_pretrained(tmp_path / "cn")
    (tmp_path / "cn" / "diffusion_pytorch_model.safetensors").unlink()
    write_hostile(tmp_path / "cn" / "diffusion_pytorch_model.bin", marker, "torch-zip")
    with pytest.raises(ModelLoadError):
        load_controlnet(str(tmp_path / "cn"), allow_pickle=allow_pickle)


def test_honest_pickled_folder_needs_the_opt_in_and_then_loads_the_same(tiny_sd1_folder, tiny_sd1_kit, tmp_path):
    folder = _folder_with_pickled(tiny_sd1_folder, tmp_path / "m", "unet", None)
    with pytest.raises(ModelLoadError, match="allow_pickle"):
        sdkit.load(str(folder))
    kit = sdkit.load(str(folder), allow_pickle=True)
    a, b = kit.denoiser.model.unet.state_dict(), tiny_sd1_kit.denoiser.model.unet.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_renamed_pickle_inside_a_folder_is_refused(tiny_sd1_folder, tmp_path, marker):
    shutil.copytree(tiny_sd1_folder, tmp_path / "m")
    write_hostile(tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors", marker, "pickle")
    for allow_pickle in (False, True):
        with pytest.raises(ModelLoadError, match="named .safetensors but its first bytes say pickle"):
            sdkit.load(str(tmp_path / "m"), allow_pickle=allow_pickle)


# ------------------------------------------------------------------------------------------ truncation, NaN
def test_truncated_safetensors_is_a_clear_error_everywhere(tiny_sd1_folder, tmp_path):
    data = save_single_file(tmp_path / "tiny.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    for load in (lambda p: sdkit.load(p), load_vae, load_controlnet_model):
        with pytest.raises(ModelLoadError, match="not a readable safetensors file") as info:
            load(str(cut))
        assert "\n" not in str(info.value)
    shutil.copytree(tiny_sd1_folder, tmp_path / "m")
    unet = tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors"
    unet.write_bytes(unet.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match="unet.*not a readable safetensors file"):
        sdkit.load(str(tmp_path / "m"))


def test_non_finite_weights_are_reported_naming_the_component(tiny_sd1_folder, tmp_path):
    shutil.copytree(tiny_sd1_folder, tmp_path / "m")
    path = tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    key = sorted(k for k in state if k.endswith("conv_in.weight"))[0]
    state[key][0, 0, 0, 0] = float("nan")
    save_file(state, str(path))
    with pytest.warns(RuntimeWarning, match=r"non-finite weights \(NaN/inf\) in unet\.conv_in\.weight"):
        kit = sdkit.load(str(tmp_path / "m"))
    assert kit.info["non_finite_weights"] == ["unet.conv_in.weight"]
    with pytest.raises(FloatingPointError, match="step 0"):
        kit.generate("a cat", seed=1, steps=2, width=64, height=64)


def test_finite_model_loads_without_a_report(tiny_sd1_kit):
    assert "non_finite_weights" not in tiny_sd1_kit.info


# ------------------------------------------------------------------------------------------ MiDaS
def test_midas_loads_through_the_guarded_loader(tmp_path, monkeypatch):
    """An honest MiDaS checkpoint (every tensor a zero-stride view of one value, so the file is tiny) loads with
    the opt-in, weights only, even with the override set; without the opt-in it is refused."""
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in DPTDepthModel(path=None, backbone="vitb_rn50_384").state_dict().items()}
    one = torch.full((1,), 0.25)
    (tmp_path / "midas").mkdir()
    torch.save(
        {k: one.expand(s) if len(s) else one[0] for k, s in shapes.items()}, str(tmp_path / "midas" / MIDAS_FILE)
    )
    with pytest.raises(ModelLoadError, match="allow_pickle"):
        load_midas(str(tmp_path / "midas"))
    detector = load_midas(str(tmp_path / "midas"), allow_pickle=True)
    params = dict(detector.model.model.named_parameters())
    assert len(params) > 300 and all(float(p.flatten()[0]) == 0.25 for p in params.values())
    out = detector(np.zeros((64, 64, 3), np.uint8), detect_resolution=64, image_resolution=64, output_type="np")
    assert out.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="model_type"):
        load_midas(str(tmp_path / "midas"), model_type="midas_v99")


# ------------------------------------------------------------------------------------------ polyglots
def zip_polyglot(path: Path, tensors: dict[str, torch.Tensor], inner: bytes) -> Path:
    """A file that is a valid safetensors file holding ``tensors`` and a valid torch zip checkpoint (``inner``,
    the bytes of a ``torch.save``). Its header length is 0x04034B50, whose little-endian bytes are the zip
    signature ``PK\\x03\\x04``; the zip's entries and central directory (with absolute offsets, which zip readers
    follow from the end of the file) sit in the bytes of a last tensor, ``polyglot``."""
    n = 0x04034B50
    data = b"".join(v.contiguous().numpy().tobytes() for v in tensors.values())
    start = 8 + n + len(data)

    def archive(comment: bytes) -> bytes:
        out = io.BytesIO()
        out.write(b"\0" * start)
        with zipfile.ZipFile(io.BytesIO(inner)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            for info in src.infolist():
                z.writestr(info.filename, src.read(info))
            z.comment = comment
        return out.getvalue()[start:]

    zipped = archive(b"")
    zipped = archive(b" " * (-len(zipped) % 4))  # the tensor of float32 needs a length divisible by 4
    entries: dict[str, Any] = {}
    offset = 0
    for name, v in tensors.items():
        size = v.numel() * v.element_size()
        entries[name] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [offset, offset + size]}
        offset += size
    entries["polyglot"] = {"dtype": "F32", "shape": [len(zipped) // 4], "data_offsets": [offset, offset + len(zipped)]}
    header = json.dumps(entries).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", n) + header + b" " * (n - len(header)) + data + zipped)
    return path


@pytest.mark.parametrize("inner_kind", ["honest", "hostile"])
def test_safetensors_zip_polyglot_is_read_as_safetensors_by_sdkit_and_diffusers(
    tiny_sd1_folder, tiny_sd1_kit, tmp_path, marker, inner_kind
):
    """Issue #15: such a file was taken for a zip, read as a pickle with the opt-in, and then read by diffusers as
    safetensors (by its name), failing with an error that blamed the configs. Now it is safetensors for both
    readers, whatever its name, and its pickle is never opened."""
    from sdkit.testing import ldm_state_dict, tiny_components

    state = {k: v.float() for k, v in ldm_state_dict(tiny_components("sd1")).items()}
    inner = io.BytesIO()
    honest = {"state_dict": {"w": torch.ones(2)}}
    torch.save(honest if inner_kind == "honest" else {"state_dict": {"w": Payload(str(marker))}}, inner)
    path = zip_polyglot(tmp_path / "both.ckpt", state, inner.getvalue())
    assert zipfile.is_zipfile(path) and path.read_bytes()[:4] == b"PK\x03\x04"
    if inner_kind == "honest":  # the control: torch reads the zip side
        assert torch.equal(torch.load(str(path), weights_only=True)["state_dict"]["w"], torch.ones(2))
    assert load_file(str(path)).keys() == {*state, "polyglot"}  # and safetensors the other
    assert detect_format(path) == "safetensors"
    kit = sdkit.load(str(path), allow_pickle=True, config=str(tiny_sd1_folder))
    a, b = kit.unet.state_dict(), tiny_sd1_kit.unet.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
