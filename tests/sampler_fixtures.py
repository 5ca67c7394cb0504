"""Shared pieces of the sampler and schedule tests: the analytic Gaussian denoiser and a tiny random UNet
seen through sdkit's denoiser contract (float64, so parity can be asserted to 1e-5 and below)."""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

from sdkit.denoisers import DiscreteDenoiser, DiscreteSchedule, alphas_cumprod_from_betas
from sdkit.guidance import bind
from sdkit.types import Denoiser, TextConditioning
from sdkit.unet import UNetPredictor

K_DIFFUSION_SAMPLERS = (
    "euler",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_3m_sde",
)
BROWNIAN = ("dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde")  # k-diffusion's default noise is a Brownian tree


class GaussianDenoiser:
    """The ideal denoiser for data ``x0 ~ N(mu, s^2)`` (elementwise):
    ``E[x0 | x] = mu + s^2/(s^2+sigma^2) (x - mu)``."""

    def __init__(self, mu: Tensor | float, s: float) -> None:
        self.mu, self.s = mu, s

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        assert sigma.shape == (x.shape[0],), f"denoisers get sigma[b], got {tuple(sigma.shape)}"
        sig = sigma.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        return self.mu + self.s**2 / (self.s**2 + sig**2) * (x - self.mu)

    def ode_solution(self, x: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
        """The exact probability-flow ODE map: ``x - mu`` scales by ``sqrt(s^2+sigma_to^2)/sqrt(s^2+sigma_from^2)``."""
        ratio = ((self.s**2 + sigma_to**2) / (self.s**2 + sigma_from**2)) ** 0.5
        return self.mu + (x - self.mu) * ratio


@functools.lru_cache(maxsize=1)
def tiny_unet() -> UNetPredictor:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        cross_attention_dim=16,
        norm_num_groups=8,
        attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    return UNetPredictor(unet.double().eval())


def text_conditioning(batch: int = 2) -> TextConditioning:
    g = torch.Generator().manual_seed(1)
    return TextConditioning(torch.randn(batch, 7, 16, generator=g, dtype=torch.float64))


def unet_denoiser(schedule: DiscreteSchedule | None = None) -> tuple[Denoiser, DiscreteSchedule]:
    """The tiny UNet as an epsilon model on SD's training schedule, bound to a random prompt."""
    schedule = schedule or DiscreteSchedule(alphas_cumprod_from_betas())
    model = DiscreteDenoiser(tiny_unet(), schedule, "epsilon")
    return bind(model, text_conditioning()), schedule


def latents(seed: int, batch: int = 2, size: int = 8) -> Tensor:
    return torch.randn(batch, 4, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def a1111_randn_local(size, dtype, device, seed) -> Tensor:
    """A1111's torchsde hook with the CPU RNG source (``sd_samplers_common.replace_torchsde_browinan``):
    ``randn_local(seed, size).to(device=device, dtype=dtype)``, a fresh CPU generator seeded ``seed``."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(size, device="cpu", generator=generator).to(device=device, dtype=dtype)


def a1111_sde_run(sampler: str, model, x: Tensor, tail: Tensor, schedule: Tensor, seeds, record=None) -> Tensor:
    """A1111's DPM++ SDE run (``KDiffusionSampler.create_noise_sampler``): k-diffusion's ``sample_<sampler>`` over
    ``tail`` with ``BrownianTreeNoiseSampler`` trees seeded ``seeds`` over ``schedule``'s positive span, torchsde
    hooked as A1111 hooks it. ``record`` (a list) receives every noise draw."""
    import k_diffusion.sampling as K
    import pytest
    import torchsde._brownian.brownian_interval as brownian_interval

    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        # k-diffusion's DPM++ SDE asks exp(-lambda) a rounding error outside the span; torchsde warns and clamps
        warnings.filterwarnings("ignore", message="Should have t[ab]", category=UserWarning)
        patch.setattr(brownian_interval, "_randn", a1111_randn_local)
        tree = K.BrownianTreeNoiseSampler(x, schedule[schedule > 0].min(), schedule.max(), seed=list(seeds))

        def noise_sampler(sigma, sigma_next):
            draw = tree(sigma, sigma_next)
            if record is not None:
                record.append(draw)
            return draw

        return getattr(K, f"sample_{sampler}")(model, x, tail, noise_sampler=noise_sampler, disable=True)
