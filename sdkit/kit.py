"""``Kit``: a loaded model's objects side by side, and ``Kit.generate``, the convenience over the recipes.

Every attribute is a plain sdkit object a notebook can use or swap on its own (``kit.vae = sdkit.load_vae(...)``,
``kit.denoiser``, ``kit.prompts``); ``generate`` validates its arguments, then composes them through
``sdkit.recipes``.
"""

from __future__ import annotations

from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from PIL.Image import Image as PILImage
from torch import Tensor

from sdkit.denoisers import DiscreteDenoiser, DiscreteSchedule, alphas_cumprod_from_betas
from sdkit.families import FamilyDefaults, defaults_for
from sdkit.hires import HiresFix, check_hires, hires_sigmas
from sdkit.latents import LatentSpace
from sdkit.limits import check_area, check_batch_size, check_bool, check_int, check_number, check_size, check_steps
from sdkit.metadata import GenerationParameters
from sdkit.noise import SeedSpec, check_seed, resolve_seed
from sdkit.quiet import to_device
from sdkit.trace import Trace
from sdkit.types import Sampler, Step
from sdkit.unet import UNetPredictor
from sdkit.vae import VAE


@dataclass
class Generation:
    """What ``Kit.generate`` returns: PIL images, the seed actually used, the infotext and the trace."""

    images: list[PILImage]
    seed: int
    infotext: str
    parameters: GenerationParameters
    latents: Any = None
    trace: Trace | None = None
    notes: list[str] = field(default_factory=list)  # e.g. the VAE's float32 retry after an fp16 overflow

    def infotext_for(self, index: int) -> str:
        """Image ``index``'s own infotext: its seed and ``Batch pos`` (A1111 writes each image's own seed)."""
        return self.parameters.for_image(index).infotext()

    def save(self, path: str, *, index: int = 0, overwrite: bool = False) -> str:
        """Save image ``index`` with its own infotext; the suffix picks PNG, JPEG or WebP."""
        from sdkit.loading import save_png

        return str(save_png(self.images[index], path, self.infotext_for(index), overwrite=overwrite))

    def _repr_png_(self) -> bytes:
        from sdkit.image import Image

        return Image.from_pil(self.images)._repr_png_()


@dataclass
class Kit:
    """A model's components: ``prompts`` (text), ``denoiser`` (UNet in sigma space), ``vae``, and defaults."""

    family: str
    name: str
    prompts: Any
    denoiser: DiscreteDenoiser
    vae: VAE
    defaults: FamilyDefaults
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    extras: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # a model folder's sdkit.json (embedded model: its metrics)
    latent_space: LatentSpace | None = None  # the UNet's space; a swapped-in VAE must decode it

    # ------------------------------------------------------------------------------------- building
    @classmethod
    def from_components(
        cls,
        parts: dict[str, Any],
        *,
        family: str,
        name: str,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Kit:
        from sdkit.text import PromptEncoder

        device = torch.device(device or "cpu")
        dtype = dtype or torch.float32
        for module in parts.values():
            if isinstance(module, torch.nn.Module):
                if next(module.parameters()).dtype != dtype:
                    module.to(dtype=dtype)
                module.to(device=device).eval().requires_grad_(False)
        sc = parts.get("scheduler_config") or dict(parts["scheduler"].config)
        schedule = DiscreteSchedule(
            alphas_cumprod_from_betas(
                sc.get("num_train_timesteps", 1000),
                sc.get("beta_start", 0.00085),
                sc.get("beta_end", 0.012),
                sc.get("beta_schedule", "scaled_linear"),
            )
        )
        prediction = sc.get("prediction_type", "epsilon")
        denoiser = DiscreteDenoiser(UNetPredictor(parts["unet"]), schedule, prediction)
        prompts = PromptEncoder.for_family(
            family,
            [parts[k] for k in ("tokenizer", "tokenizer_2") if k in parts],
            [parts[k] for k in ("text_encoder", "text_encoder_2") if k in parts],
            zero_empty_negative=family == "sdxl" and bool(parts.get("index", {}).get("force_zeros_for_empty_prompt")),
        )
        defaults = defaults_for(family, v_prediction=prediction == "v_prediction")
        extra_cfg = parts.get("sdkit", {})
        if family == "shapes":
            defaults = FamilyDefaults(
                "shapes",
                extra_cfg.get("default_size", defaults.width),
                extra_cfg.get("default_size", defaults.height),
                extra_cfg.get("default_steps", defaults.steps),
                extra_cfg.get("default_cfg", defaults.cfg),
                defaults.sampler,
                defaults.schedule,
                defaults.description,
            )
        extras = {k: v for k, v in parts.items() if k.startswith("controlnet")}
        vae = VAE.from_diffusers(parts["vae"], family)
        return cls(
            family, name, prompts, denoiser, vae, defaults, device, dtype, extras,
            info=dict(parts.get("sdkit", {})), latent_space=vae.space,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------- speed options
    @property
    def unet(self) -> Any:
        """The diffusers UNet inside the kit's denoiser."""
        return cast(UNetPredictor, self.denoiser.model).unet

    def modules(self) -> dict[str, torch.nn.Module]:
        """Every torch model of the kit by role: ``unet``, ``vae``, ``text_encoder`` (``_2``), ControlNets."""
        mods = {"unet": self.unet, "vae": self.vae.model}
        for k, enc in enumerate(getattr(self.prompts, "encoders", [])):
            mods["text_encoder" + (f"_{k + 1}" if k else "")] = enc.model
        mods.update({k: v for k, v in self.extras.items() if isinstance(v, torch.nn.Module)})
        return mods

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Kit:
        """Move every model to ``device`` and/or ``dtype`` in place (``torch.float16`` on a GPU, ``torch.bfloat16``
        on a GPU or a CPU); ``generate`` then samples in that dtype. Cached prompt encodings are dropped."""
        device = self.device if device is None else torch.device(device)
        dtype = self.dtype if dtype is None else dtype
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating point dtype, got {dtype}")
        for module in self.modules().values():
            to_device(module, device, dtype)
        if (device, dtype) != (self.device, self.dtype) and hasattr(self.prompts, "clear_cache"):
            self.prompts.clear_cache()
        self.device, self.dtype = device, dtype
        return self

    def channels_last(self, enabled: bool = True) -> Kit:
        """Store the UNet's (and ControlNets') conv weights channels-last (NHWC), which cuDNN and oneDNN often run
        faster; images are unchanged up to float rounding. ``enabled=False`` restores the default layout."""
        fmt = torch.channels_last if enabled else torch.contiguous_format
        for name, module in self.modules().items():
            if name == "unet" or name.startswith("controlnet"):
                module.to(memory_format=fmt)
        return self

    def compile(self, mode: str | None = "default", **options: Any) -> Kit:
        """``torch.compile`` the UNet in place (``nn.Module.compile``, so every holder of it, a diffusers pipeline
        too, runs the compiled forward). The first generation pays the compile time; a new image size
        recompiles. ``options`` go to ``torch.compile`` (``backend=``, ``dynamic=``, ``fullgraph=``)."""
        self.modules()["unet"].compile(mode=mode, **options)
        return self

    # ------------------------------------------------------------------------------------- generating
    def _prompt_schedule(self, prompt: str, steps: int) -> list[tuple[int, Any]] | None:
        """Prompt editing (``[a:b:0.5]``): ``[(end_step, cond), ...]``, or None for a plain prompt."""
        from sdkit.text.prompt_syntax import prompt_schedule

        if len(prompt_schedule(prompt, steps)) < 2:
            return None
        return self.prompts.encode_schedule(prompt, steps)

    def parameters(
        self,
        prompt: str,
        negative_prompt: str = "",
        *,
        seed: int = -1,
        steps: int | None = None,
        cfg: float | None = None,
        sampler: str | Sampler | None = None,
        schedule: str | Tensor | None = None,
        width: int | None = None,
        height: int | None = None,
        batch_size: int = 1,
        model: str | None = None,
        subseed: int | None = None,
        subseed_strength: float = 0.0,
        seed_resize_from: tuple[int, int] | None = None,
        eta_noise_seed_delta: int = 0,
        clip_skip: int = 1,
        hires: HiresFix | dict[str, Any] | None = None,
    ) -> tuple[GenerationParameters, Sampler | str, Tensor]:
        """Validate and complete the arguments of ``generate``; returns the parameters, sampler and sigmas."""
        from sdkit.samplers import SAMPLERS
        from sdkit.samplers.names import resolve
        from sdkit.schedules import make_sigmas

        d = self.defaults
        for pname, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
            if not isinstance(text, str):
                raise TypeError(f"{pname} must be a str, got {type(text).__name__}")
        check_seed(seed)
        if subseed is not None:
            check_seed(subseed, "subseed")
        seeds = SeedSpec(0, 0, subseed_strength, seed_resize_from, eta_noise_seed_delta)  # validates the options
        steps = check_steps(d.steps if steps is None else steps)
        cfg = check_number("cfg", d.cfg if cfg is None else cfg)
        width = check_size("width", d.width if width is None else width, self.vae.space.factor)
        height = check_size("height", d.height if height is None else height, self.vae.space.factor)
        batch_size = check_batch_size(batch_size)
        check_area(width, height, batch_size)
        sampler = d.sampler if sampler is None else sampler
        schedule_name = d.schedule if schedule is None else schedule
        if isinstance(sampler, str):
            if sampler in SAMPLERS:
                sampler_name = sampler
            else:
                sampler_name, implied = resolve(sampler)
                if schedule is None and implied:
                    schedule_name = implied
            sampler_fn: Sampler | str = sampler_name
        elif callable(sampler):
            sampler_name, sampler_fn = getattr(sampler, "__name__", "custom"), sampler
        else:
            raise TypeError(f"sampler must be a name or a sampler function, got {type(sampler).__name__}")
        try:
            sigmas = make_sigmas(schedule_name, steps, self.denoiser.schedule, family=self.family)
        except (ValueError, TypeError) as e:
            if "schedule" in str(e):
                raise
            raise type(e)(f"schedule: {e}") from None
        custom = isinstance(schedule_name, Tensor)
        if custom:
            steps = int(sigmas.shape[0]) - 1
        elif sigmas.shape[0] - 1 < steps:  # e.g. ddim_uniform past the model's timesteps: the infotext would lie
            raise ValueError(
                f"steps: schedule {schedule_name!r} gives at most {sigmas.shape[0] - 1} distinct steps for this "
                f"model, got steps={steps}"
            )
        clip_skip = self._check_clip_skip(clip_skip)
        hires_fix = check_hires(hires, width, height, batch_size, self.vae.space.factor, steps)
        if hires_fix is not None and custom:
            raise ValueError("hires: the second pass stretches a named schedule; a custom schedule (sigmas) cannot")
        params = GenerationParameters(
            prompt=prompt,
            negative_prompt=negative_prompt,
            steps=steps,
            sampler=sampler_name,
            schedule="custom" if custom else str(schedule_name),
            cfg=float(cfg),
            seed=resolve_seed(seed),
            subseed=resolve_seed(-1 if subseed is None else subseed, "subseed") if seeds.subseed_strength else None,
            subseed_strength=seeds.subseed_strength,
            seed_resize_from=seeds.resize_from,
            eta_noise_seed_delta=seeds.eta_noise_seed_delta,
            width=width,
            height=height,
            model=self.name,
            batch_size=batch_size,
            sigmas=tuple(float(s) for s in sigmas) if custom else None,
            clip_skip=clip_skip,
            hires=hires_fix,
        )
        return params, sampler_fn, sigmas

    def _check_clip_skip(self, clip_skip: int) -> int:
        """A1111's clip skip, checked against the text encoders; a warning where the family ignores it."""
        clip_skip = check_int("clip_skip", clip_skip)
        for encoder in getattr(self.prompts, "encoders", []):
            encoder.check_clip_skip(clip_skip)
        if clip_skip != 1 and not getattr(self.prompts, "clip_skip_applies", True):
            import warnings

            warnings.warn(
                f"clip_skip={clip_skip} does not change {self.family} encodings (as in A1111: its SD2 and SDXL text "
                "encoders ignore Clip skip); it is recorded in the infotext",
                stacklevel=3,
            )
        return clip_skip

    def _hires_sigmas(self, params: GenerationParameters) -> Tensor:
        """The hires pass's sigmas: the tail of a longer schedule, as A1111 (``sdkit.hires.hires_sigmas``)."""
        from sdkit.schedules import make_sigmas

        assert params.hires is not None
        steps = params.hires.steps or params.steps
        return hires_sigmas(
            lambda n: make_sigmas(params.schedule, n, self.denoiser.schedule, family=self.family),
            steps,
            params.hires.denoising_strength,
        )

    def generate(
        self,
        prompt: str,
        negative_prompt: str = "",
        *,
        seed: int = -1,
        steps: int | None = None,
        cfg: float | None = None,
        sampler: str | Sampler | None = None,
        schedule: str | Tensor | None = None,
        width: int | None = None,
        height: int | None = None,
        batch_size: int = 1,
        init_image: Any = None,
        strength: float | None = None,
        mask: Any = None,
        control: Any = None,
        trace: bool | Trace = False,
        model: str | None = None,
        progress: bool = False,
        subseed: int | None = None,
        subseed_strength: float = 0.0,
        seed_resize_from: tuple[int, int] | None = None,
        eta_noise_seed_delta: int = 0,
        clip_skip: int = 1,
        hires: HiresFix | dict[str, Any] | None = None,
    ) -> Generation:
        """Generate with this model: text to image, or with ``init_image`` (+ ``strength``), ``mask`` (inpainting)
        and ``control`` (ControlNets, see ``sdkit.conditioners``); parameters left out take the family's defaults.

        Seeds work as in A1111 (``sdkit.noise``): image ``i`` of a batch is the single image with ``seed + i``;
        ``subseed``/``subseed_strength`` mix in a variation seed (``-1`` or None: a random one); ``seed_resize_from``
        ``(width, height)`` keeps the composition of that size; ``eta_noise_seed_delta`` is A1111's ENSD.

        ``clip_skip`` is A1111's "Clip skip" (``sdkit.text.encoder``); ``hires`` (``sdkit.hires.HiresFix`` or a
        dict of its fields) adds A1111's Hires. fix to text to image (``sdkit.recipes.hires_fix``)."""
        from sdkit.recipes import hires_fix, txt2img

        if hires is not None and any(v is not None for v in (init_image, strength, mask, control)):
            raise ValueError("hires: the hires fix is a txt2img pass; it cannot go with init_image, mask or control")
        for pname, size in (("width", width), ("height", height)):
            if size is not None:
                check_size(pname, size, self.vae.space.factor)
        if not isinstance(trace, Trace):
            check_bool("trace", trace)
        check_bool("progress", progress)
        conditioning = None
        if any(v is not None for v in (init_image, strength, mask, control)):
            from sdkit.conditioners.generate import resolve_conditioning

            conditioning = resolve_conditioning(self, init_image, strength, mask, control, width, height)
            width, height = conditioning.width, conditioning.height
        if model is not None and model != self.name:
            import warnings

            warnings.warn(f"parameters were made with model {model!r}; generating with {self.name!r}", stacklevel=2)
        params, sampler_fn, sigmas = self.parameters(
            prompt,
            negative_prompt,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            schedule=schedule,
            width=width,
            height=height,
            batch_size=batch_size,
            subseed=subseed,
            subseed_strength=subseed_strength,
            seed_resize_from=seed_resize_from,
            eta_noise_seed_delta=eta_noise_seed_delta,
            clip_skip=clip_skip,
            hires=hires,
        )
        if conditioning is not None:
            params = conditioning.record(params)
        skip = {"clip_skip": params.clip_skip} if params.clip_skip != 1 else {}  # wrapped encode_pair: no kwargs
        hires_cond = None
        cond, uncond = self.prompts.encode_pair(params.prompt, params.negative_prompt, **skip)
        prompt_schedule = self._prompt_schedule(params.prompt, params.steps)
        if prompt_schedule is not None:
            if conditioning is not None or self.family == "sdxl" or params.hires is not None:
                raise NotImplementedError(
                    "prompt: prompt editing ([a:b:0.5]) works in SD1/SD2 txt2img without hires fix only for now"
                )
            chunks = max(prompt_schedule[0][1].embeds.shape[1], uncond.embeds.shape[1]) // 77
            prompt_schedule = self.prompts.encode_schedule(params.prompt, params.steps, chunks=chunks, **skip)
            uncond = self.prompts.encode(params.negative_prompt, chunks, **skip)
        if self.family == "sdxl":  # micro-conditioning time_ids (base: sizes, refiner: aesthetic score)
            from sdkit.sdxl import add_time_ids

            if params.hires is not None:  # the second pass is conditioned on its own size
                f = self.vae.space.factor
                w, h = params.hires.latent_size(params.width, params.height, f)
                hires_cond = add_time_ids(self.unet, cond, uncond, w * f, h * f)
            cond, uncond = add_time_ids(self.unet, cond, uncond, params.width, params.height)
        recorder = trace.start() if isinstance(trace, Trace) else Trace() if trace else None
        if recorder is not None and recorder.space is None:
            recorder.space = self.vae.space  # previews of traced latents need their space
        tail = self._hires_sigmas(params) if params.hires is not None else None
        bar = _progress_bar(params.steps + (0 if tail is None else max(len(tail) - 1, 0))) if progress else None

        watch = FiniteWatch(self.device)

        def on_step(step: Step) -> None:
            watch(step)
            if recorder is not None:
                recorder.on_step(step)
            if bar is not None:
                bar.update(1)

        # an interrupt (KeyboardInterrupt in a notebook) or error mid-run leaves no state behind: the models are
        # only read, no_grad and the progress bar are closed on the way out
        with torch.no_grad(), closing(bar) if bar is not None else nullcontext():
            if conditioning is not None:
                latents, image = conditioning.run(
                    self,
                    cond.to(self.device, self.dtype),
                    uncond.to(self.device, self.dtype),
                    params=params,
                    sampler=sampler_fn,
                    sigmas=sigmas,
                    on_step=on_step,
                    on_cfg_parts=None if recorder is None else recorder.on_cfg_parts,
                )
                watch.finish()
            elif tail is not None:
                assert params.hires is not None
                latents = hires_fix(
                    self.denoiser,
                    self.vae,
                    cond.to(self.device, self.dtype),
                    uncond.to(self.device, self.dtype),
                    sigmas=sigmas,
                    hires_sigmas=tail,
                    hires=params.hires,
                    hires_cond=None
                    if hires_cond is None
                    else (hires_cond[0].to(self.device, self.dtype), hires_cond[1].to(self.device, self.dtype)),
                    sampler=sampler_fn,
                    cfg_scale=params.cfg,
                    seed=params.seed_spec,
                    width=params.width,
                    height=params.height,
                    batch_size=params.batch_size,
                    device=self.device,
                    dtype=self.dtype,
                    on_step=on_step,
                    on_cfg_parts=None if recorder is None else recorder.on_cfg_parts,
                )
                watch.finish()
                image = self.vae.decode(latents)
            else:
                latents = txt2img(
                    self.denoiser,
                    self.latent_space or self.vae.space,
                    cond.to(self.device, self.dtype)
                    if prompt_schedule is None
                    else [(end, c.to(self.device, self.dtype)) for end, c in prompt_schedule],
                    uncond.to(self.device, self.dtype),
                    sigmas=sigmas,
                    sampler=sampler_fn,
                    cfg_scale=params.cfg,
                    seed=params.seed_spec,
                    width=params.width,
                    height=params.height,
                    batch_size=params.batch_size,
                    device=self.device,
                    dtype=self.dtype,
                    on_step=on_step,
                    on_cfg_parts=None if recorder is None else recorder.on_cfg_parts,
                    on_prompt=None if recorder is None else recorder.on_prompt,
                )
                watch.finish()
                image = self.vae.decode(latents)
        return Generation(
            images=image.to_pil(),
            seed=params.seed,
            infotext=params.infotext(),
            parameters=params,
            latents=latents,
            trace=recorder,
            notes=[self.vae.last_decode_note] if self.vae.last_decode_note else [],
        )


def _finite_flags(step: Step) -> Tensor:
    """``[x, denoised, x_next]`` all finite, as a device tensor (reading it is what syncs)."""
    return torch.stack([torch.isfinite(t).all() for t in (step.x, step.denoised, step.x_next)])


def _non_finite_error(step: Step | tuple[int, float, float], flags: Tensor) -> FloatingPointError:
    i, sigma, sigma_next = (step.i, step.sigma, step.sigma_next) if isinstance(step, Step) else step
    x_ok, denoised_ok, _ = (bool(f) for f in flags)
    where = "the step's input" if not x_ok else "the denoiser's estimate" if not denoised_ok else "the sampler's update"
    return FloatingPointError(
        f"sampling produced non-finite latents (NaN/inf) at step {i} (sigma {sigma:.4g} -> {sigma_next:.4g}), "
        f"first in {where}; check the model weights, cfg and dtype (fp16 overflow?)"
    )


def check_finite_step(step: Step) -> None:
    """Raise ``FloatingPointError`` naming the step (and whether the denoiser or the update) where NaN/inf appear."""
    flags = _finite_flags(step)
    if not bool(flags[2]):
        raise _non_finite_error(step, flags)


class FiniteWatch:
    """Finds the step where latents first turn non-finite. On the CPU every step is checked at once (fail fast,
    free); on an accelerator the flags stay on the device and are read once, in ``finish``, so the sampling loop
    never waits for the device."""

    def __init__(self, device: torch.device) -> None:
        self.eager = device.type == "cpu"
        self.flags: list[Tensor] = []
        self.steps: list[tuple[int, float, float]] = []

    def __call__(self, step: Step) -> None:
        if self.eager:
            check_finite_step(step)
            return
        self.flags.append(_finite_flags(step))
        self.steps.append((step.i, step.sigma, step.sigma_next))

    def finish(self) -> None:
        if self.eager or not self.flags:
            return
        flags = torch.stack(self.flags).cpu()  # the one sync
        bad = (~flags[:, 2]).nonzero()
        if len(bad):
            k = int(bad[0])
            raise _non_finite_error(self.steps[k], flags[k])


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sampling", unit="step", leave=False)
