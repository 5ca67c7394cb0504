"""A weights file's format from its bytes: every safetensors file is safetensors, whatever its header length (the
length's first byte is a pickle opcode, 0x80 or 0x28, for 1 length in 16), in the layouts real writers produce.

Oracles from outside sdkit: the safetensors library reads every file written here (``safetensors.torch``), files
are written per the published format or by ``safetensors.torch.save``/diffusers' ``save_pretrained``, and
``pickle`` itself shows that the polyglot below is a pickle too.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save

import sdkit
from sdkit.loading import check_weights_file, detect_format, load_controlnet_model, read_state_dict
from sdkit.testing import save_single_file, save_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def safetensors_file(n: int) -> bytes:
    """A safetensors file whose header is exactly ``n`` bytes, laid out per the published format
    (github.com/huggingface/safetensors, "Format"): 8 bytes of little-endian u64 header size N, N bytes of a
    UTF-8 JSON object that may be padded at its end with spaces (0x20), then the tensors' bytes, which the
    ``data_offsets`` (relative to the end of the header) cover exactly. The format asks no alignment of N."""
    values = torch.arange(n % 5 + 1, dtype=torch.float32) / 4
    entries = {"w": {"dtype": "F32", "shape": [len(values)], "data_offsets": [0, 4 * len(values)]}}
    header = json.dumps(entries, separators=(",", ":")).encode()
    data = values.numpy().tobytes()
    if len(header) > n:  # too short to describe a tensor: a file of no tensors
        header, data = b"{}", b""
    return struct.pack("<Q", n) + header + b" " * (n - len(header)) + data


def test_every_header_length_from_8_to_4103_is_safetensors(tmp_path):
    """4,096 header lengths, every byte-level padding: 0 misdetected, and each reads back as the safetensors
    library reads it. The lengths' first bytes take all 256 values, pickle opcodes included."""
    misdetected = []
    for n in range(8, 8 + 4096):
        path = tmp_path / f"{n}.safetensors"
        path.write_bytes(safetensors_file(n))
        if detect_format(path) != "safetensors":
            misdetected.append(n)
            continue
        ours, theirs = read_state_dict(path), load_file(str(path))
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), n
        path.unlink()
    assert misdetected == []
    assert {n & 0xFF for n in range(8, 8 + 4096)} == set(range(256))  # 0x80 (PROTO) and 0x28 ("(", MARK) too


def test_every_header_length_safetensors_writes_is_safetensors(tmp_path):
    """``safetensors.torch.save`` pads headers to a multiple of 8: every length it can write from 8 to 4096
    (metadata of growing length), each detected as safetensors and read back as the library reads it."""
    files: dict[int, bytes] = {8: save({})}
    tensors = {"a": torch.ones(2, 3), "b.weight": torch.arange(4, dtype=torch.float16)}
    for m in range(4096):
        data = save(tensors if m % 2 else {}, metadata={"pad": "x" * m})
        files.setdefault(struct.unpack("<Q", data[:8])[0], data)
    lengths = sorted(n for n in files if n <= 4096)
    assert all(n % 8 == 0 for n in files)
    assert lengths == [8, *range(32, 4097, 8)]  # 16 and 24: too short for any metadata, so no writer makes them
    for n in lengths:
        path = tmp_path / "m.safetensors"
        path.write_bytes(files[n])
        assert detect_format(path) == "safetensors", n
        ours, theirs = read_state_dict(path), load_file(str(path))
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), n


DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
tensor_specs = st.lists(st.integers(0, 3), max_size=3).flatmap(
    lambda shape: st.tuples(st.just(tuple(shape)), st.sampled_from(DTYPES), st.integers(0, 2**31))
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    specs=st.dictionaries(st.text(min_size=1, max_size=40).filter(lambda k: k != "__metadata__"), tensor_specs),
    metadata=st.dictionaries(st.text(max_size=20), st.text(max_size=300), max_size=3),
)
def test_any_file_safetensors_writes_is_safetensors(tmp_path, specs, metadata):
    tensors = {}
    for name, (shape, dtype, seed) in specs.items():
        g = torch.Generator().manual_seed(seed)
        tensors[name] = torch.randn(shape, generator=g, dtype=torch.float32).to(dtype)
    path = tmp_path / "h.safetensors"
    path.write_bytes(save(tensors, metadata=metadata or None))
    assert detect_format(path) == "safetensors"
    back = read_state_dict(path)
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in back)


# ------------------------------------------------------------------------------------------ real layouts
def resave_with_first_byte(path: Path, first: int) -> int:
    """Rewrite a safetensors file with the same tensors and metadata plus padding, so that its header length's
    first byte is ``first`` (as 1 real file in 16 has 0x80 or 0x28); returns the new header length."""
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata() or {}
    for m in range(256 * 8):
        data = save(tensors, metadata={**metadata, "padding": "x" * m})
        n = struct.unpack("<Q", data[:8])[0]
        if n & 0xFF == first:
            path.write_bytes(data)
            return n
    raise AssertionError(first)


def test_files_written_by_diffusers_and_single_file_checkpoints_are_safetensors(tiny_sd1_folder, tmp_path):
    from diffusers import ControlNetModel, UNet2DConditionModel

    save_tiny_model(tmp_path / "sdxl", "sdxl")
    save_tiny_model(tmp_path / "sd2", "sd2")
    unet = UNet2DConditionModel.from_pretrained(str(tiny_sd1_folder / "unet"))
    ControlNetModel.from_unet(unet).save_pretrained(tmp_path / "controlnet")
    save_single_file(tmp_path / "sd1.safetensors", "sd1")
    save_single_file(tmp_path / "sdxl.safetensors", "sdxl")
    files = [*tiny_sd1_folder.rglob("*.safetensors"), *tmp_path.rglob("*.safetensors")]
    assert len(files) == 3 + 4 + 3 + 1 + 2
    for path in files:
        assert detect_format(path) == "safetensors", path
        assert check_weights_file(path), path


@pytest.mark.parametrize("first", [0x80, 0x28])
def test_single_file_checkpoint_whose_header_length_starts_like_a_pickle_loads(
    tiny_sd1_folder, tiny_sd1_kit, tmp_path, first
):
    path = save_single_file(tmp_path / "tiny.safetensors")
    n = resave_with_first_byte(path, first)
    assert path.read_bytes()[0] == first and n & 0xFF == first
    kit = sdkit.load(str(path), config=str(tiny_sd1_folder))
    a, b = kit.unet.state_dict(), tiny_sd1_kit.unet.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_folder_whose_headers_start_like_pickles_loads(tiny_sd1_folder, tiny_sd1_kit, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_sd1_folder, folder)
    resave_with_first_byte(folder / "unet" / "diffusion_pytorch_model.safetensors", 0x80)
    resave_with_first_byte(folder / "vae" / "diffusion_pytorch_model.safetensors", 0x28)
    resave_with_first_byte(folder / "text_encoder" / "model.safetensors", 0x80)
    kit = sdkit.load(str(folder))
    for ours, ref in zip(kit.modules().values(), tiny_sd1_kit.modules().values(), strict=True):
        a, b = ours.state_dict(), ref.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_controlnet_whose_header_starts_like_a_pickle_loads(tiny_sd1_folder, tmp_path):
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(tiny_sd1_folder / "unet"))
    ControlNetModel.from_unet(unet).save_pretrained(tmp_path / "cn")
    resave_with_first_byte(tmp_path / "cn" / "diffusion_pytorch_model.safetensors", 0x80)
    model = load_controlnet_model(str(tmp_path / "cn"))
    ref = load_file(str(tmp_path / "cn" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------ polyglots
def test_a_file_that_is_safetensors_and_pickle_is_read_as_safetensors(tmp_path):
    """Header length 0x2E7D: its bytes are ``}`` (EMPTY_DICT) and ``.`` (STOP), so the file unpickles (to {}) and
    is a valid safetensors file. Reading safetensors never runs code, so safetensors wins, with or without the
    pickle opt-in."""
    n = 0x2E7D
    data = safetensors_file(n)
    assert pickle.loads(data) == {}
    path = tmp_path / "both.ckpt"
    path.write_bytes(data)
    assert detect_format(path) == "safetensors"
    expected = load_file(str(path))
    for allow_pickle in (False, True):
        got = read_state_dict(path, allow_pickle=allow_pickle)
        assert got.keys() == expected.keys() == {"w"} and torch.equal(got["w"], expected["w"])
