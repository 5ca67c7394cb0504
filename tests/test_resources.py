"""Resources and output: out-of-memory during decode retries tiled, progress is reported, an interrupt leaves the
kit usable (and the same), and saving is atomic, never overwrites unasked and always carries the parameters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

import sdkit
from sdkit.attention import capture_attention
from sdkit.loading import read_png_parameters, save_png
from sdkit.trace import Trace

SMALL = dict(width=64, height=64, steps=3, seed=21)


class OOMOnce:
    """Stands in for ``AutoencoderKL.decode``: raises ``error`` on the first call(s), then decodes, recording
    whether tiling was on at each call."""

    def __init__(self, model: Any, error: BaseException, times: int = 1) -> None:
        self.model, self.decode, self.error, self.times = model, model.decode, error, times
        self.tiling: list[bool] = []

    def __call__(self, z: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        self.tiling.append(bool(self.model.use_tiling))
        if len(self.tiling) <= self.times:
            raise self.error
        return self.decode(z, *args, **kwargs)


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError("MPS backend out of memory"),
    ],
)
def test_decode_out_of_memory_retries_tiled(tiny_sd1_kit, monkeypatch, error):
    reference = tiny_sd1_kit.generate("a cat", **SMALL)
    vae = tiny_sd1_kit.vae.model
    fake = OOMOnce(vae, error)
    monkeypatch.setattr(vae, "decode", fake)
    out = tiny_sd1_kit.generate("a cat", **SMALL)
    assert fake.tiling == [False, True] and vae.use_tiling is False  # tiled for the retry only
    assert out.notes == [f"VAE decode ran out of memory ({type(error).__name__}); retried with tiled decoding"]
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(reference.images[0]))


def test_out_of_memory_twice_and_other_errors_propagate(tiny_sd1_kit, monkeypatch):
    vae = tiny_sd1_kit.vae.model
    monkeypatch.setattr(vae, "decode", OOMOnce(vae, torch.OutOfMemoryError("out of memory"), times=2))
    with pytest.raises(torch.OutOfMemoryError):
        tiny_sd1_kit.generate("a cat", **SMALL)
    assert vae.use_tiling is False
    other = OOMOnce(vae, RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"))
    monkeypatch.setattr(vae, "decode", other)
    with pytest.raises(RuntimeError, match="CUDNN"):
        tiny_sd1_kit.generate("a cat", **SMALL)
    assert other.tiling == [False]  # no retry for what is not a memory error


def test_progress_is_reported(tiny_sd1_kit, monkeypatch, capsys):
    import sdkit.kit

    bars: list[Any] = []
    make = sdkit.kit._progress_bar
    monkeypatch.setattr(sdkit.kit, "_progress_bar", lambda total: bars.append(make(total)) or bars[-1])
    tiny_sd1_kit.generate("a cat", progress=True, **{**SMALL, "steps": 4})
    assert "sampling" in capsys.readouterr().err
    (bar,) = bars
    assert (bar.n, bar.total) == (4, 4) and bar.disable  # every step counted, and the bar closed


class InterruptAt:
    """A NoisePredictor that raises KeyboardInterrupt (a notebook's stop button) on model call ``k``."""

    def __init__(self, inner: Any, k: int) -> None:
        self.inner, self.k, self.calls = inner, k, 0
        self.in_channels = inner.in_channels

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.k + 1:
            raise KeyboardInterrupt
        return self.inner(*args, **kwargs)


def _state(kit: Any) -> tuple[Any, ...]:
    unet = kit.denoiser.model.unet
    processors = tuple(sorted((k, type(v).__name__) for k, v in unet.attn_processors.items()))
    return unet.training, kit.vae.model.training, kit.vae.dtype, unet.dtype, processors, torch.is_grad_enabled()


def test_interrupt_leaves_the_kit_usable_and_unchanged(tiny_sd1_folder, tiny_sd1_kit, monkeypatch):
    kit = tiny_sd1_kit
    before = _state(kit)
    inner = kit.denoiser.model
    monkeypatch.setattr(kit.denoiser, "model", InterruptAt(inner, 2))
    with pytest.raises(KeyboardInterrupt):
        kit.generate("a cat", progress=True, trace=True, **SMALL)
    monkeypatch.setattr(kit.denoiser, "model", inner)

    def stop(step: Any) -> None:
        if step.i == 1:
            raise KeyboardInterrupt

    trace = Trace()
    monkeypatch.setattr(trace, "on_step", stop)
    with pytest.raises(KeyboardInterrupt), capture_attention(kit):  # from a step hook, inside an attention capture
        kit.generate("a cat", trace=trace, **SMALL)
    assert _state(kit) == before
    again = kit.generate("a cat", **SMALL)
    fresh = sdkit.load(str(tiny_sd1_folder)).generate("a cat", **SMALL)
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(fresh.images[0]))


# ------------------------------------------------------------------------------------------- output
def test_saving_never_overwrites_unless_asked(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"keep me")
    image = PILImage.new("RGB", (8, 8), (255, 0, 0))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_png(image, path, "a\nSteps: 1")
    assert path.read_bytes() == b"keep me"
    save_png(image, path, "a\nSteps: 1", overwrite=True)
    assert read_png_parameters(path) == "a\nSteps: 1"
    with pytest.raises(ValueError, match="parameters"):
        save_png(image, tmp_path / "bare.png", "")
    assert not (tmp_path / "bare.png").exists()


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_write_leaves_no_partial_or_temp_file(tmp_path, monkeypatch, existing):
    path = tmp_path / "out.png"
    if existing:
        path.write_bytes(b"old")
    image = PILImage.new("RGB", (8, 8))
    real_save = PILImage.Image.save

    def half_then_fail(self: PILImage.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        real_save(self, fp, *args, **kwargs)
        fp.truncate(10)
        raise OSError("disk full")

    monkeypatch.setattr(PILImage.Image, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_png(image, path, "p\nSteps: 1", overwrite=True)
    assert os.listdir(tmp_path) == (["out.png"] if existing else [])
    assert not existing or path.read_bytes() == b"old"


def test_every_saved_image_carries_its_parameters(tiny_sd1_kit, tmp_path):
    from sdkit import metadata

    gen = tiny_sd1_kit.generate("a cat", batch_size=2, **SMALL)
    saved = [Path(gen.save(str(tmp_path / f"{k}.png"), index=k)) for k in range(2)]
    for k, path in enumerate(saved):  # each image its own seed, as A1111 writes it
        params = metadata.read(path)
        assert params["prompt"] == "a cat" and params["seed"] == 21 + k and params["batch_size"] == 2
    assert sorted(os.listdir(tmp_path)) == ["0.png", "1.png"]
