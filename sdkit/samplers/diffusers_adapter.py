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

Step noise takes sdkit's two options, which recipes and ``Kit.generate`` pass to every sampler (see ``StepNoise``):
``generator=`` (an int seed, a ``torch.Generator`` or a list of them, one per image, as diffusers takes) and
``noise_sampler=``. A seeded noise sampler (``sdkit.noise.noise_sampler_for``, what ``generate`` passes) hands
its per-image CPU generators to the scheduler, so a run equals diffusers' own loop with those generators.
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
from sdkit.noise import noise_sampler_for
from sdkit.samplers.base import denoise, read_sigmas, sigma_arg
from sdkit.types import Denoiser, NoiseSampler, Sampler, Step

Generators = torch.Generator | list[torch.Generator]


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


class StepNoise:
    """Feeds a diffusers scheduler's ``step`` its noise from sdkit's ``generator=`` / ``noise_sampler=`` options.

    diffusers schedulers draw step noise inside ``step`` from ``generator=`` (``randn_tensor``: one
    ``torch.randn`` per image for a list of generators), and some (DDIM, DPM-Solver) also take the noise itself
    as ``variance_noise=``. So:

    - ``generator=``: a ``torch.Generator`` or a list goes to ``step`` as is (diffusers' own convention); an int
      seed becomes ``sdkit.noise.noise_sampler_for(seed, x)``, handled as below;
    - ``noise_sampler=`` with per-image CPU ``generators`` whose next draws are its step noise (what
      ``noise_sampler_for`` returns): the generators go to ``step`` as the list, so
      the scheduler draws (in its own dtype) from the streams sdkit's samplers would, and only when it needs
      noise;
    - any other ``noise_sampler`` (e.g. a Brownian tree): called once per step for ``variance_noise=`` when
      ``step`` takes it; a scheduler that can only draw from a generator cannot use it, and says so when it
      actually draws;
    - neither: deterministic schedulers run as they are; a step that draws noise raises, rather than quietly
      using torch's global RNG (randomness is explicit in sdkit).

    Whether a step drew is read off a probe generator's state, so e.g. ``EulerDiscreteScheduler`` without
    ``s_churn`` needs no seed while ``EulerAncestralDiscreteScheduler`` does.
    """

    def __init__(
        self,
        scheduler: Any,
        x: Tensor,
        sigmas: Tensor,
        noise_sampler: NoiseSampler | None,
        generator: int | Generators | None,
        name: str,
    ) -> None:
        if noise_sampler is not None and generator is not None:
            raise ValueError(f"{name}: pass noise_sampler= or generator=, not both")
        if isinstance(generator, bool) or not (
            generator is None
            or isinstance(generator, (int, torch.Generator))
            or (isinstance(generator, list) and generator and all(isinstance(g, torch.Generator) for g in generator))
        ):
            raise TypeError(
                f"{name}: generator must be an int seed, a torch.Generator or a list of them, got {generator!r}"
            )
        if isinstance(generator, int):
            noise_sampler, generator = noise_sampler_for(generator, x), None
        streams = getattr(noise_sampler, "generators", None)
        if isinstance(streams, list) and len(streams) == x.shape[0]:
            noise_sampler, generator = None, list(streams)
        params = inspect.signature(scheduler.step).parameters
        self.name, self.sigmas = name, sigmas
        self.generator = generator if "generator" in params else None
        self.noise_sampler = noise_sampler if "variance_noise" in params else None
        self.unusable = noise_sampler is not None and self.noise_sampler is None
        # no source the scheduler can use: a probe generator tells whether a step drew noise anyway
        usable = self.generator is not None or self.noise_sampler is not None
        self.probe = None if usable or "generator" not in params else torch.Generator().manual_seed(0)

    def step_options(self, i: int) -> dict[str, Any]:
        """The keyword options for ``step`` number ``i``."""
        if self.noise_sampler is not None:
            return {"variance_noise": self.noise_sampler(sigma_arg(self.sigmas, i), sigma_arg(self.sigmas, i + 1))}
        generator = self.probe if self.generator is None else self.generator
        return {} if generator is None else {"generator": generator}

    def probe_state(self) -> Tensor | None:
        return None if self.probe is None else self.probe.get_state()

    def check(self, before: Tensor | None) -> None:
        """Raise if the step just taken drew noise from the probe (``before``: its state before the step)."""
        if self.probe is None or before is None or torch.equal(before, self.probe.get_state()):
            return
        if self.unusable:
            raise ValueError(
                f"noise_sampler: {self.name} draws its step noise from a torch.Generator and cannot use an arbitrary "
                "noise_sampler; pass generator=<int seed or torch.Generator> or sdkit.noise.noise_sampler_for(seed, x)"
            )
        raise ValueError(
            f"{self.name} adds fresh noise at each step: pass generator=<int seed, torch.Generator or a list of "
            "them> or noise_sampler=<sdkit.noise.noise_sampler_for(seed, x) or callable (sigma, sigma_next) -> noise>"
        )


def diffusers_sigmas(scheduler: Any, steps: int, model: DiscreteSchedule | None = None) -> Float[Tensor, " n1"]:
    """The ``steps + 1`` sigmas (ending in 0) that ``scheduler`` uses for ``steps`` steps."""
    sched = _fresh(scheduler, model)
    _check_first_order(sched)
    sched.set_timesteps(steps)
    return _own_sigmas(sched, steps)


def from_diffusers(scheduler: Any, model: DiscreteSchedule | None = None) -> Sampler:
    """A sdkit sampler backed by a diffusers scheduler class (with ``model``, the training schedule) or
    instance (its config is copied; the instance itself is never stepped).

    The sampler takes sdkit's ``generator=`` / ``noise_sampler=`` (see ``StepNoise``: stochastic schedulers
    need one, deterministic ones ignore them) and passes any other options to ``scheduler.step`` (e.g. ``eta``
    for DDIM). The sigmas of a run must be the scheduler's own: ``kit.generate(..., sampler=from_diffusers(s),
    schedule=diffusers_sigmas(s, steps))``.
    """
    name = scheduler.__name__ if inspect.isclass(scheduler) else type(scheduler).__name__

    def diffusers_sampler(
        denoiser: Denoiser,
        x: Float[Tensor, "b c h w"],
        sigmas: Float[Tensor, " n"],
        *,
        noise_sampler: NoiseSampler | None = None,
        generator: int | Generators | None = None,
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
                "sdkit.samplers.diffusers_adapter.diffusers_sigmas(scheduler, steps) as sigmas (Kit.generate: as "
                "schedule=)"
            )
        noise = StepNoise(sched, x, sigmas, noise_sampler, generator, name)
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
            before = noise.probe_state()
            prev = sched.step(eps, t, sample, **noise.step_options(i), **step_options).prev_sample
            noise.check(before)
            x_next = prev * math.sqrt(1 + sigma_next**2) if vp_space else prev
            yield Step(i, sigma, sigma_next, x, denoised, x_next)
            x = x_next

    diffusers_sampler.__name__ = f"diffusers_{name}"
    diffusers_sampler.__doc__ = f"Sampling driven by a fresh diffusers {name} per run (sdkit.samplers.from_diffusers)."
    return diffusers_sampler
