"""Joining the process group that ``torchrun`` describes: rank, world size, this process's device, and messages.

torchrun (``python -m torch.distributed.run``) starts the processes and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; ``join()`` reads them, connects to the rendezvous store and
initialises ``torch.distributed``. Without those variables (a plain ``python`` or a notebook) it is a group of one,
and no ``torch.distributed`` call is made at all.

Backends: gloo for everything on the CPU; with CUDA, ``"cpu:gloo,cuda:nccl"`` (tensors on the GPU go through
NCCL, the pickled messages of a sweep through gloo). Each process takes the GPU of its ``LOCAL_RANK``.

Besides collectives, the group exposes the rendezvous store's counters (``add``): processes report progress without
waiting for each other, so rank 0 can draw one progress bar, and a process that finished early waits by polling a
counter (``wait_for``), not inside a collective whose timeout a long sweep could exceed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class Group:
    """This process's place in the job. ``store`` is None for a group of one (or a group someone else made)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    store: Any = None
    owned: bool = False  # whether leave() destroys the process group
    _counters: dict[str, int] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (picklable objects)."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (None elsewhere)."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.world_size > 1:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``tensor`` over all ranks, in place (on the tensor's device)."""
        if self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor

    def add(self, key: str, n: int) -> int:
        """Add ``n`` to the shared counter ``key``; its new value (``n=0`` reads it)."""
        if self.store is None:
            self._counters[key] = self._counters.get(key, 0) + n
            return self._counters[key]
        return int(self.store.add(key, n))

    def wait_for(self, key: str, total: int, on_change: Any = None, poll: float = 0.1) -> None:
        """Block until counter ``key`` reaches ``total``; ``on_change(value)`` after each change (progress bars).

        A group made elsewhere has no store: it waits in a barrier instead (no progress from other ranks)."""
        if self.store is None:
            if self.world_size > 1:
                dist.barrier()
            return
        seen = -1
        while (value := self.add(key, 0)) < total:
            if value != seen and on_change is not None:
                on_change(value)
            seen = value
            time.sleep(poll)
        if on_change is not None:
            on_change(value)

    def leave(self) -> None:
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()
        self.owned = False

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: object) -> None:
        self.leave()


def launched_by_torchrun() -> bool:
    return all(v in os.environ for v in TORCHRUN_VARIABLES)


def join(backend: str | None = None, timeout: timedelta = timedelta(minutes=30)) -> Group:
    """The group this process belongs to, initialising ``torch.distributed`` from torchrun's variables if needed.

    ``backend``: default gloo, or ``"cpu:gloo,cuda:nccl"`` where CUDA is available. ``timeout`` bounds each
    collective and store call (progress waits poll the store and are not bound by it)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    if dist.is_available() and dist.is_initialized():  # someone else made the group: use it as it is
        return Group(dist.get_rank(), dist.get_world_size(), local_rank, device)
    if not launched_by_torchrun():
        return Group(device=device)
    if backend is None:
        backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
    store.set_timeout(timeout)
    # torch.distributed's own keys live under "default_pg" (what init_process_group does with env://), ours under
    # "sdkit", so the two never collide in the shared store
    dist.init_process_group(
        backend, store=dist.PrefixStore("default_pg", store), rank=rank, world_size=world_size, timeout=timeout
    )
    return Group(rank, world_size, local_rank, device, dist.PrefixStore("sdkit", store), owned=True)
