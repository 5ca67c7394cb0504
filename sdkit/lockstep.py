"""Lockstep batching: several sampler runs share each model call, whatever their samplers and schedules.

A sweep over samplers or step counts cannot put its cells in one batch, since every cell walks its own sigmas
with its own algorithm. But each sampler only ever asks the model for ``(x, sigma[b], cond) -> denoised``, and a
diffusers UNet takes a different timestep per image. So every run gets its own thread, all of them call one
shared ``Lockstep`` model, and whenever every live run is waiting for the model, their requests go through it as
one batch (ordered by run, so the result does not depend on thread timing). A 4 samplers x 4 step counts grid
then costs as many model calls as its longest run instead of the sum of all sixteen.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from sdkit.types import ConditionalDenoiser, TextConditioning

T = TypeVar("T")


@dataclass
class _Request:
    run: int
    x: Tensor
    sigma: Tensor
    cond: TextConditioning
    result: Tensor | None = None
    error: BaseException | None = None


class Lockstep:
    """A ``ConditionalDenoiser`` shared by ``runs`` threads; it merges their calls into batched model calls."""

    def __init__(self, model: ConditionalDenoiser, runs: int) -> None:
        self.model = model
        self.live = runs
        self.calls = 0  # batched model calls made
        self._pending: list[_Request] = []
        self._cv = threading.Condition()
        self._local = threading.local()

    def bind_run(self, run: int) -> None:
        """Called once in each worker thread: which run this thread's requests belong to."""
        self._local.run = run

    def __call__(self, x: Tensor, sigma: Tensor, cond: TextConditioning, **extra: Any) -> Tensor:
        if extra:
            raise ValueError(f"lockstep batching takes no extra model inputs, got {sorted(extra)}")
        sigma = sigma.reshape(-1).expand(x.shape[0]) if sigma.numel() == 1 else sigma
        request = _Request(self._local.run, x, sigma, cond)
        with self._cv:
            self._pending.append(request)
            self._flush_if_all_waiting()
            while request.result is None and request.error is None:
                self._cv.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def finished(self) -> None:
        """A run ended (normally or not): the others no longer wait for it."""
        with self._cv:
            self.live -= 1
            self._flush_if_all_waiting()

    def _flush_if_all_waiting(self) -> None:
        if not self._pending or len(self._pending) < self.live:
            return
        requests = sorted(self._pending, key=lambda r: r.run)
        self._pending = []
        try:
            with torch.no_grad():
                out = self.model(
                    torch.cat([r.x for r in requests]),
                    torch.cat([r.sigma.to(requests[0].sigma) for r in requests]),
                    TextConditioning.cat([r.cond for r in requests]),
                )
            self.calls += 1
            for r, part in zip(requests, out.split([r.x.shape[0] for r in requests]), strict=True):
                r.result = part
        except BaseException as e:  # every waiting run sees the failure
            for r in requests:
                r.error = e
        self._cv.notify_all()


def run_in_lockstep(model: ConditionalDenoiser, jobs: Sequence[Callable[[ConditionalDenoiser], T]]) -> list[T]:
    """Run ``jobs[i](shared_model)`` concurrently, batching their model calls; returns their results in order.

    An exception in any job is raised here after all threads have stopped."""
    shared = Lockstep(model, len(jobs))
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        shared.bind_run(i)
        try:
            results[i] = jobs[i](shared)
        except BaseException as e:
            errors.append(e)
        finally:
            shared.finished()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
