"""Resource bounds and the argument checks every entry point shares.

Each bound is a module constant: a request beyond it is refused before anything is allocated, with a message that
names the parameter, the value, the bound and how to raise it (assign the constant, e.g.
``sdkit.limits.MAX_SIDE = 16384``). The defaults keep one request within minutes and a few GiB on a laptop CPU and
well within a large GPU:

==========================  ==================  =====================================================
bound                       default             why
==========================  ==================  =====================================================
``MAX_SIDE``                8192 px             each of width and height (SDXL's largest trained size x 4)
``MAX_PIXELS``              4096 x 4096 px      width x height of one image: a plain VAE decode ~32 GiB
``MAX_BATCH_SIZE``          64                  images per call
``MAX_BATCH_PIXELS``        4 x ``MAX_PIXELS``  batch x width x height
``MAX_STEPS``               10,000              sampling steps
==========================  ==================  =====================================================

Prompt length and nesting are bounded where prompts are parsed (``sdkit.text.prompt_syntax``); mask blur where masks
are made (``sdkit.conditioners.masks``).

The checks accept what users pass from numpy and notebooks (``np.int64``, ``np.float32``), refuse booleans where a
number is meant and anything but ``True``/``False`` where a switch is meant (``"no"`` is not False).
"""

from __future__ import annotations

import math
import numbers
import os
import reprlib
from typing import Any

MAX_SIDE = 8192
MAX_PIXELS = 4096 * 4096
MAX_BATCH_SIZE = 64
MAX_BATCH_PIXELS = 4 * MAX_PIXELS
MAX_STEPS = 10_000


def default_threads() -> int:
    """torch's CPU threads for the CLI and the notebooks when neither ``--threads`` nor OMP_NUM_THREADS says: half
    the CPUs, 1 to 4.

    Measured with ``bench/cli_threads.py`` on a shared 2-core machine (load average 5-7): ``sdkit generate "a red
    circle" --steps 20`` took a median 11.5-14.1 s with 1 thread and 27.0-27.8 s with torch's default of 2;
    ``Kit.generate`` alone 0.56-0.57 s against 5.7-9.5 s. Threads that share cores with other work wait on each
    other at every operation, and the embedded model's operations are too small to gain from splitting. Half the
    CPUs leaves the other half to the rest of the machine; the cap of 4 is a guess (nothing above 2 cores was
    measured), so pass ``--threads`` / ``torch.set_num_threads`` on a large idle machine."""
    return min(4, max(1, usable_cpus() // 2))


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, e.g. under ``taskset``)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def decode_memory_gib(width: int, height: int, batch_size: int = 1) -> float:
    """A rough float32 estimate of a plain (untiled) SD VAE decode: about four 128-channel full-size activations."""
    return 128 * 4 * 4 * width * height * batch_size / 2**30


def check_bool(name: str, value: Any) -> bool:
    """A switch: ``True``/``False`` (numpy's too); anything else (``"no"``, ``0``, None) is a TypeError."""
    if _is_bool(value):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} {show(value)}")


def check_int(name: str, value: Any, *, minimum: int = 1, maximum: int | None = None, bound: str = "") -> int:
    """An integer in ``[minimum, maximum]`` (numpy integers accepted, booleans refused). ``bound`` names the
    constant behind ``maximum`` for the message."""
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {type(value).__name__} {show(value)}")
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {allowed}, got {show(value)}{_raise_hint(bound)}")
    return number


def check_number(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None) -> float:
    """A finite real number (numpy scalars accepted, booleans refused), optionally within ``[minimum, maximum]``."""
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number, got {type(value).__name__} {show(value)}")
    number = float(value)
    low = -math.inf if minimum is None else minimum
    high = math.inf if maximum is None else maximum
    if not math.isfinite(number) or not low <= number <= high:
        allowed = "a finite number" if minimum is None and maximum is None else f"a number in [{low:g}, {high:g}]"
        raise ValueError(f"{name} must be {allowed}, got {number!r}")
    return number


def check_choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    """One of the names in ``options`` (a closed choice, a ``Literal``): another type is a TypeError, another
    name a ValueError."""
    allowed = ", ".join(map(repr, options))
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {allowed}, got {type(value).__name__} {show(value)}")
    if value not in options:
        raise ValueError(f"{name} must be one of {allowed}, got {show(value)}")
    return value


def check_size(name: str, value: Any, factor: int) -> int:
    """An image side: a multiple of the latent factor, at most ``MAX_SIDE``."""
    side = check_int(name, value, minimum=factor, maximum=MAX_SIDE, bound="MAX_SIDE")
    if side % factor:
        raise ValueError(f"{name} must be a multiple of {factor}, got {side}")
    return side


def check_area(width: int, height: int, batch_size: int = 1) -> None:
    """Refuse an image (and a batch) beyond ``MAX_PIXELS`` / ``MAX_BATCH_PIXELS`` before anything is allocated."""
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"width x height must be at most {MAX_PIXELS} pixels ({math.isqrt(MAX_PIXELS)}^2), got {width}x{height}, "
            f"whose decode needs about {decode_memory_gib(width, height):.0f} GiB{_raise_hint('MAX_PIXELS')}"
        )
    if batch_size * width * height > MAX_BATCH_PIXELS:
        raise ValueError(
            f"batch_size x width x height must be at most {MAX_BATCH_PIXELS} pixels, got {batch_size} x "
            f"{width}x{height} (a decode of about {decode_memory_gib(width, height, batch_size):.0f} GiB); "
            f"generate in several calls{_raise_hint('MAX_BATCH_PIXELS')}"
        )


def check_batch_size(value: Any) -> int:
    return check_int("batch_size", value, maximum=MAX_BATCH_SIZE, bound="MAX_BATCH_SIZE")


def check_steps(value: Any) -> int:
    return check_int("steps", value, maximum=MAX_STEPS, bound="MAX_STEPS")


def show(value: Any) -> str:
    """``repr(value)`` for a one-line message: shortened (reprlib) and with any line breaks (numpy arrays) folded."""
    return " ".join(reprlib.repr(value).split())


def _is_bool(value: Any) -> bool:
    """``bool`` or numpy's boolean (``numpy.bool_``; its type is named ``bool`` in numpy 2), without importing numpy."""
    kind = type(value)
    return isinstance(value, bool) or (kind.__module__ == "numpy" and kind.__name__ in ("bool_", "bool"))


def _raise_hint(bound: str) -> str:
    return f" (the bound is sdkit.limits.{bound}; assign it to raise it)" if bound else ""
