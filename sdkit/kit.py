"""``Kit``: a loaded model's objects side by side, and ``Kit.generate``, the convenience over the recipes.

Every attribute is a plain sdkit object a notebook can use or swap on its own (``kit.vae = sdkit.load_vae(...)``,
``kit.denoiser``, ``kit.prompts``). ``generate`` is a short composition, read top to bottom: its arguments checked
and completed (``sdkit.request``), image inputs resolved (``sdkit.conditioning``), the prompts encoded and the
recipe run (``sdkit.generation`` over ``sdkit.recipes``). ``sdkit.loading`` builds kits from files.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from PIL.Image import Image as PILImage
from torch import Tensor

from sdkit import speed
from sdkit.conditioning import resolve_conditioning
from sdkit.denoisers import DiscreteDenoiser, DiscreteSchedule, alphas_cumprod_from_betas
from sdkit.families import FamilyDefaults, defaults_for
from sdkit.finite import FiniteWatch as FiniteWatch  # importable from here, where it was defined before
from sdkit.generation import StepHooks, encode_prompts, run_recipe, start_trace
from sdkit.hires import HiresFix
from sdkit.image_files import save_png
from sdkit.latents import LatentSpace
from sdkit.metadata import GenerationParameters
from sdkit.quiet import to_device
from sdkit.request import check_options, complete, hires_tail
from sdkit.trace import Trace
from sdkit.types import Sampler
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
        text = self.infotext_for(index)  # checks index first: a named error, not an IndexError
        return str(save_png(self.images[index], path, text, overwrite=overwrite))

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
    # ``generate(control=(source, image))`` loads a ControlNet not in ``extras`` with it (sdkit.load sets it)
    load_controlnet: Callable[..., Any] | None = field(default=None, repr=False, compare=False)

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
        """A kit from diffusers components by role (``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``_2`` for
        SDXL, ``scheduler_config``, ControlNets as ``controlnet_*``), moved to ``device`` and ``dtype``."""
        from sdkit.text import PromptEncoder

        device = torch.device(device or "cpu")
        dtype = dtype or torch.float32
        for module in parts.values():
            if isinstance(module, torch.nn.Module):
                if next(module.parameters()).dtype != dtype:
                    module.to(dtype=dtype)
                module.to(device=device).eval().requires_grad_(False)
        # an empty scheduler_config.json means diffusers' defaults, not "look for a scheduler object"
        sc = parts["scheduler_config"] if "scheduler_config" in parts else dict(parts["scheduler"].config)
        betas = (sc.get("beta_start", 0.00085), sc.get("beta_end", 0.012), sc.get("beta_schedule", "scaled_linear"))
        schedule = DiscreteSchedule(alphas_cumprod_from_betas(sc.get("num_train_timesteps", 1000), *betas))
        prediction = sc.get("prediction_type", "epsilon")
        denoiser = DiscreteDenoiser(UNetPredictor(parts["unet"]), schedule, prediction)
        prompts = PromptEncoder.for_family(
            family,
            [parts[k] for k in ("tokenizer", "tokenizer_2") if k in parts],
            [parts[k] for k in ("text_encoder", "text_encoder_2") if k in parts],
            zero_empty_negative=family == "sdxl" and bool(parts.get("index", {}).get("force_zeros_for_empty_prompt")),
        )
        defaults = defaults_for(family, v_prediction=prediction == "v_prediction", config=parts.get("sdkit", {}))
        extras = {k: v for k, v in parts.items() if k.startswith("controlnet")}
        vae = VAE.from_diffusers(parts["vae"], family)
        return cls(
            family, name, prompts, denoiser, vae, defaults, device, dtype, extras,
            info=dict(parts.get("sdkit", {})), latent_space=vae.space,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------- models and speed
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
        speed.move(self.modules(), device, dtype)
        if (device, dtype) != (self.device, self.dtype) and hasattr(self.prompts, "clear_cache"):
            self.prompts.clear_cache()
        self.device, self.dtype = device, dtype
        return self

    def channels_last(self, enabled: bool = True) -> Kit:
        """Store the UNet's (and ControlNets') conv weights channels-last (``sdkit.speed.channels_last``)."""
        speed.channels_last(self.modules(), enabled)
        return self

    def compile(self, mode: str | None = "default", **options: Any) -> Kit:
        """``torch.compile`` the UNet in place (``sdkit.speed.compile_unet``; ``options`` go to ``torch.compile``)."""
        speed.compile_unet(self.modules()["unet"], mode, **options)
        return self

    # ------------------------------------------------------------------------------------- generating
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
        return complete(
            prompt, negative_prompt, seed=seed, steps=steps, cfg=cfg, sampler=sampler, schedule=schedule,
            width=width, height=height, batch_size=batch_size, subseed=subseed, subseed_strength=subseed_strength,
            seed_resize_from=seed_resize_from, eta_noise_seed_delta=eta_noise_seed_delta, clip_skip=clip_skip,
            hires=hires, model=self.name, family=self.family, defaults=self.defaults,
            model_schedule=self.denoiser.schedule, factor=self.vae.space.factor, prompts=self.prompts,
        )  # fmt: skip

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
        factor = self.vae.space.factor
        image_inputs = (init_image, strength, mask, control)
        check_options(
            factor=factor, width=width, height=height, hires=hires, image_inputs=image_inputs, trace=trace,
            progress=progress,
        )  # fmt: skip
        conditioning = None
        if any(v is not None for v in image_inputs):
            conditioning = resolve_conditioning(
                *image_inputs, width, height, factor=factor, defaults=self.defaults, controlnet=self._controlnet
            )
            width, height = conditioning.width, conditioning.height
        if model is not None and model != self.name:
            warnings.warn(f"parameters were made with model {model!r}; generating with {self.name!r}", stacklevel=2)
        params, sampler_fn, sigmas = self.parameters(
            prompt, negative_prompt, seed=seed, steps=steps, cfg=cfg, sampler=sampler, schedule=schedule,
            width=width, height=height, batch_size=batch_size, subseed=subseed, subseed_strength=subseed_strength,
            seed_resize_from=seed_resize_from, eta_noise_seed_delta=eta_noise_seed_delta, clip_skip=clip_skip,
            hires=hires,
        )  # fmt: skip
        if conditioning is not None:
            params = conditioning.record(params)
        prompts = encode_prompts(
            self.prompts, params, family=self.family, unet=self.unet if self.family == "sdxl" else None,
            factor=factor, conditioned=conditioning is not None,
        )  # fmt: skip
        recorder = start_trace(trace, self.vae.space)
        tail, whole = (
            hires_tail(params, self.denoiser.schedule, self.family) if params.hires is not None else (None, None)
        )
        bar = _progress_bar(params.steps + (0 if tail is None else max(len(tail) - 1, 0))) if progress else None
        # an interrupt (KeyboardInterrupt in a notebook) or error mid-run leaves no state behind: the models are
        # only read, no_grad and the progress bar are closed on the way out
        with torch.no_grad(), StepHooks(self.device, recorder, bar) as hooks:
            latents, image = run_recipe(
                self.denoiser, self.vae, self.latent_space or self.vae.space, prompts, params, sampler=sampler_fn,
                sigmas=sigmas, hires_sigmas=tail, hires_schedule=whole, conditioning=conditioning, device=self.device,
                dtype=self.dtype, hooks=hooks,
            )  # fmt: skip
        notes = [self.vae.last_decode_note] if self.vae.last_decode_note else []
        return Generation(
            images=image.to_pil(), seed=params.seed, infotext=params.infotext(), parameters=params, latents=latents,
            trace=recorder, notes=notes,
        )  # fmt: skip

    def _controlnet(self, model: Any) -> Any:
        """A control's model on this kit's device: a ``kit.extras`` key, a source to load, or a ControlNetModel."""
        if isinstance(model, str):
            if model in self.extras:
                return self.extras[model]
            if self.load_controlnet is None:
                raise ValueError(
                    f"control model {model!r} is not a kit.extras key ({', '.join(self.extras) or 'none'}), and this "
                    "kit loads no ControlNets by source (it was not made by sdkit.load); pass a loaded ControlNetModel"
                )
            return self.load_controlnet(model, device=self.device, dtype=self.dtype)
        if isinstance(model, torch.nn.Module):
            return to_device(model, self.device, self.dtype)
        raise TypeError(f"control model must be a ControlNetModel, a kit.extras key or a source, got {type(model)}")


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sampling", unit="step", leave=False)
