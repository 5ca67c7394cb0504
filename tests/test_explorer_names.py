"""The explorer widget takes sampler names as users know them (issue #14): A1111 display names with their
schedule ("DPM++ 2M Karras"), used by ``.run()`` exactly as ``Kit.generate`` uses them, and a sampler dropdown
that lists A1111's display names."""

from __future__ import annotations

import pytest
import torch

from sdkit.viz.widgets import explorer, sampler_setting

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(prompt="a red circle", seed=5, steps=4, cfg=5.0, width=64, height=64)


def _generate(kit, **options):
    settings = {**SMALL, **options}
    return kit.generate(settings.pop("prompt"), **settings)


def test_display_name_with_schedule_runs_like_generate(tiny_sd1_kit):
    ex = explorer(tiny_sd1_kit, sampler="DPM++ 2M Karras", **SMALL)
    assert (ex.settings.sampler, ex.settings.schedule) == ("dpmpp_2m", "karras")
    gen = ex.run()
    reference = _generate(tiny_sd1_kit, sampler="DPM++ 2M Karras")
    assert torch.equal(gen.latents.tensor, reference.latents.tensor)
    assert gen.images[0].tobytes() == reference.images[0].tobytes()
    assert gen.infotext == reference.infotext
    assert "Sampler: DPM++ 2M" in gen.infotext and "Karras" in gen.infotext
    # Karras really is used: the uniform ("normal") schedule gives other latents
    normal = _generate(tiny_sd1_kit, sampler="dpmpp_2m", schedule="normal")
    assert not torch.allclose(gen.latents.tensor, normal.latents.tensor, atol=1e-3)


def test_karras_sigmas_reach_the_sampler(tiny_sd1_kit):
    """The traced sigmas are k-diffusion's Karras schedule (rho 7) between the model's sigma_min and sigma_max."""
    from k_diffusion.sampling import get_sigmas_karras

    gen = explorer(tiny_sd1_kit, sampler="DPM++ 2M Karras", **SMALL).run()
    schedule = tiny_sd1_kit.denoiser.schedule
    expected = get_sigmas_karras(4, float(schedule.sigma_min), float(schedule.sigma_max), rho=7.0)
    assert gen.trace.sigmas.tolist() == pytest.approx(expected[:-1].tolist(), rel=1e-5)


def test_bare_display_name_takes_a1111_automatic_schedule(tiny_sd1_kit):
    ex = explorer(tiny_sd1_kit, **SMALL)
    assert (ex.settings.sampler, ex.settings.schedule) == ("euler", "normal")
    gen = ex.run(sampler="Euler a")
    assert (ex.settings.sampler, ex.settings.schedule) == ("euler_ancestral", "normal")
    assert torch.equal(gen.latents.tensor, _generate(tiny_sd1_kit, sampler="Euler a").latents.tensor)
    ex.run(sampler="DPM++ 2M")  # A1111 "Automatic" for DPM++ 2M is Karras, as Kit.generate reads it
    assert (ex.settings.sampler, ex.settings.schedule) == ("dpmpp_2m", "karras")
    ex.run(schedule="Exponential")  # an A1111 schedule type alone keeps the sampler
    assert (ex.settings.sampler, ex.settings.schedule) == ("dpmpp_2m", "exponential")
    ex.run(sampler="euler")  # an sdkit name keeps the schedule, as Kit.generate keeps its default
    assert (ex.settings.sampler, ex.settings.schedule) == ("euler", "exponential")
    ex.run(sampler="DPM++ SDE", schedule="Automatic")
    assert (ex.settings.sampler, ex.settings.schedule) == ("dpmpp_sde", "karras")


def test_unknown_names_raise_one_line_naming_the_parameter(tiny_sd1_kit):
    with pytest.raises(ValueError, match=r"^sampler: unknown sampler 'DPM\+\+ 9Z'") as err:
        explorer(tiny_sd1_kit, sampler="DPM++ 9Z")
    assert "\n" not in str(err.value)
    ex = explorer(tiny_sd1_kit, **SMALL)
    with pytest.raises(ValueError, match=r"^sampler: unknown sampler 'nope'"):
        ex.run(sampler="nope")
    with pytest.raises(ValueError, match=r"^schedule: unknown schedule type 'Wobbly'") as err:
        ex.run(schedule="Wobbly")
    assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match="^sampler must be a name or a sampler function, got int"):
        sampler_setting(3, None, "normal")  # type: ignore[arg-type]
    assert ex.settings.sampler == "euler" and ex.settings.schedule == "normal"  # failed calls changed nothing


def test_widget_lists_display_names_and_runs_them(tiny_sd1_kit):
    ex = explorer(tiny_sd1_kit, sampler="DPM++ 2M Karras", **SMALL)
    widget = ex.widget  # ipywidgets without a frontend: built, shows nothing
    assert len(widget.children) == 4
    sampler, schedule = ex.controls["sampler"], ex.controls["schedule"]
    labels = [label for label, _ in sampler.options]
    assert {"Euler", "Euler a", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ SDE", "DDIM", "UniPC"} <= set(labels)
    assert "dpmpp_2m" not in labels and "euler_ancestral" not in labels
    assert (sampler.label, sampler.value) == ("DPM++ 2M", "dpmpp_2m")
    assert (schedule.label, schedule.value) == ("Karras", "karras")
    assert [label for label, _ in schedule.options][:3] == ["Automatic", "Normal", "Karras"]
    # choosing "Euler a" + "Automatic" in the controls and clicking Generate runs A1111's Euler a
    sampler.label, schedule.value = "Euler a", "automatic"
    ex.controls["generate"].click()
    assert (ex.settings.sampler, ex.settings.schedule) == ("euler_ancestral", "normal")
    assert torch.equal(ex.generation.latents.tensor, _generate(tiny_sd1_kit, sampler="Euler a").latents.tensor)


def test_sampler_functions_and_custom_sigmas_in_the_widget(tiny_sd1_kit):
    from sdkit.samplers import dpmpp_2m

    sigmas = torch.tensor([8.0, 3.0, 1.0, 0.3, 0.0])
    ex = explorer(tiny_sd1_kit, sampler=dpmpp_2m, schedule=sigmas, **{k: v for k, v in SMALL.items() if k != "steps"})
    assert len(ex.widget.children) == 4
    widget_sampler, widget_schedule = ex.controls["sampler"], ex.controls["schedule"]
    assert widget_sampler.label == "dpmpp_2m" and widget_sampler.value is dpmpp_2m
    assert widget_schedule.label == "Custom"
    ex.controls["generate"].click()
    reference = _generate(tiny_sd1_kit, sampler="dpmpp_2m", schedule=sigmas, steps=None)
    assert torch.equal(ex.generation.latents.tensor, reference.latents.tensor)
    assert ex.generation.trace.sigmas.tolist() == pytest.approx([8.0, 3.0, 1.0, 0.3])
