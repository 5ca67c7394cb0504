"""Noise schedules: pure functions that return a 1-D tensor of sigmas, decreasing, ending in 0.

A schedule is data (print it, plot it with ``sdkit.viz.plot_schedules``, slice it, pass your own). Two kinds:

- continuous ramps between ``sigma_min`` and ``sigma_max`` (``karras``, ``exponential``,
  ``polyexponential``, ``kl_optimal``), returning ``n + 1`` float32 values exactly as k-diffusion's
  ``get_sigmas_*`` do;
- spacings over a model's discrete training schedule (``sdkit.denoisers.DiscreteSchedule``): ``normal``,
  ``simple``, ``sgm_uniform``, ``ddim_uniform``, ``beta`` (ComfyUI's/A1111's definitions), diffusers'
  ``linspace``/``leading``/``trailing`` timestep spacings, ``lcm``, and the published ``align_your_steps``
  tables. These return float64 (the model's table is float64).

``make_sigmas(schedule, steps, model, family)`` is the single entry point (float32 out), ``SCHEDULES``
the registry behind it (its names, torch-free, are ``sdkit.names.SCHEDULE_NAMES``), ``validate_sigmas`` the check
for schedules passed by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from sdkit.denoisers import DiscreteSchedule
from sdkit.limits import check_steps
from sdkit.names import schedule_key


def _check_steps(n: int) -> int:
    """A step count in [1, ``sdkit.limits.MAX_STEPS``] (a schedule of 10^7 steps would take gigabytes)."""
    return check_steps(n)


def _check_range(sigma_min: float, sigma_max: float) -> tuple[float, float]:
    sigma_min, sigma_max = float(sigma_min), float(sigma_max)
    if not (math.isfinite(sigma_min) and math.isfinite(sigma_max)) or not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max (finite), got sigma_min={sigma_min}, sigma_max={sigma_max}")
    return sigma_min, sigma_max


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


# --------------------------------------------------------------------------------- continuous ramps
def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Float[Tensor, " n1"]:
    """Karras et al. 2022, eq. 5: ``sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) -
    sigma_max^(1/rho)))^rho``; rho = 7 spends more steps at low noise."""
    n = _check_steps(n)
    sigma_min, sigma_max = _check_range(sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def exponential(n: int, sigma_min: float, sigma_max: float) -> Float[Tensor, " n1"]:
    """Evenly spaced in log sigma (equal steps in the DPM-Solver variable ``lambda = -log sigma``)."""
    n = _check_steps(n)
    sigma_min, sigma_max = _check_range(sigma_min, sigma_max)
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> Float[Tensor, " n1"]:
    """A polynomial ramp of degree rho in log sigma (rho = 1 is ``exponential``)."""
    n = _check_steps(n)
    sigma_min, sigma_max = _check_range(sigma_min, sigma_max)
    ramp = torch.linspace(1, 0, n) ** rho
    return _append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def kl_optimal(n: int, sigma_min: float, sigma_max: float) -> Float[Tensor, " n1"]:
    """Evenly spaced in ``arctan(sigma)`` (Sabour et al. 2024, "Align Your Steps", the KL-optimal schedule
    for Gaussian data of unit variance; ComfyUI's ``kl_optimal``)."""
    n = _check_steps(n)
    sigma_min, sigma_max = _check_range(sigma_min, sigma_max)
    ramp = torch.arange(n, dtype=torch.float32) / max(n - 1, 1)  # n = 1: just sigma_max
    return _append_zero((ramp * math.atan(sigma_min) + (1 - ramp) * math.atan(sigma_max)).tan())


# ------------------------------------------------------------------ spacings over a discrete schedule
def _sigma_at(model: DiscreteSchedule, t: Tensor, interpolation: str) -> Tensor:
    return replace(model, interpolation=interpolation).t_to_sigma(t)  # type: ignore[arg-type]


def normal(n: int, model: DiscreteSchedule) -> Float[Tensor, " n1"]:
    """Timesteps evenly spaced from T-1 to 0, sigma interpolated in log sigma: k-diffusion's
    ``DiscreteSchedule.get_sigmas``, ComfyUI's "normal", A1111's "Uniform"/"Normal"."""
    n = _check_steps(n)
    t = torch.linspace(model.num_timesteps - 1, 0, n, dtype=torch.float64)
    return _append_zero(_sigma_at(model, t, "log"))


def sgm_uniform(n: int, model: DiscreteSchedule) -> Float[Tensor, " n1"]:
    """Like ``normal`` but with ``n + 1`` evenly spaced timesteps, dropping the last (t = 0): the SGM
    (Stability generative-models) discretisation, ComfyUI's "sgm_uniform"."""
    n = _check_steps(n)
    t = torch.linspace(model.num_timesteps - 1, 0, n + 1, dtype=torch.float64)[:-1]
    return _append_zero(_sigma_at(model, t, "log"))


def simple(n: int, model: DiscreteSchedule) -> Float[Tensor, " n1"]:
    """Every (T/n)-th entry of the model's sigma table from the top (ComfyUI's "simple")."""
    n = _check_steps(n)
    table = model.sigmas
    stride = model.num_timesteps / n
    return _append_zero(torch.stack([table[-(1 + int(k * stride))] for k in range(n)]))


def ddim_uniform(n: int, model: DiscreteSchedule) -> Float[Tensor, " n1"]:
    """Every (T // n)-th timestep starting at t = 1 (ComfyUI's "ddim_uniform", like DDIM's "leading" spacing
    with steps_offset 1). When n does not divide T this gives a few more than n steps, as ComfyUI does."""
    n = _check_steps(n)
    table = model.sigmas
    stride = max(model.num_timesteps // n, 1)
    picked = table[1::stride].flip(0)
    return _append_zero(picked)


def beta(n: int, model: DiscreteSchedule, alpha: float = 0.6, beta: float = 0.6) -> Float[Tensor, " n1"]:
    """Timesteps at quantiles of a Beta(alpha, beta) distribution (Lee et al. 2024, "Beta Sampling is All
    You Need", arXiv:2407.12173; ComfyUI's "beta" with alpha = beta = 0.6), rounded to integers; repeated
    timesteps are dropped, so very large n can give fewer steps. Uses scipy's Beta quantile function."""
    n = _check_steps(n)
    try:
        from scipy.stats import beta as beta_distribution
    except ImportError as e:  # pragma: no cover - scipy comes with sdkit's dependencies
        raise ImportError("the 'beta' schedule needs scipy (pip install scipy)") from e
    quantiles = 1 - np.linspace(0, 1, n, endpoint=False)
    ts = np.rint(beta_distribution.ppf(quantiles, alpha, beta) * (model.num_timesteps - 1)).astype(np.int64)
    keep = [int(t) for k, t in enumerate(ts) if k == 0 or t != ts[k - 1]]
    return _append_zero(model.sigmas[torch.tensor(keep)])


def linspace(n: int, model: DiscreteSchedule) -> Float[Tensor, " n1"]:
    """diffusers' ``timestep_spacing="linspace"`` (EulerDiscreteScheduler): n float32 timesteps evenly from
    T-1 to 0, sigma interpolated linearly (``np.interp``)."""
    n = _check_steps(n)
    t = torch.from_numpy(np.linspace(0, model.num_timesteps - 1, n, dtype=np.float32)[::-1].copy())
    return _append_zero(_sigma_at(model, t.double(), "linear"))


def leading(n: int, model: DiscreteSchedule, steps_offset: int = 1) -> Float[Tensor, " n1"]:
    """diffusers' ``timestep_spacing="leading"``: ``t = k * (T // n) + steps_offset`` (Stable Diffusion's
    configs use steps_offset = 1). Never reaches t = T-1, so it starts below the model's sigma_max.
    diffusers then scales the initial noise by ``sqrt(sigma_0^2 + 1)`` (``init_noise_sigma``) instead of
    ``sigma_0``."""
    n = _check_steps(n)
    stride = model.num_timesteps // n
    t = torch.from_numpy((np.arange(0, n) * stride).round()[::-1].copy() + steps_offset)
    return _append_zero(_sigma_at(model, t.double(), "linear"))


def trailing(n: int, model: DiscreteSchedule) -> Float[Tensor, " n1"]:
    """diffusers' ``timestep_spacing="trailing"``: ``t = round(T - k T/n) - 1``, always starting at t = T-1
    (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps Are Flawed", table 2)."""
    n = _check_steps(n)
    stride = model.num_timesteps / n
    t = torch.from_numpy(np.arange(model.num_timesteps, 0, -stride).round().copy() - 1)
    return _append_zero(_sigma_at(model, t.double(), "linear"))


def lcm(n: int, model: DiscreteSchedule, original_steps: int = 50) -> Float[Tensor, " n1"]:
    """The timesteps of Latent Consistency Models (diffusers' LCMScheduler): n evenly chosen points of the
    ``original_steps``-step distillation grid ``t = k (T // original_steps) - 1``."""
    n = _check_steps(n)
    if n > original_steps:
        raise ValueError(f"lcm schedule: steps ({n}) cannot exceed original_steps ({original_steps})")
    stride = model.num_timesteps // original_steps
    grid = (np.arange(1, original_steps + 1) * stride - 1)[::-1]
    idx = np.floor(np.linspace(0, len(grid), num=n, endpoint=False)).astype(np.int64)
    return _append_zero(model.sigmas[torch.from_numpy(grid[idx].copy())])


# Align Your Steps (Sabour, Fidler, Kreis 2024, arXiv:2404.14507): the 10-step schedules NVIDIA published
# for Stable Diffusion 1.5 and SDXL, https://research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html
# (the same numbers as ComfyUI's comfy_extras/nodes_align_your_steps.py). Other step counts interpolate
# log-linearly, as that page prescribes; the last value is replaced by 0.
# fmt: off
AYS_TABLES: dict[str, tuple[float, ...]] = {
    "sd1": (14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
            0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582),
    "sdxl": (14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141,
             0.5550693289, 0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582),
}
# fmt: on


def align_your_steps(n: int, family: str = "sd1") -> Float[Tensor, " n1"]:
    """NVIDIA's optimised schedule for ``family`` ("sdxl" uses the SDXL table, every other family the SD 1.5
    one: both are tuned for SD's scaled-linear training schedule, sigma 0.029 to 14.6)."""
    n = _check_steps(n)
    table = np.array(AYS_TABLES["sdxl" if family == "sdxl" else "sd1"])
    if n + 1 != len(table):
        xs = np.linspace(0, 1, len(table))
        log_increasing = np.log(table[::-1])
        table = np.exp(np.interp(np.linspace(0, 1, n + 1), xs, log_increasing))[::-1].copy()
    sigmas = torch.from_numpy(table.copy()).double()
    sigmas[-1] = 0.0
    return sigmas


# ---------------------------------------------------------------------------------- registry, checks
ScheduleFn = Callable[[int, DiscreteSchedule, str], Tensor]
"""Registry entries: ``(steps, model schedule, family) -> sigmas``."""

SCHEDULES: dict[str, ScheduleFn] = {
    "normal": lambda n, m, f: normal(n, m),
    "karras": lambda n, m, f: karras(n, m.sigma_min, m.sigma_max),
    "exponential": lambda n, m, f: exponential(n, m.sigma_min, m.sigma_max),
    "polyexponential": lambda n, m, f: polyexponential(n, m.sigma_min, m.sigma_max),
    "sgm_uniform": lambda n, m, f: sgm_uniform(n, m),
    "simple": lambda n, m, f: simple(n, m),
    "ddim_uniform": lambda n, m, f: ddim_uniform(n, m),
    "beta": lambda n, m, f: beta(n, m),
    "kl_optimal": lambda n, m, f: kl_optimal(n, m.sigma_min, m.sigma_max),
    "align_your_steps": lambda n, m, f: align_your_steps(n, f),
    "linspace": lambda n, m, f: linspace(n, m),
    "leading": lambda n, m, f: leading(n, m),
    "trailing": lambda n, m, f: trailing(n, m),
    "lcm": lambda n, m, f: lcm(n, m),
}


def validate_sigmas(sigmas: Tensor) -> Float[Tensor, " n1"]:
    """Check a hand-made schedule: a 1-D tensor of at least 2 finite sigmas, >= 0, strictly decreasing
    (samplers divide by step lengths), ending in 0. Raises ValueError naming the problem."""
    if not isinstance(sigmas, Tensor):
        raise ValueError(f"a custom schedule must be a torch.Tensor of sigmas, got {type(sigmas).__name__}")
    if sigmas.ndim != 1:
        raise ValueError(f"a custom schedule must be 1-D, got shape {tuple(sigmas.shape)}")
    if sigmas.shape[0] < 2:
        raise ValueError(f"a custom schedule needs at least 2 sigmas (one step), got {sigmas.shape[0]}")
    if not sigmas.is_floating_point():
        raise ValueError(f"a custom schedule must be floating point, got {sigmas.dtype}")
    values = sigmas.detach().cpu().double()
    if not torch.isfinite(values).all():
        raise ValueError(f"a custom schedule must be finite, got {values.tolist()}")
    if (values < 0).any():
        raise ValueError(f"sigmas must be >= 0, got {values.tolist()}")
    bad = torch.nonzero(values[1:] >= values[:-1]).flatten()
    if len(bad):
        k = int(bad[0])
        raise ValueError(
            f"sigmas must be strictly decreasing: sigmas[{k}] = {float(values[k])} is followed by "
            f"{float(values[k + 1])}"
        )
    if float(values[-1]) != 0.0:
        raise ValueError(f"a custom schedule must end in 0 (the clean image), it ends in {float(values[-1])}")
    return sigmas


def make_sigmas(
    schedule: str | Tensor, steps: int, model: DiscreteSchedule, family: str = "sd1"
) -> Float[Tensor, " n1"]:
    """The float32 sigmas for a schedule name (see ``SCHEDULES``) or a hand-made tensor (validated; then
    ``steps`` is ignored, the tensor decides)."""
    if isinstance(schedule, Tensor):
        return validate_sigmas(schedule).float()
    if not isinstance(schedule, str):
        raise TypeError(f"schedule must be a name or a 1-D tensor of sigmas, got {type(schedule).__name__}")
    key = schedule_key(schedule)
    if key not in SCHEDULES:
        raise ValueError(
            f"unknown schedule {schedule!r}; valid names: {', '.join(SCHEDULES)} (or pass a 1-D tensor of sigmas)"
        )
    return SCHEDULES[key](_check_steps(steps), model, family).float()
