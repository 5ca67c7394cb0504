"""Image conditioning of one ``Kit.generate`` call: checks ``init_image`` / ``strength`` / ``mask`` / ``control``,
brings them to the generation size, records them in the parameters and picks the recipe.

It works on a kit's parts (its denoiser, VAE, default size), never on a ``Kit``: ``Kit.generate`` composes it.
A control's model named by a string comes from the kit (a ``kit.extras`` key, or a source that ``sdkit.loading``
loads for a kit ``sdkit.load`` made), through the ``controlnet`` function that ``Kit.generate`` passes.

Strength defaults: 0.75 for img2img (A1111's default denoising strength), 1.0 for inpainting (diffusers'
inpaint pipeline default: the masked region starts from noise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from sdkit import recipes
from sdkit.conditioners.controlnet import Control, as_control, controlled
from sdkit.conditioners.image_input import as_image, check_batch, fit_size
from sdkit.conditioners.masks import Mask
from sdkit.denoisers import DiscreteDenoiser
from sdkit.families import FamilyDefaults
from sdkit.guidance import Cond
from sdkit.image import Image
from sdkit.latents import Latents, LatentSpace
from sdkit.metadata import GenerationParameters
from sdkit.strength import check_strength, strength_sigmas
from sdkit.types import Step, TextConditioning
from sdkit.vae import VAE

ControlNetSource = Callable[[Any], Any]
"""A control's ``model`` (a ``kit.extras`` key, a source to load, a module) -> the ControlNet, on the kit's device."""


@dataclass(frozen=True)
class Conditioning:
    """Validated image conditioning of one ``generate`` call (pixel sizes already fixed)."""

    init: Image | None
    strength: float | None
    mask: Mask | None
    pixel_mask: Tensor | None
    controls: tuple[Control, ...]
    width: int | None
    height: int | None

    def record(self, params: GenerationParameters) -> GenerationParameters:
        """The parameters with strength, mask blur and ControlNets (A1111 / sd-webui-controlnet infotext keys)."""
        return replace(
            params,
            strength=self.strength,
            mask_blur=None if self.mask is None else float(self.mask.blur),
            controls=tuple(c.describe() for c in self.controls),
        )

    def run(
        self,
        denoiser: DiscreteDenoiser,
        vae: VAE,
        space: LatentSpace,
        cond: Cond,
        uncond: TextConditioning,
        *,
        params: GenerationParameters,
        sampler: Any,
        sigmas: Tensor,
        device: torch.device,
        dtype: torch.dtype,
        on_step: Callable[[Step], None] | None = None,
        on_cfg_parts: Any = None,
    ) -> tuple[Latents | None, Image]:
        """Run the recipe these inputs call for with a kit's ``denoiser``, ``vae`` and latent ``space``; returns the
        final latents (None after a paste-back) and pixels."""
        b = params.batch_size
        for name, t in (("init_image", None if self.init is None else self.init.tensor), ("mask", self.pixel_mask)):
            if t is not None:
                check_batch(name, t.shape[0], b)
        for control in self.controls:
            check_batch("control", control.image.tensor.shape[0], b)  # converted by resolve_conditioning
        strength = 1.0 if self.strength is None else self.strength
        run_sigmas = sigmas if self.init is None else strength_sigmas(sigmas, strength)
        size = (params.width, params.height)
        model: Any = denoiser
        if self.controls and run_sigmas.shape[0] >= 2:
            model = controlled(denoiser, self.controls, run_sigmas, size, batch_size=b)
        common = dict(
            sampler=sampler,
            cfg_scale=params.cfg,
            seed=params.seed_spec,
            batch_size=params.batch_size,
            device=device,
            dtype=dtype,
            on_step=on_step,
            on_cfg_parts=on_cfg_parts,
        )
        if self.init is None:
            latents = recipes.txt2img(
                model, space, cond, uncond, sigmas=sigmas, width=params.width, height=params.height, **common
            )
            return latents, vae.decode(latents)
        if self.pixel_mask is None:
            latents = recipes.img2img(model, vae, self.init, cond, uncond, sigmas=sigmas, strength=strength, **common)
            return latents, vae.decode(latents)
        assert self.mask is not None
        image = recipes.inpaint(
            model,
            vae,
            self.init,
            self.pixel_mask,
            cond,
            uncond,
            sigmas=sigmas,
            strength=strength,
            content=self.mask.content,
            **common,
        )
        return None, image


def _resolve_control(spec: Any, controlnet: ControlNetSource) -> Control:
    control = as_control(spec)
    # the image is converted (and checked: size bound, values) first, so a bad one is refused before a model loads
    image = as_image(control.image)
    label = control.label or (control.model if isinstance(control.model, str) else "")
    return replace(control, model=controlnet(control.model), label=label, image=image)


def _named(name: str, error: Exception) -> Exception:
    """The same error type with the parameter's name in front (the converters do not know it)."""
    return error if str(error).startswith(name) else type(error)(f"{name}: {error}")


AUTO_SIZE_AREAS = 4
"""An init image sets the generation size by itself up to this many times the model's default area; a larger one
(a phone photo for a 512 px model) needs ``width``/``height``, instead of an hours-long run at its full size."""


def resolve_conditioning(
    init_image: Any,
    strength: float | None,
    mask: Any,
    control: Any,
    width: int | None,
    height: int | None,
    *,
    factor: int,
    defaults: FamilyDefaults,
    controlnet: ControlNetSource,
) -> Conditioning:
    """Check and convert ``generate``'s image inputs. The init image sets the size unless ``width``/``height``
    are given (it is then resized to them); sides that are not multiples of the VAE ``factor`` raise; the family's
    ``defaults`` bound the size an init image sets by itself; ``controlnet`` brings each control's model."""
    if init_image is None and (mask is not None or strength is not None):
        raise ValueError(f"{'mask' if mask is not None else 'strength'} needs an init_image to work on")
    init = None
    if init_image is not None:
        try:
            raw = as_image(init_image)
            w, h = raw.size
            target = None if width is None and height is None else (width or w, height or h)
            native = defaults.width * defaults.height
            if target is None and w * h > AUTO_SIZE_AREAS * native:  # sampling time grows with the area squared
                raise ValueError(
                    f"image is {w}x{h}, and without width/height it would set the generation size: more than "
                    f"{AUTO_SIZE_AREAS}x this model's default area ({defaults.width}x{defaults.height}); pass "
                    "width= and height= (the image is resized to them)"
                )
            init = fit_size(raw, target, "error" if target is None else "resize", factor)
        except (TypeError, ValueError) as e:
            raise _named("init_image", e) from None
        width, height = init.size
        strength = check_strength((1.0 if mask is not None else 0.75) if strength is None else strength)
    pixel_mask, spec = None, None
    try:
        spec = None if mask is None else mask if isinstance(mask, Mask) else Mask(mask)
        if spec is not None and init is not None:
            resized = init.size != raw.size
            pixel_mask = spec(size=init.size, size_policy="resize" if resized else "error")
    except (TypeError, ValueError) as e:
        raise _named("mask", e) from None
    specs = [] if control is None else control if isinstance(control, list) else [control]
    try:
        controls = tuple(_resolve_control(c, controlnet) for c in specs)
    except (TypeError, ValueError) as e:
        raise _named("control", e) from None
    return Conditioning(init, strength, spec, pixel_mask, controls, width, height)
