"""Drive sampling with any (first-order-call) diffusers scheduler, behind sdkit's Sampler contract.

diffusers schedulers are stateful objects that work in timesteps and, depending on the class, either in
sigma space (Euler, LMS: ``scale_model_input`` divides by ``sqrt(sigma^2 + 1)``) or in the VP space the
UNet sees (DDIM, DPM-Solver, UniPC: ``scale_model_input`` is the identity). The adapter hides both:

- a fresh scheduler per run (``from_config`` of the given one), so the returned sampler stays stateless;
- the model prediction it expects is the noise ``eps = (x - denoised) / sigma`` from sdkit's denoiser
  (the copy is configured with ``prediction_type="epsilon"``, whatever the model's own type is);
- latents are converted ``x_vp = x / sqrt(1 + sigma^2)`` in and back out for VP-space schedulers.

The scheduler decides its timesteps, so the ``sigmas`` a run gets must be the scheduler's own (compare
within 1e-4 relative); ``diffusers_sigmas(scheduler, steps)`` returns them, to plot or to pass in.
Schedulers that call the model more than once per step (``order > 1``: Heun, KDPM2) are not supported:
use sdkit's ``heun`` / ``dpm_2``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit.denoisers import DiscreteSchedule
from sdkit.samplers.base import denoise, read_sigmas
from sdkit.types import Denoiser, Sampler, Step


def _fresh(scheduler: Any, model: DiscreteSchedule | None) -> Any:
    """A new scheduler instance with epsilon prediction: from an instance's config, or from a class and the
    model's training schedule (its betas recovered from ``alphas_cumprod``)."""
    if inspect.isclass(scheduler):
        if model is None:
            raise ValueError("from_diffusers(<scheduler class>) needs model=DiscreteSchedule to build its betas")
        ac = model.alphas_cumprod.double()
        betas = 1 - ac / torch.cat([ac.new_ones(1), ac[:-1]])
        factory: Any = scheduler  # a diffusers SchedulerMixin subclass
        return factory(num_train_timesteps=model.num_timesteps, trained_betas=betas.tolist(), prediction_type="epsilon")
    return type(scheduler).from_config(scheduler.config, prediction_type="epsilon")


def _check_first_order(sched: Any) -> None:
    if getattr(sched, "order", 1) != 1:
        raise NotImplementedError(
            f"{type(sched).__name__} calls the model {sched.order} times per step; the adapter supports "
            "one call per step (use sdkit.samplers.heun / dpm_2 instead)"
        )


def _own_sigmas(sched: Any, steps: int) -> Tensor:
    """The sigma-space schedule a configured scheduler will visit (float64, ``steps + 1`` entries)."""
    sigmas = getattr(sched, "sigmas", None)
    if sigmas is not None and len(sigmas) == steps + 1:
        return torch.as_tensor(sigmas).double().cpu()
    ac = torch.as_tensor(sched.alphas_cumprod).double()
    t = torch.as_tensor(sched.timesteps).long().cpu()
    return torch.cat([((1 - ac[t]) / ac[t]).sqrt(), torch.zeros(1, dtype=torch.float64)])


def diffusers_sigmas(scheduler: Any, steps: int, model: DiscreteSchedule | None = None) -> Float[Tensor, " n1"]:
    """The ``steps + 1`` sigmas (ending in 0) that ``scheduler`` uses for ``steps`` steps."""
    sched = _fresh(scheduler, model)
    _check_first_order(sched)
    sched.set_timesteps(steps)
    return _own_sigmas(sched, steps)


def from_diffusers(scheduler: Any, model: DiscreteSchedule | None = None) -> Sampler:
    """A sdkit sampler backed by a diffusers scheduler class (with ``model``, the training schedule) or
    instance (its config is copied; the instance itself is never stepped).

    The sampler takes ``generator=`` (a ``torch.Generator``) for stochastic schedulers and passes any other
    options to ``scheduler.step`` (e.g. ``eta`` for DDIM).
    """
    name = scheduler.__name__ if inspect.isclass(scheduler) else type(scheduler).__name__

    def diffusers_sampler(
        denoiser: Denoiser,
        x: Float[Tensor, "b c h w"],
        sigmas: Float[Tensor, " n"],
        *,
        generator: torch.Generator | None = None,
        **step_options: Any,
    ) -> Iterator[Step]:
        sig = read_sigmas(sigmas)
        n = len(sig) - 1
        if n < 1:
            return
        sched = _fresh(scheduler, model)
        _check_first_order(sched)
        sched.set_timesteps(n)
        own = _own_sigmas(sched, n)
        given = torch.tensor(sig, dtype=torch.float64)
        if not torch.allclose(given, own, rtol=1e-4, atol=1e-6):
            raise ValueError(
                f"{name} visits its own sigmas {own.tolist()} for {n} steps, but the run got {sig}; pass "
                "sdkit.samplers.diffusers_adapter.diffusers_sigmas(scheduler, steps) as sigmas"
            )
        if generator is not None and "generator" in inspect.signature(sched.step).parameters:
            step_options["generator"] = generator
        vp_space: bool | None = None
        for i, t in enumerate(sched.timesteps):
            sigma, sigma_next = float(own[i]), float(own[i + 1])
            if vp_space is None:  # identity scale_model_input <=> the scheduler works on x_vp
                probe = torch.ones(1, dtype=torch.float64)
                vp_space = bool(torch.equal(sched.scale_model_input(probe, t), probe))
            sample = x / math.sqrt(1 + sigma**2) if vp_space else x
            sched.scale_model_input(sample, t)  # some schedulers insist on the call
            denoised = denoise(denoiser, x, sigma)
            eps = (x - denoised) / sigma
            prev = sched.step(eps, t, sample, **step_options).prev_sample
            x_next = prev * math.sqrt(1 + sigma_next**2) if vp_space else prev
            yield Step(i, sigma, sigma_next, x, denoised, x_next)
            x = x_next

    diffusers_sampler.__name__ = f"diffusers_{name}"
    diffusers_sampler.__doc__ = f"Sampling driven by a fresh diffusers {name} per run (sdkit.samplers.from_diffusers)."
    return diffusers_sampler
