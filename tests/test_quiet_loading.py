"""Loading and moving models prints no library chatter (transformers' "Loading weights" bar, diffusers' empty
"should be kept in float32: []" warning), and the libraries' own settings are exactly as before afterwards.

Progress bars go to the process's stderr (``capfd``); the libraries' log records are read from ``caplog``, since
their handlers keep whichever stderr stream was current when the library first configured them."""

from __future__ import annotations

import importlib
import logging

import pytest
import torch

import sdkit
from sdkit.loading import EMBEDDED
from sdkit.quiet import quiet_libraries, to_device

pytestmark = pytest.mark.usefixtures("one_thread")

diffusers_logging = importlib.import_module("diffusers.utils.logging")
transformers_logging = importlib.import_module("transformers.utils.logging")
hub_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")
LIBRARIES = (diffusers_logging, transformers_logging)


def noise(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    """What the libraries printed or logged since the last call."""
    logged = [r.getMessage() for r in caplog.records if r.name.startswith(("diffusers", "transformers"))]
    caplog.clear()
    return capfd.readouterr().err + "\n".join(logged)


def settings() -> tuple[object, ...]:
    return (
        *((lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in LIBRARIES),
        dict(hub_tqdm.progress_bar_states),
    )


@pytest.fixture
def library_settings():
    """Put the libraries' switches back after a test that sets them."""
    before = [(lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in LIBRARIES]
    hub = dict(hub_tqdm.progress_bar_states)
    yield
    for lib, (verbosity, bars) in zip(LIBRARIES, before, strict=True):
        lib.set_verbosity(verbosity)
        (lib.enable_progress_bar if bars else lib.disable_progress_bar)()
    hub_tqdm.progress_bar_states.clear()
    hub_tqdm.progress_bar_states.update(hub)


def test_the_noise_exists_without_sdkit(capfd, library_settings):
    """The control: transformers' own from_pretrained draws the bar sdkit hides (so the next test can fail)."""
    from transformers import CLIPTextModel

    transformers_logging.enable_progress_bar()
    CLIPTextModel.from_pretrained(str(EMBEDDED["shapes"] / "text_encoder"))
    assert "Loading weights" in capfd.readouterr().err


@pytest.mark.parametrize("verbosity,bars", [(logging.INFO, True), (logging.WARNING, False), (logging.DEBUG, True)])
def test_loading_the_embedded_model_is_silent_and_restores_settings(capfd, caplog, library_settings, verbosity, bars):
    for lib in LIBRARIES:
        lib.set_verbosity(verbosity)
        (lib.enable_progress_bar if bars else lib.disable_progress_bar)()
    hub_tqdm.progress_bar_states["huggingface_hub.some_group"] = False  # a user's own hub setting survives too
    before = settings()
    noise(capfd, caplog)
    kit = sdkit.load("shapes")
    assert noise(capfd, caplog) == ""
    assert settings() == before
    assert kit.family == "shapes"


def test_settings_are_restored_after_an_error(library_settings):
    transformers_logging.set_verbosity(logging.INFO)
    transformers_logging.enable_progress_bar()
    before = settings()
    with pytest.raises(ZeroDivisionError), quiet_libraries():
        assert transformers_logging.get_verbosity() == logging.ERROR
        assert not transformers_logging.is_progress_bar_enabled() and not diffusers_logging.is_progress_bar_enabled()
        1 / 0  # noqa: B018
    assert settings() == before


def test_load_vae_with_a_dtype_is_silent(tmp_path, capfd, caplog, library_settings):
    from sdkit.testing import tiny_vae

    tiny_vae(seed=1).save_pretrained(str(tmp_path))
    diffusers_logging.set_verbosity(logging.WARNING)
    noise(capfd, caplog)
    vae = sdkit.load_vae(str(tmp_path), dtype=torch.bfloat16)
    assert noise(capfd, caplog) == ""
    assert next(vae.model.parameters()).dtype == torch.bfloat16


def test_to_device_is_quiet_only_when_diffusers_warning_is_empty(capfd, caplog, library_settings):
    from sdkit.testing import tiny_vae

    diffusers_logging.set_verbosity(logging.WARNING)
    model = tiny_vae(seed=1)
    noise(capfd, caplog)
    model.to(dtype=torch.bfloat16)  # diffusers itself warns, with an empty list
    assert "should be kept in float32: []" in noise(capfd, caplog)
    assert to_device(model, "cpu", torch.float32) is model
    assert noise(capfd, caplog) == "" and next(model.parameters()).dtype == torch.float32
    model._keep_in_fp32_modules = ["encoder"]  # a model that does keep modules in float32: a real warning, shown
    to_device(model, dtype=torch.bfloat16)
    assert "should be kept in float32: ['encoder']" in noise(capfd, caplog)


def test_generating_with_a_controlnet_module_is_silent(tiny_sd1_kit, capfd, caplog, library_settings):
    from diffusers import ControlNetModel

    from sdkit.conditioners import Control
    from sdkit.image import Image

    diffusers_logging.set_verbosity(logging.WARNING)
    torch.manual_seed(0)
    net = ControlNetModel.from_unet(tiny_sd1_kit.unet, conditioning_embedding_out_channels=(8, 8, 16, 16)).eval()
    noise(capfd, caplog)
    tiny_sd1_kit.generate("a cat", control=Control(net, Image(torch.rand(1, 3, 64, 64))), seed=1, steps=2, width=64)
    assert noise(capfd, caplog) == ""
