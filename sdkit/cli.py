"""The command line: ``sdkit generate PROMPT ... -o out.png``, ``sdkit info out.png`` and ``sdkit sweep sweep.toml``.

Bad arguments end the program with one line naming the parameter (exit status 2), before anything is loaded
or written, and before torch is imported: ``--help`` and argument errors answer at once (the checks use only the
torch-free ``sdkit.limits`` and ``sdkit.names``; ``tests/test_cli_startup.py`` keeps it so).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_MODEL = "shapes"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdkit", description="A modular Stable Diffusion toolkit.")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate an image from a prompt")
    g.add_argument("prompt")
    g.add_argument("--negative", "-n", default="", help="negative prompt")
    g.add_argument("--model", "-m", default=DEFAULT_MODEL, help="'shapes', a diffusers folder, a file or a hub id")
    g.add_argument("--seed", type=int, default=-1, help="seed in [0, 2^64), or -1 for a random one")
    g.add_argument("--steps", type=int, default=None)
    g.add_argument("--sampler", default=None, help="e.g. euler, 'Euler a', 'DPM++ 2M Karras'")
    g.add_argument("--schedule", default=None, help="e.g. normal, karras, exponential")
    g.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale")
    g.add_argument("--width", type=int, default=None)
    g.add_argument("--height", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=1)
    g.add_argument("--clip-skip", type=int, default=1, help="A1111's Clip skip: 1 = last layer, 2 = penultimate")
    g.add_argument("--hires-scale", type=float, default=None, help="hires fix: upscale factor (default 2)")
    g.add_argument("--hires-steps", type=int, default=None, help="hires fix: steps of the second pass (0 = --steps)")
    g.add_argument("--hires-strength", type=float, default=None, help="hires fix: denoising strength (default 0.7)")
    g.add_argument("--hires-upscaler", default=None, help="hires fix: 'Latent' (default), 'Lanczos', 'Nearest', ...")
    g.add_argument("--allow-pickle", action="store_true", help="allow loading pickled .ckpt files (weights only)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    g.add_argument(
        "--output",
        "-o",
        default="out.png",
        help="output .png/.jpg/.webp (index added for batches)",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: OMP_NUM_THREADS if set, else half the CPUs, from 1 to 4; on a busy "
        "2-core machine one image took 11-14 s with 1 thread and 27-28 s with torch's default of 2)",
    )
    i = sub.add_parser("info", help="print the generation parameters stored in a PNG")
    i.add_argument("image")
    s = sub.add_parser(
        "sweep",
        help="render a parameter grid from a .json/.toml file (sdkit.distributed.config); under torchrun, over all "
        "its processes; rerun to resume",
    )
    s.add_argument("config")
    s.add_argument("--output", "-o", default=None, help="output folder (default: the file's out, or its name)")
    s.add_argument("--threads", type=int, default=None, help="CPU threads for torch per process (as for generate)")
    return p


def _outputs(path: Path, n: int) -> list[Path]:
    return [path] if n == 1 else [path.with_name(f"{path.stem}-{k}{path.suffix}") for k in range(n)]


def _quiet_libraries() -> None:
    """The CLI prints its own progress bar and errors; the libraries' loading chatter is noise there."""
    import diffusers
    import transformers

    for lib in (diffusers, transformers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()


def _precheck(args: argparse.Namespace) -> None:
    """Checks that need no model (the same ones ``Kit.parameters`` makes), so a typo fails before seconds of
    loading and before any output path is worked out. They import no torch (see the module doc)."""
    from sdkit.limits import (
        MAX_STEPS,
        check_area,
        check_batch_size,
        check_int,
        check_number,
        check_size,
        check_steps,
        usable_cpus,
    )
    from sdkit.names import SCHEDULE_NAMES, resolve, schedule_key

    if not args.prompt.strip():
        raise ValueError(f"prompt must not be empty, got {args.prompt!r}")
    if not -1 <= args.seed < 2**64:  # sdkit.noise.check_seed's range
        raise ValueError(f"--seed must be in [0, 2^64) or -1 for random, got {args.seed}")
    if args.steps is not None:
        check_steps(args.steps)
    if args.cfg is not None:
        check_number("--cfg", args.cfg)
    batch_size = check_batch_size(args.batch_size)
    width, height = (
        8 if v is None else check_size(f"--{k}", v, 8) for k, v in (("width", args.width), ("height", args.height))
    )
    check_area(width, height, batch_size)
    if args.sampler is not None:
        resolve(args.sampler)  # raises, listing the valid names
    if args.schedule is not None and schedule_key(args.schedule) not in SCHEDULE_NAMES:
        raise ValueError(f"--schedule: unknown schedule {args.schedule!r}; valid names: {', '.join(SCHEDULE_NAMES)}")
    check_int("--clip-skip", args.clip_skip)
    # the hires fix's bounds (sdkit.hires.HiresFix checks them again, after loading)
    if args.hires_scale is not None and check_number("--hires-scale", args.hires_scale) <= 0:
        raise ValueError(f"--hires-scale must be a number > 0, got {args.hires_scale}")
    if args.hires_steps is not None:
        check_int("--hires-steps", args.hires_steps, minimum=0, maximum=MAX_STEPS, bound="MAX_STEPS")
    if args.hires_strength is not None:
        check_number("--hires-strength", args.hires_strength, minimum=0.0, maximum=1.0)
    if args.hires_upscaler is not None and not args.hires_upscaler.strip():
        raise ValueError(f"--hires-upscaler must be a non-empty name, got {args.hires_upscaler!r}")
    if args.threads is not None:  # more threads than CPUs only wait on each other
        check_int("--threads", args.threads, maximum=usable_cpus())


def _hires(args: argparse.Namespace) -> dict[str, object] | None:
    """The hires fix options given (any of them turns it on); None without them. ``_precheck`` checked them."""
    options = {
        "scale": args.hires_scale,
        "steps": args.hires_steps,
        "denoising_strength": args.hires_strength,
        "upscaler": args.hires_upscaler,
    }
    given = {k: v for k, v in options.items() if v is not None}
    return given or None


def _set_threads(args: argparse.Namespace) -> None:
    """``--threads``, else OMP_NUM_THREADS (torch follows it by itself), else ``sdkit.limits.default_threads()``."""
    if args.threads is None and os.environ.get("OMP_NUM_THREADS"):
        return
    import torch

    from sdkit.limits import default_threads

    torch.set_num_threads(args.threads or default_threads())


def _generate(args: argparse.Namespace) -> int:
    from sdkit.names import IMAGE_FORMATS

    _precheck(args)
    hires = _hires(args)
    outputs = _outputs(Path(args.output), args.batch_size)
    for out in outputs:
        if out.suffix.lower() not in IMAGE_FORMATS:
            raise ValueError(f"--output must end in {', '.join(IMAGE_FORMATS)} (the suffix sets the format), got {out}")
        if out.exists() and not args.overwrite:
            raise ValueError(f"--output {out} exists; pass --overwrite to replace it")
        if not out.parent.is_dir():
            raise ValueError(f"--output folder {out.parent} does not exist")
    import sdkit

    _set_threads(args)
    _quiet_libraries()
    kit = sdkit.load(args.model, allow_pickle=args.allow_pickle)
    kwargs = dict(
        seed=args.seed,
        steps=args.steps,
        cfg=args.cfg,
        sampler=args.sampler,
        schedule=args.schedule,
        width=args.width,
        height=args.height,
        batch_size=args.batch_size,
        clip_skip=args.clip_skip,
        hires=hires,
    )
    kit.parameters(args.prompt, args.negative, **kwargs)  # validate everything before the slow part
    result = kit.generate(args.prompt, args.negative, progress=True, **kwargs)
    for k, out in enumerate(outputs):
        result.save(str(out), index=k, overwrite=args.overwrite)
        print(out)
    print(f"seed {result.seed}", file=sys.stderr)
    return 0


def _info(args: argparse.Namespace) -> int:
    from sdkit.image_files import read_image_parameters  # PIL only: no torch, no model libraries

    print(read_image_parameters(Path(args.image)))  # PNG, JPEG or WebP; a missing or damaged file: one ValueError
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from sdkit.distributed.config import load_config  # torch-free: a bad file is reported before torch loads
    from sdkit.limits import check_int, usable_cpus

    config = load_config(args.config)
    out = Path(str(args.output or config.out))
    if not out.parent.is_dir():
        raise ValueError(f"--output folder {out.parent} does not exist")
    if args.threads is not None:
        check_int("--threads", args.threads, maximum=usable_cpus())
    from sdkit.distributed.sweep import run_config

    _set_threads(args)
    _quiet_libraries()
    result = run_config(config, out=out)
    if result is not None:  # rank 0
        print(result.folder / "table.csv")
        print(f"{result.rendered} cells rendered, {result.skipped} already done", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"generate": _generate, "info": _info, "sweep": _sweep}[args.command](args)
    except (ValueError, TypeError, OSError, NotImplementedError) as e:  # OSError: a full disk, a read-only folder
        print(f"sdkit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
