"""The command line: ``sdkit generate PROMPT ... -o out.png`` and ``sdkit info out.png``.

Bad arguments end the program with one line naming the parameter (exit status 2), before anything is loaded
or written.
"""

from __future__ import annotations

import argparse
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
    i = sub.add_parser("info", help="print the generation parameters stored in a PNG")
    i.add_argument("image")
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
    loading and before any output path is worked out."""
    from sdkit.limits import check_area, check_batch_size, check_number, check_size, check_steps
    from sdkit.noise import check_seed
    from sdkit.samplers import SAMPLERS
    from sdkit.samplers.names import resolve
    from sdkit.schedules import SCHEDULES

    if not args.prompt.strip():
        raise ValueError(f"prompt must not be empty, got {args.prompt!r}")
    check_seed(args.seed)
    if args.steps is not None:
        check_steps(args.steps)
    if args.cfg is not None:
        check_number("--cfg", args.cfg)
    batch_size = check_batch_size(args.batch_size)
    width, height = (
        8 if v is None else check_size(f"--{k}", v, 8) for k, v in (("width", args.width), ("height", args.height))
    )
    check_area(width, height, batch_size)
    if args.sampler is not None and args.sampler.strip().lower() not in SAMPLERS:
        resolve(args.sampler)  # raises, listing the valid names
    if args.schedule is not None and args.schedule.strip().lower().replace(" ", "_").replace("-", "_") not in SCHEDULES:
        raise ValueError(f"--schedule: unknown schedule {args.schedule!r}; valid names: {', '.join(SCHEDULES)}")


def _hires(args: argparse.Namespace) -> dict[str, object] | None:
    """The hires fix options given (any of them turns it on), checked; None without them."""
    from sdkit.hires import HiresFix

    options = {
        "scale": args.hires_scale,
        "steps": args.hires_steps,
        "denoising_strength": args.hires_strength,
        "upscaler": args.hires_upscaler,
    }
    given = {k: v for k, v in options.items() if v is not None}
    if not given:
        return None
    HiresFix(**given)  # type: ignore[arg-type]  # raises naming the option
    return given


def _generate(args: argparse.Namespace) -> int:
    import sdkit
    from sdkit.limits import check_int
    from sdkit.loading import IMAGE_FORMATS

    _precheck(args)
    check_int("--clip-skip", args.clip_skip)
    hires = _hires(args)
    outputs = _outputs(Path(args.output), args.batch_size)
    for out in outputs:
        if out.suffix.lower() not in IMAGE_FORMATS:
            raise ValueError(f"--output must end in {', '.join(IMAGE_FORMATS)} (the suffix sets the format), got {out}")
        if out.exists() and not args.overwrite:
            raise ValueError(f"--output {out} exists; pass --overwrite to replace it")
        if not out.parent.is_dir():
            raise ValueError(f"--output folder {out.parent} does not exist")
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
    from sdkit.loading import read_image_parameters

    print(read_image_parameters(Path(args.image)))  # PNG, JPEG or WebP; a missing or damaged file: one ValueError
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _generate(args) if args.command == "generate" else _info(args)
    except (ValueError, TypeError, OSError, NotImplementedError) as e:  # OSError: a full disk, a read-only folder
        print(f"sdkit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
