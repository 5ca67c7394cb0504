"""Where does sdkit's sampling loop spend its time on a GPU, next to diffusers' loop? A diagnostic, not a benchmark.

    python bench/gpu_loop_profile.py            # full-size SD 1.5 at 512 px, fp16, 10 Euler steps + CFG
    python bench/gpu_loop_profile.py --tiny     # the tiny config on the CPU (a smoke test)

Prints, for each loop: wall ms per step (synchronised), the GPU-busy ms per step and the top operators by CUDA
and by CPU time from ``torch.profiler``; then the UNet alone, called 20 times with the inputs each loop gives it.
A loop whose wall time exceeds its GPU time is bound by the host (Python and kernel launches).
Writes ``gpu_loop_profile.txt`` to ``$OUT`` (or the current folder).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from common import interleaved
from gpu_benchmark import Runner, build, synced
from torch.profiler import ProfilerActivity, profile


def main() -> None:
    steps, lines = 10, []
    tiny = "--tiny" in sys.argv
    device = torch.device("cpu" if tiny else "cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])

    def wall_ms(fn: Any) -> float:
        """Median wall milliseconds of 3 synchronised calls after a warm-up."""
        return 1e3 * interleaved({"run": synced(device, fn)}, 3)["run"]

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    kit, pipe = build("sd1", tiny, device, torch.float32 if tiny else torch.float16)
    r = Runner("sd1", kit, pipe, 64 if tiny else 512, steps, device)
    unet = kit.unet
    captured: dict[str, tuple[Any, Any]] = {}
    for name, fn in (("sdkit", r.sdkit_loop), ("diffusers", r.diffusers_loop)):

        def keep_first(module: Any, args: Any, kwargs: Any, n: str = name) -> None:  # returns None: inputs unchanged
            captured.setdefault(n, (args, kwargs))

        hook = unet.register_forward_pre_hook(keep_first, with_kwargs=True)
        fn()
        hook.remove()
        ms = wall_ms(fn) / steps
        with profile(activities=activities) as prof:
            synced(device, fn)()
        events = prof.key_averages()
        gpu_ms = sum(e.self_device_time_total for e in events) / 1e3 / steps
        say(f"== {name}: wall {ms:.2f} ms/step, GPU kernels {gpu_ms:.2f} ms/step (profiled run)")
        say(events.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60))
        say(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))
    for name, (args, kwargs) in captured.items():
        described = {k: (tuple(v.shape), v.dtype, v.stride()) for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
        described.update({i: (tuple(a.shape), a.dtype, a.stride()) for i, a in enumerate(args)})
        with torch.no_grad():
            ms = wall_ms(lambda a=args, k=kwargs: [unet(*a, **k) for _ in range(20)]) / 20
        say(f"UNet alone with {name}'s inputs: {ms:.2f} ms/call  {described}")
    out = Path(os.environ.get("OUT", ".")) / "gpu_loop_profile.txt"
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
