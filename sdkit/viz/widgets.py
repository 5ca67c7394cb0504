"""Thin ipywidgets front ends: ``explorer(kit)`` (generate, then scrub through the steps) and
``sweep_widget(kit)`` (a CFG/seed/steps grid). All logic lives in plain methods (``run``, ``frame``,
``static``) that work and are tested without any widget frontend; the widgets are built only when displayed
(``.widget``), and creating them headless (nbclient, CI) is harmless: they simply show nothing.

The explorer shows a grey placeholder of the output size until its first run, and every image at a fixed size
in px: small outputs enlarged by an integer factor, nearest-neighbour (64 px -> 256 px), with the caption under it.

Samplers go by the names users know: A1111 display names ("DPM++ 2M Karras", "Euler a"), sdkit's snake_case
names, or a sampler function; a name's schedule ("Karras", or A1111's "Automatic" one for a bare display name)
is used exactly as ``Kit.generate`` uses it (``sdkit.samplers.names``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image as PILImage
from torch import Tensor

from sdkit.trace import Trace
from sdkit.types import Sampler, Step


class ProgressTrace(Trace):
    """A ``Trace`` that also reports each recorded step to ``callback(done)`` (drives a progress bar)."""

    def __init__(self, callback: Callable[[int], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.callback = callback

    def on_step(self, step: Step) -> None:
        super().on_step(step)
        self.callback(len(self.steps))


DISPLAY_PX = 256  # small outputs are enlarged by an integer factor to about this size: 64 px -> 256 px
MAX_DISPLAY_PX = 512  # larger outputs are shown at most this wide and high (the browser shrinks them)


def display_size(width: int, height: int) -> tuple[int, int]:
    """On-screen size of a ``width x height`` output: a small one enlarged by the integer factor
    ``display_scale`` (pixels stay sharp squares), a large one shrunk to fit ``MAX_DISPLAY_PX``."""
    k = display_scale(width, height)
    shrink = min(1.0, MAX_DISPLAY_PX / (k * max(width, height)))
    return round(width * k * shrink), round(height * k * shrink)


def display_scale(width: int, height: int) -> int:
    return max(1, DISPLAY_PX // max(width, height))


def _png(image: PILImage.Image) -> bytes:
    """``image`` as PNG bytes, nearest-neighbour enlarged by ``display_scale`` (the browser would blur it)."""
    k = display_scale(*image.size)
    if k > 1:
        image = image.resize((image.width * k, image.height * k), PILImage.Resampling.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def placeholder(width: int, height: int, text: str = "press Generate") -> PILImage.Image:
    """What the explorer shows before its first run: a grey ``width x height`` image with ``text`` on it, drawn
    at display size (``display_scale``) so that it stays readable."""
    from PIL import ImageDraw, ImageFont

    k = display_scale(width, height)
    image = PILImage.new("RGB", (width * k, height * k), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(10, min(image.size) // 10))
    draw.text((image.width / 2, image.height / 2), text, fill=(90, 90, 90), font=font, anchor="mm")
    return image


def sampler_setting(
    sampler: str | Sampler, schedule: str | Tensor | None, current: str | Tensor
) -> tuple[str | Sampler, str | Tensor]:
    """``(sampler, schedule)`` as the explorer stores them (snake_case names, or the objects themselves), read
    as ``Kit.generate`` reads its arguments.

    ``sampler``: an A1111 display name with an optional schedule suffix ("DPM++ 2M Karras", "Euler a"), a
    snake_case name, or a sampler function. ``schedule``: a name (A1111's "Karras", "Automatic" too), a tensor of
    sigmas, or None: then the schedule a display name implies (its suffix, else A1111's "Automatic" one), and
    ``current`` for a snake_case name or a function.
    """
    from sdkit.samplers import SAMPLERS
    from sdkit.samplers.names import SCHEDULE_DISPLAY, resolve

    name: str | Sampler
    implied: str | Tensor
    if isinstance(sampler, str):
        try:
            name, implied = resolve(sampler)
        except (ValueError, TypeError) as e:
            raise type(e)(f"sampler: {e}") from None
    elif callable(sampler):
        name, implied = sampler, current
    else:
        raise TypeError(f"sampler must be a name or a sampler function, got {type(sampler).__name__}")
    if schedule is None:
        return name, current if not isinstance(sampler, str) or sampler in SAMPLERS else implied
    if not isinstance(schedule, str):
        return name, schedule  # a tensor of sigmas: Kit.generate validates it
    if not isinstance(name, str) and schedule.strip().lower() == "automatic":
        return name, current  # a function has no A1111 "Automatic" schedule
    try:  # the sampler is known, so only the schedule can be wrong; a schedule's name does not depend on it
        return name, resolve(name if isinstance(name, str) else "euler", schedule)[1]
    except ValueError:
        from sdkit.schedules import SCHEDULES

        raise ValueError(
            f"schedule: unknown schedule type {schedule!r}; valid: Automatic, "
            f"{', '.join(SCHEDULE_DISPLAY.get(k, k) for k in SCHEDULES)} (or sdkit names {', '.join(SCHEDULES)})"
        ) from None


@dataclass
class Settings:
    prompt: str = "a red circle"
    negative_prompt: str = ""
    seed: int = 1
    sampler: str | Sampler = "euler"  # sdkit's snake_case name, or a sampler function
    schedule: str | Tensor = "normal"  # a schedule name, or a tensor of sigmas
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
    """Generate with a trace, then look at any step (``frame(i)``); ``widget`` is the interactive view.

    ``sampler`` takes what ``Kit.generate`` takes ("DPM++ 2M Karras", "Euler a", "dpmpp_2m", a function) and
    ``settings.sampler`` / ``settings.schedule`` hold what it resolved to (``sampler_setting``)."""

    def __init__(self, kit: Any, decoder: Any = "vae", **settings: Any) -> None:
        d = kit.defaults
        self.kit, self.decoder = kit, decoder
        sampler, schedule = settings.pop("sampler", d.sampler), settings.pop("schedule", None)
        self.settings = Settings(**{**dict(steps=d.steps, cfg=d.cfg), **settings})
        self.settings.sampler, self.settings.schedule = sampler_setting(sampler, schedule, d.schedule)
        self.generation: Any = None
        self.controls: dict[str, Any] = {}  # the widget's controls by setting name, once built

    # ----------------------------------------------------------------------------- logic (testable)
    def run(self, progress: Callable[[int], None] | None = None, **overrides: Any) -> Any:
        """Generate with the current settings (updated by ``overrides``), tracing every step."""
        unknown = [key for key in overrides if not hasattr(self.settings, key)]
        if unknown:
            raise TypeError(f"unknown setting {unknown[0]!r}; settings: {', '.join(vars(self.settings))}")
        s = self.settings
        if "sampler" in overrides or "schedule" in overrides:
            sampler = overrides.pop("sampler", s.sampler)
            s.sampler, s.schedule = sampler_setting(sampler, overrides.pop("schedule", None), s.schedule)
        for key, value in overrides.items():
            setattr(s, key, value)
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
        from sdkit.samplers.names import SAMPLER_DISPLAY, SCHEDULE_DISPLAY
        from sdkit.schedules import SCHEDULES

        s = self.settings
        prompt = w.Textarea(value=s.prompt, description="prompt", layout=w.Layout(width="98%"))
        seed = w.IntText(value=s.seed, description="seed")
        # (label, value): A1111's display names shown, sdkit's names (or the objects) stored
        samplers: list[tuple[str, Any]] = [(SAMPLER_DISPLAY.get(name, name), name) for name in SAMPLERS]
        if callable(s.sampler):
            samplers.append((getattr(s.sampler, "__name__", "custom"), s.sampler))
        schedules = [("Automatic", "automatic"), *((SCHEDULE_DISPLAY.get(name, name), name) for name in SCHEDULES)]
        custom_sigmas = s.schedule if isinstance(s.schedule, Tensor) else None
        if custom_sigmas is not None:
            schedules.append(("Custom", "custom"))
        sampler = w.Dropdown(options=samplers, value=s.sampler, description="sampler")
        schedule = w.Dropdown(
            options=schedules, value="custom" if custom_sigmas is not None else s.schedule, description="schedule"
        )
        steps = w.IntSlider(value=s.steps, min=1, max=100, description="steps")
        cfg = w.FloatSlider(value=s.cfg, min=1.0, max=20.0, step=0.5, description="CFG")
        button = w.Button(description="Generate", button_style="primary")
        bar = w.IntProgress(value=0, min=0, max=s.steps, description="steps")
        slider = w.IntSlider(value=0, min=0, max=0, description="step", disabled=True)
        # An explicit size in px: left to itself the front end stretches the image to the page width and pushes
        # the caption off-screen. Until the first run: a grey placeholder of the output size.
        size = (s.width or self.kit.defaults.width, s.height or self.kit.defaults.height)
        picture = w.Image(value=_png(placeholder(*size)), format="png", layout=w.Layout(object_fit="contain"))
        caption = w.Label(value="press Generate, then drag the step slider to see each step")

        def fit(width: int, height: int) -> None:
            shown = display_size(width, height)
            picture.layout.width, picture.layout.height = f"{shown[0]}px", f"{shown[1]}px"

        def show(change: Any = None) -> None:
            i = slider.value
            last = i >= len(self.generation.trace)
            image = self.frame(None if last else i)
            fit(*image.size)
            picture.value = _png(image)
            sigma = "final image" if last else f"x0 estimate at sigma {self.generation.trace[i].sigma:.3g}"
            caption.value = f"step {i}: {sigma}"

        fit(*size)

        def generate(_: Any) -> None:
            bar.max, bar.value = steps.value, 0
            chosen = custom_sigmas if schedule.value == "custom" else schedule.value
            self.run(
                progress=lambda k: setattr(bar, "value", k),
                prompt=prompt.value, seed=seed.value, sampler=sampler.value, schedule=chosen,
                steps=steps.value, cfg=cfg.value,
            )  # fmt: skip
            slider.max = len(self.generation.trace)
            slider.value, slider.disabled = slider.max, False
            show()

        button.on_click(generate)
        slider.observe(show, names="value")
        self.controls = dict(
            prompt=prompt, seed=seed, sampler=sampler, schedule=schedule, steps=steps, cfg=cfg, generate=button,
            step=slider, picture=picture, caption=caption,
        )  # fmt: skip
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
