"""The one denoiser contract: a discrete-time noise predictor (eps or v) seen as a denoiser in sigma space.

Everything model-specific happens here, once: the sigma <-> timestep mapping, the input scaling
``c_in = 1 / sqrt(sigma^2 + 1)`` and the conversion of the model output to an x0 estimate
(Karras et al. 2022, table 1, "VP" preconditioning with sigma_data = 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit.types import NoisePredictor, TextConditioning

PredictionType = Literal["epsilon", "v_prediction"]
Interpolation = Literal["linear", "log"]


def alphas_cumprod_from_betas(
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    beta_schedule: str = "scaled_linear",
) -> Float[Tensor, " T"]:
    """The training noise schedule as alphas_cumprod (float64). "scaled_linear" is Stable Diffusion's."""
    if beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    elif beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    else:
        raise ValueError(f"beta_schedule must be 'scaled_linear' or 'linear', got {beta_schedule!r}")
    return torch.cumprod(1.0 - betas, dim=0)


@dataclass(frozen=True)
class DiscreteSchedule:
    """A model's training schedule: ``sigmas[t] = sqrt((1 - alphas_cumprod[t]) / alphas_cumprod[t])``.

    ``interpolation`` says how fractional timesteps map to sigmas: "linear" in sigma (diffusers'
    ``np.interp``) or "log" in log-sigma (k-diffusion, A1111, ComfyUI). The two maps below are exact inverses.
    """

    alphas_cumprod: Float[Tensor, " T"]
    interpolation: Interpolation = "linear"

    @property
    def sigmas(self) -> Float[Tensor, " T"]:
        ac = self.alphas_cumprod.double()
        return ((1 - ac) / ac).sqrt()

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    @property
    def num_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    @cached_property
    def _tables(self) -> dict[Any, Any]:
        """The interpolation table per device (and the CPU timestep memo), built once: ``sigma_to_t`` runs at
        every model call."""
        return {}

    def _table(self, device: torch.device | None = None) -> Tensor:
        """Sigmas (or log-sigmas) in float64 on ``device`` (default CPU), cached."""
        device = torch.device("cpu") if device is None else device
        table = self._tables.get(device)
        if table is None:
            table = (self.sigmas.log() if self.interpolation == "log" else self.sigmas).to(device)
            self._tables[device] = table
        return table

    def t_to_sigma(self, t: Tensor | float) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.num_timesteps - 1)
        lo = t.floor().long().clamp(max=self.num_timesteps - 2)
        w = t - lo
        table = self._table()
        v = (1 - w) * table[lo] + w * table[lo + 1]
        return v.exp() if self.interpolation == "log" else v

    def sigma_to_t(self, sigma: Tensor | float) -> Tensor:
        """Fractional timesteps (float64) on the device of ``sigma``, so the sampling loop never waits for the
        device (MPS has no float64: there the map runs on the CPU)."""
        sigma = sigma if isinstance(sigma, Tensor) else torch.as_tensor(sigma, dtype=torch.float64)
        device = torch.device("cpu") if sigma.device.type == "mps" else sigma.device
        sigma = sigma.to(device=device, dtype=torch.float64)
        table = self._table(device)
        v = sigma.clamp_min(1e-10).log() if self.interpolation == "log" else sigma
        v = v.clamp(table[0], table[-1])
        hi = torch.searchsorted(table, v.reshape(-1)).clamp(1, self.num_timesteps - 1).reshape(v.shape)
        lo = hi - 1
        w = (v - table[lo]) / (table[hi] - table[lo])
        return lo + w

    def model_timesteps(self, sigma: Tensor) -> Tensor:
        """``sigma_to_t`` as the float32 timesteps a UNet takes, on the device of ``sigma``. On the CPU (where
        reading values costs no device sync) it is memoised per distinct sigma vector: a sampler asks for the
        same sigmas at every step of every run."""
        if sigma.device.type != "cpu":
            return self.sigma_to_t(sigma).to(device=sigma.device, dtype=torch.float32)
        key = tuple(sigma.reshape(-1).tolist())
        memo = self._tables.setdefault("timesteps", {})
        t = memo.get(key)
        if t is None:
            if len(memo) >= 4096:
                memo.clear()
            t = memo[key] = self.sigma_to_t(sigma).to(torch.float32)
        return t.clone()  # callers may modify their timesteps in place; the memo stays intact


class DiscreteDenoiser:
    """``(x, sigma, cond) -> denoised`` over a ``NoisePredictor`` trained on discrete timesteps.

    ``concat`` (extra input channels, e.g. an inpainting UNet's mask and masked-image latents or SD2-depth's
    depth map) is appended after the input scaling, as those models were trained.
    """

    def __init__(
        self,
        model: NoisePredictor,
        schedule: DiscreteSchedule,
        prediction_type: PredictionType = "epsilon",
    ) -> None:
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
        self.model = model
        self.schedule = schedule
        self.prediction_type: PredictionType = prediction_type

    @property
    def sigma_min(self) -> float:
        return self.schedule.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.schedule.sigma_max

    def __call__(
        self,
        x: Float[Tensor, "b c h w"],
        sigma: Float[Tensor, " b"],
        cond: TextConditioning,
        concat: Tensor | None = None,
        **extra: Any,
    ) -> Float[Tensor, "b c h w"]:
        sigma = sigma.to(x.device).reshape(-1)
        if sigma.shape[0] == 1 and x.shape[0] > 1:
            sigma = sigma.expand(x.shape[0])
        s = sigma.to(x.dtype).view(-1, 1, 1, 1)
        c_in = 1 / (s**2 + 1).sqrt()
        x_in = x * c_in
        if concat is not None:
            x_in = torch.cat([x_in, concat.to(x_in)], dim=1)
        t = self.schedule.model_timesteps(sigma.detach())
        out = self.model(x_in, t, cond, **extra)
        if self.prediction_type == "epsilon":
            return x - s * out
        # v-prediction: x0 = c_skip * x + c_out * v with sigma_data = 1
        return x / (s**2 + 1) - out * s / (s**2 + 1).sqrt()
