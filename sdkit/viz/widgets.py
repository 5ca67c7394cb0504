"""Thin ipywidgets front ends: ``explorer(kit)`` (generate, then scrub through the steps) and
``sweep_widget(kit)`` (a CFG/seed/steps grid). All logic lives in plain methods (``run``, ``frame``,
``static``) that work and are tested without any widget frontend; the widgets are built only when displayed
(``.widget``), and creating them headless (nbclient, CI) is harmless: they simply show nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image as PILImage

from sdkit.trace import Trace
from sdkit.types import Step


class ProgressTrace(Trace):
    """A ``Trace`` that also reports each recorded step to ``callback(done)`` (drives a progress bar)."""

    def __init__(self, callback: Callable[[int], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.callback = callback

    def on_step(self, step: Step) -> None:
        super().on_step(step)
        self.callback(len(self.steps))


def _png(image: PILImage.Image, min_size: int = 256) -> bytes:
    if max(image.size) < min_size:  # enlarge small model outputs so that they can be seen
        k = min_size // max(image.size)
        image = image.resize((image.width * k, image.height * k), PILImage.Resampling.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Settings:
    prompt: str = "a red circle"
    negative_prompt: str = ""
    seed: int = 1
    sampler: str = "euler"
    schedule: str = "normal"
    steps: int = 8
    cfg: float = 7.5
    width: int | None = None  # None: the model's default
    height: int | None = None


class _WidgetView:
    """Builds its ipywidgets view on first use (``widget``) and shows it when displayed in a notebook."""

    _widget: Any = None

    @property
    def widget(self) -> Any:
        if self._widget is None:
            self._widget = self._build()
        return self._widget

    def _build(self) -> Any:
        raise NotImplementedError

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


class Explorer(_WidgetView):
    """Generate with a trace, then look at any step (``frame(i)``); ``widget`` is the interactive view."""

    def __init__(self, kit: Any, decoder: Any = "vae", **settings: Any) -> None:
        d = kit.defaults
        base = dict(steps=d.steps, cfg=d.cfg, sampler=d.sampler, schedule=d.schedule)
        self.kit, self.decoder = kit, decoder
        self.settings = Settings(**{**base, **settings})
        self.generation: Any = None

    # ----------------------------------------------------------------------------- logic (testable)
    def run(self, progress: Callable[[int], None] | None = None, **overrides: Any) -> Any:
        """Generate with the current settings (updated by ``overrides``), tracing every step."""
        for key, value in overrides.items():
            if not hasattr(self.settings, key):
                raise TypeError(f"unknown setting {key!r}")
            setattr(self.settings, key, value)
        s = self.settings
        trace = ProgressTrace(progress) if progress is not None else Trace()
        self.generation = self.kit.generate(
            s.prompt, s.negative_prompt, seed=s.seed, sampler=s.sampler, schedule=s.schedule, steps=s.steps, cfg=s.cfg,
            width=s.width, height=s.height, trace=trace,
        )  # fmt: skip
        return self.generation

    def frame(self, i: int | None = None) -> PILImage.Image:
        """Step ``i``'s x0 estimate through the decoder (``None``: the final image)."""
        from sdkit.previews import preview

        if self.generation is None:
            raise RuntimeError("nothing generated yet: call run() first")
        if i is None:
            return self.generation.images[0]
        latents = self.generation.trace.latents(i, "denoised")[0]
        decoder = self.kit.vae if self.decoder == "vae" else self.decoder
        return preview(latents, decoder, upscale=True).to_pil()[0]

    def static(self, **overrides: Any) -> Any:
        """What the widget shows, as a figure (for headless runs and docs): generate, then all steps."""
        self.run(**overrides)
        return self.generation.trace.plot(self.kit.vae if self.decoder == "vae" else self.decoder)

    # ----------------------------------------------------------------------------- the widget
    def _build(self) -> Any:
        import ipywidgets as w

        from sdkit.samplers import SAMPLERS
        from sdkit.schedules import SCHEDULES

        s = self.settings
        prompt = w.Textarea(value=s.prompt, description="prompt", layout=w.Layout(width="98%"))
        seed = w.IntText(value=s.seed, description="seed")
        sampler = w.Dropdown(options=list(SAMPLERS), value=s.sampler, description="sampler")
        schedule = w.Dropdown(options=list(SCHEDULES), value=s.schedule, description="schedule")
        steps = w.IntSlider(value=s.steps, min=1, max=100, description="steps")
        cfg = w.FloatSlider(value=s.cfg, min=1.0, max=20.0, step=0.5, description="CFG")
        button = w.Button(description="Generate", button_style="primary")
        bar = w.IntProgress(value=0, min=0, max=s.steps, description="steps")
        slider = w.IntSlider(value=0, min=0, max=0, description="step", disabled=True)
        picture = w.Image(format="png")
        caption = w.Label()

        def show(change: Any = None) -> None:
            i = slider.value
            last = i >= len(self.generation.trace)
            picture.value = _png(self.frame(None if last else i))
            sigma = "final image" if last else f"x0 estimate at sigma {self.generation.trace[i].sigma:.3g}"
            caption.value = f"step {i}: {sigma}"

        def generate(_: Any) -> None:
            bar.max, bar.value = steps.value, 0
            self.run(
                progress=lambda k: setattr(bar, "value", k),
                prompt=prompt.value, seed=seed.value, sampler=sampler.value, schedule=schedule.value,
                steps=steps.value, cfg=cfg.value,
            )  # fmt: skip
            slider.max = len(self.generation.trace)
            slider.value, slider.disabled = slider.max, False
            show()

        button.on_click(generate)
        slider.observe(show, names="value")
        controls = w.VBox([prompt, w.HBox([seed, sampler, schedule]), w.HBox([steps, cfg]), w.HBox([button, bar])])
        return w.VBox([controls, slider, picture, caption])


def explorer(kit: Any, decoder: Any = "vae", **settings: Any) -> Explorer:
    """An ``Explorer`` for ``kit``: display it for the widget, or call ``.static(...)`` for a figure."""
    return Explorer(kit, decoder, **settings)


class SweepWidget(_WidgetView):
    """A CFG x seed grid (``sdkit.sweep.sweep``) with a progress bar over its batched runs."""

    def __init__(self, kit: Any, prompt: str = "a red circle", **fixed: Any) -> None:
        self.kit, self.prompt, self.fixed = kit, prompt, fixed
        self.grid: Any = None

    def run(
        self,
        cfgs: list[float],
        seeds: list[int],
        prompt: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        **fixed: Any,
    ) -> Any:
        from sdkit.sweep import sweep

        self.prompt = prompt or self.prompt
        args = {**self.fixed, **fixed}
        self.grid = sweep(self.kit, self.prompt, x=("cfg", cfgs), y=("seed", seeds), on_batch=progress, **args)
        return self.grid

    def _build(self) -> Any:
        import ipywidgets as w

        prompt = w.Text(value=self.prompt, description="prompt", layout=w.Layout(width="98%"))
        cfgs = w.Text(value="1, 3, 7.5, 12", description="CFG values")
        seeds = w.Text(value="1, 2, 3, 4", description="seeds")
        steps = w.IntSlider(value=self.kit.defaults.steps, min=1, max=100, description="steps")
        button = w.Button(description="Sweep", button_style="primary")
        bar = w.IntProgress(value=0, min=0, max=1, description="batches")
        picture = w.Image(format="png")

        def numbers(text: str, kind: type) -> list[Any]:
            return [kind(v) for v in text.replace(";", ",").split(",") if v.strip()]

        def go(_: Any) -> None:
            bar.value = 0

            def progress(done: int, total: int) -> None:
                bar.max, bar.value = total, done

            grid = self.run(
                numbers(cfgs.value, float), numbers(seeds.value, int), prompt.value, progress, steps=steps.value
            )
            picture.value = grid._repr_png_()

        button.on_click(go)
        return w.VBox([prompt, w.HBox([cfgs, seeds, steps]), w.HBox([button, bar]), picture])


def sweep_widget(kit: Any, prompt: str = "a red circle", **fixed: Any) -> SweepWidget:
    """A ``SweepWidget`` for ``kit`` (display it; ``.run(cfgs, seeds)`` works without a frontend)."""
    return SweepWidget(kit, prompt, **fixed)
