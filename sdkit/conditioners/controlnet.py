"""ControlNet (Zhang et al. 2023): a trainable copy of the UNet's encoder that reads a control image (depth,
pose, edges...) and adds residuals to the UNet's skip connections and middle block.

``controlled(denoiser, controls, sigmas)`` wraps a ``DiscreteDenoiser``: at every model call each ControlNet
sees exactly what the UNet sees (the same scaled input ``c_in * x``, timestep and text embeddings, the CFG
batch ``[uncond, cond]`` with its control image repeated the same way), its residuals are scaled by the
control's ``weight`` and summed over ControlNets. A control acts on the steps ``i`` of ``sigmas`` with
``start <= i / n`` and ``(i + 1) / n <= end`` (n steps), the rule of diffusers'
``StableDiffusionControlNetPipeline`` (``controlnet_keep``), so recipes match it.
The control image is RGB in [0, 1], not normalised to [-1, 1] (as the ControlNets were trained).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jaxtyping import Float
from torch import Tensor

from sdkit.conditioners.image_input import Size, check_batch, to_image
from sdkit.denoisers import DiscreteDenoiser
from sdkit.image import Image
from sdkit.limits import check_number
from sdkit.types import TextConditioning


@dataclass(frozen=True)
class Control:
    """One ControlNet and its control image; ``weight`` is diffusers' ``controlnet_conditioning_scale``,
    ``start``/``end`` the fractions of the schedule where it acts (``control_guidance_start``/``_end``)."""

    model: Any
    image: Any
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    label: str = ""  # the name infotext records; by default the key or folder the model came from

    def __post_init__(self) -> None:
        check_number("control weight", self.weight)
        start = check_number("control start", self.start, minimum=0.0, maximum=1.0)
        end = check_number("control end", self.end, minimum=0.0, maximum=1.0)
        if start > end:
            raise ValueError(f"control: need 0 <= start <= end <= 1, got start={start:g}, end={end:g}")
        if not isinstance(self.label, str):
            raise TypeError(f"control label must be a str, got {type(self.label).__name__}")

    @property
    def name(self) -> str:
        model = self.model
        if self.label or isinstance(model, str):
            return self.label or model
        path = str(getattr(getattr(model, "config", None), "_name_or_path", "") or "")
        return path.rstrip("/").split("/")[-1] or type(model).__name__

    def describe(self) -> str:
        """The parameters as sd-webui-controlnet writes them in infotext."""
        return (
            f"Model: {self.name}, Weight: {self.weight:g}, Guidance Start: {self.start:g}, Guidance End: {self.end:g}"
        )


def as_control(spec: Any) -> Control:
    """A ``Control`` from itself or a tuple ``(model, image[, weight[, start[, end]]])``."""
    if isinstance(spec, Control):
        return spec
    if isinstance(spec, tuple) and 2 <= len(spec) <= 5:
        return Control(*spec)
    raise TypeError(
        "control must be a Control(model, image, weight, start, end) or a tuple (model, image[, weight[, start"
        f"[, end]]]), got {type(spec).__name__}"
    )


def control_image(image: Any, size: Size) -> Image:
    """A control image at the generation size (rescaled if needed, as diffusers does), RGB in [0, 1]."""
    return to_image(image, size=size, size_policy="resize")


def step_index(sigmas: Tensor, sigma: float) -> int:
    """The step ``i`` whose interval ``[sigmas[i], sigmas[i+1])`` holds ``sigma`` (exact at schedule points)."""
    return max(0, int((sigmas[:-1] >= sigma).sum().item()) - 1)


def keep(i: int, n: int, start: float, end: float) -> bool:
    """Whether a control acts at step ``i`` of ``n`` (diffusers' ``controlnet_keep`` rule)."""
    return not (i / n < start or (i + 1) / n > end)


class ControlledUNet:
    """A ``NoisePredictor``: the UNet plus the summed, scaled residuals of each ControlNet."""

    def __init__(self, unet: Any, nets: Sequence[Any], images: Sequence[Tensor]) -> None:
        self.unet, self.nets, self.images = unet, list(nets), list(images)
        self.in_channels = int(unet.in_channels)

    def __call__(
        self,
        x_in: Float[Tensor, "b c h w"],
        timestep: Float[Tensor, " b"],
        cond: TextConditioning,
        control_scales: Sequence[float] | None = None,
        **extra: Any,
    ) -> Float[Tensor, "b c h w"]:
        scales = list(control_scales) if control_scales is not None else [1.0] * len(self.nets)
        if cond.batch != x_in.shape[0] and x_in.shape[0] % cond.batch == 0:
            cond = cond.repeat(x_in.shape[0] // cond.batch)
        added = None
        if cond.pooled is not None and "time_ids" in cond.extra:
            added = {"text_embeds": cond.pooled.to(x_in.dtype), "time_ids": cond.extra["time_ids"].to(x_in.dtype)}
        down: list[Tensor] | None = None
        mid: Tensor | None = None
        for net, image, scale in zip(self.nets, self.images, scales, strict=True):
            if scale == 0.0:  # outside [start, end]: residuals times 0 add nothing
                continue
            image = image.to(x_in)
            if image.shape[0] != x_in.shape[0]:  # [uncond, cond] halves each get the same control images
                if x_in.shape[0] % image.shape[0]:
                    raise ValueError(f"control images ({image.shape[0]}) do not divide the model batch {x_in.shape[0]}")
                image = image.repeat(x_in.shape[0] // image.shape[0], 1, 1, 1)
            d, m = net(
                x_in[:, : net.config.in_channels],  # an inpainting UNet's extra channels are not the net's
                timestep,
                encoder_hidden_states=cond.embeds.to(x_in.dtype),
                controlnet_cond=image,
                conditioning_scale=float(scale),
                added_cond_kwargs=added,
                return_dict=False,
            )
            down = list(d) if down is None else [a + b for a, b in zip(down, d, strict=True)]
            mid = m if mid is None else mid + m
        return self.unet(x_in, timestep, cond, down_residuals=down, mid_residual=mid, **extra)


class ControlledDenoiser:
    """A ``ConditionalDenoiser``: ``denoiser`` with ControlNets, each weighted per step of ``sigmas``."""

    def __init__(
        self,
        denoiser: DiscreteDenoiser,
        controls: Sequence[Control],
        sigmas: Tensor,
        size: Size,
        batch_size: int | None = None,
    ) -> None:
        if not isinstance(controls, Sequence):
            raise TypeError(f"controls must be a list of Control, got {type(controls).__name__}")
        controls = [as_control(c) for c in controls]
        if any(isinstance(c.model, str) for c in controls):
            raise TypeError("controlled: load ControlNets first (sdkit.loading.load_controlnet or kit.extras)")
        if sigmas.ndim != 1 or sigmas.shape[0] < 2:
            raise ValueError(
                f"controlled: sigmas must be a 1-D schedule of at least one step, got {tuple(sigmas.shape)}"
            )
        self.base, self.controls = denoiser, controls
        self.sigmas = sigmas.detach().float().cpu()
        images = [control_image(c.image, size).tensor for c in controls]
        if batch_size is not None:
            for image in images:
                check_batch("control", image.shape[0], batch_size)
        self.model = ControlledUNet(denoiser.model, [c.model for c in controls], images)
        self.inner = DiscreteDenoiser(self.model, denoiser.schedule, denoiser.prediction_type)
        self.schedule, self.prediction_type = denoiser.schedule, denoiser.prediction_type

    def scales(self, sigma: float) -> list[float]:
        n = self.sigmas.shape[0] - 1
        i = step_index(self.sigmas, sigma)
        return [c.weight if keep(i, n, c.start, c.end) else 0.0 for c in self.controls]

    def __call__(
        self, x: Float[Tensor, "b c h w"], sigma: Float[Tensor, " b"], cond: TextConditioning, **extra: Any
    ) -> Float[Tensor, "b c h w"]:
        s = float(sigma.reshape(-1)[0])
        return self.inner(x, sigma, cond, control_scales=self.scales(s), **extra)


def controlled(
    denoiser: DiscreteDenoiser,
    controls: Sequence[Control] | Control,
    sigmas: Tensor,
    size: Size,
    batch_size: int | None = None,
) -> ControlledDenoiser:
    """``denoiser`` with ``controls`` acting over the steps of ``sigmas`` (the schedule actually run). With
    ``batch_size``, each control image batch must be 1 (shared) or ``batch_size`` (one per image)."""
    controls = [controls] if isinstance(controls, Control) else controls
    return ControlledDenoiser(denoiser, controls, sigmas, size, batch_size)
