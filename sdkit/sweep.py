"""Parameter sweeps as one labelled image grid, with the cells batched through the UNet.

    grid = sweep(kit, "a red circle", x=("cfg", [1, 3, 7.5, 12]), y=("seed", [1, 2, 3, 4]), steps=20)

Every cell is a full set of ``Kit.generate`` parameters (``kit.parameters`` validates and completes them).
Cells that differ only in ``prompt``, ``negative_prompt``, ``seed`` or ``cfg`` share one sampler run: their
latents form one batch, each with its own seeded noise (``sdkit.noise.ImageNoise`` with per-image seeds), its
own conditioning (``TextConditioning.cat``) and its own CFG scale (a ``[b, 1, 1, 1]`` tensor in
``BatchCFG``). Parameters that change the run itself (sampler, steps, schedule, size, prompt chunk count)
split the cells into groups, each its own batched run; ``max_batch`` bounds a batch. A 4 x 4 CFG x seed grid
thus costs ``steps`` UNet calls (of batch 32: uncond and cond of 16 images) instead of ``16 * steps``, and
each cell equals the image ``kit.generate`` makes with the same parameters, up to float32 rounding.

An axis is ``(name, values)``, or ``((name1, name2), [(v1, v2), ...])`` to vary two parameters together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit import samplers
from sdkit.latents import Latents
from sdkit.metadata import GenerationParameters
from sdkit.noise import ImageNoise
from sdkit.text.composable import plain_text
from sdkit.types import ConditionalDenoiser, Sampler, TextConditioning
from sdkit.viz.grid import Grid

Axis = tuple[str | tuple[str, ...], Sequence[Any]]
SWEEPABLE = frozenset({"prompt", "negative_prompt", "seed", "cfg", "sampler", "schedule", "steps", "width", "height"})
"""Parameters an axis may vary; only the first four can share a batch."""


class BatchCFG:
    """Classifier-free guidance with one scale per image: ``uncond + scale[b] * (cond - uncond)``.

    Like ``sdkit.guidance.CFG`` (Ho & Salimans 2022), ``[uncond, cond]`` go through the model as one batch;
    ``scale`` is ``[b, 1, 1, 1]`` so that every cell of a sweep keeps its own guidance strength.
    """

    def __init__(
        self,
        model: ConditionalDenoiser,
        cond: TextConditioning,
        uncond: TextConditioning,
        scale: Float[Tensor, "b 1 1 1"],
    ) -> None:
        if scale.ndim != 4 or scale.shape[0] != cond.batch or cond.batch != uncond.batch:
            raise ValueError(
                f"BatchCFG: need cond, uncond and scale for the same batch, got {cond.batch}, {uncond.batch}, "
                f"scale {tuple(scale.shape)}"
            )
        self.model, self.cond, self.uncond, self.scale = model, cond, uncond, scale
        self.both = TextConditioning.cat([uncond, cond])

    def __call__(self, x: Float[Tensor, "b c h w"], sigma: Float[Tensor, " b"]) -> Float[Tensor, "b c h w"]:
        sigma = sigma.reshape(-1).expand(x.shape[0]) if sigma.numel() == 1 else sigma
        d_uncond, d_cond = self.model(torch.cat([x, x]), torch.cat([sigma, sigma]), self.both).chunk(2)
        return d_uncond + (d_cond - d_uncond) * self.scale.to(x)


@dataclass(frozen=True)
class Cell:
    """One grid position and the complete parameters it is generated with."""

    row: int
    col: int
    params: GenerationParameters
    sampler: Sampler | str
    sigmas: Tensor
    chunks: int


def _axis(axis: Axis | None) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    if axis is None:
        return (), [()]
    name, values = axis
    names = (name,) if isinstance(name, str) else tuple(name)
    bad = [n for n in names if n not in SWEEPABLE]
    if bad:
        raise ValueError(f"cannot sweep over {bad}; sweepable parameters: {sorted(SWEEPABLE)}")
    rows = [tuple(v) if len(names) > 1 else (v,) for v in values]
    if not rows or any(len(r) != len(names) for r in rows):
        raise ValueError(f"axis {names}: need a non-empty list of values, one per name")
    return names, rows


def label(names: tuple[str, ...], values: tuple[Any, ...]) -> str:
    """``"cfg=7.5"`` / ``"steps=10, seed=1"``; samplers given as functions show their name."""
    return ", ".join(f"{n}={getattr(v, '__name__', v)}" for n, v in zip(names, values, strict=True))


def plan(kit: Any, prompt: str, x: Axis | None, y: Axis | None, fixed: dict[str, Any]) -> tuple[list[Cell], Any]:
    """All cells of a sweep with their resolved parameters, and the axis descriptions ``(names, values)``."""
    xn, xv = _axis(x)
    yn, yv = _axis(y)
    clash = set(xn) & set(yn) | (set(xn) | set(yn)) & set(fixed)
    if clash:
        raise ValueError(f"parameters {sorted(clash)} are given twice (on an axis and/or as fixed values)")
    unsupported = sorted(set(fixed) - SWEEPABLE)
    if unsupported:  # a batched run draws plain seeds and encodes plain prompts: these would be recorded, not applied
        raise ValueError(
            f"a sweep cannot fix {unsupported} (its batched runs would not apply them); fixable: {sorted(SWEEPABLE)}"
        )
    cells = []
    for (r, yvals), (c, xvals) in product(enumerate(yv), enumerate(xv)):
        args: dict[str, Any] = {"prompt": prompt, "negative_prompt": "", **fixed}
        args.update(zip(yn, yvals, strict=True))
        args.update(zip(xn, xvals, strict=True))
        text, negative = args.pop("prompt"), args.pop("negative_prompt")
        params, sampler, sigmas = kit.parameters(text, negative, **args)
        chunks = max(kit.prompts.chunks(text), kit.prompts.chunks(negative))
        cells.append(Cell(r, c, params, sampler, sigmas, chunks))
    return cells, ((xn, xv), (yn, yv))


def _group_key(cell: Cell) -> tuple:
    p = cell.params
    sampler = cell.sampler if isinstance(cell.sampler, str) else id(cell.sampler)
    return (sampler, tuple(cell.sigmas.tolist()), p.width, p.height, cell.chunks)


def batches(cells: list[Cell], max_batch: int) -> list[list[Cell]]:
    """Cells grouped by what changes the run (sampler, sigmas, size, chunk count), then cut to ``max_batch``."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(_group_key(cell), []).append(cell)
    return [g[i : i + max_batch] for g in groups.values() for i in range(0, len(g), max_batch)]


def run_batch(kit: Any, cells: list[Cell], model: ConditionalDenoiser | None = None) -> Latents:
    """Sample one batch of compatible cells in a single sampler run (what ``Kit.generate`` does per image).

    ``model`` replaces ``kit.denoiser`` (``sdkit.lockstep`` passes its shared, call-merging one)."""
    first = cells[0]
    space = getattr(kit, "latent_space", None) or kit.vae.space
    p = first.params
    seeds = [c.params.seed for c in cells]
    shape = (space.channels, p.height // space.factor, p.width // space.factor)
    sigmas = first.sigmas.to(kit.device)
    noise = ImageNoise(shape, seeds, factor=space.factor, device=kit.device, dtype=kit.dtype)
    x = noise.first() * sigmas[0].to(kit.dtype)
    texts = [plain_text(c.params.prompt, "sweeps") for c in cells]
    pairs = [kit.prompts.encode_pair(text, c.params.negative_prompt) for text, c in zip(texts, cells, strict=True)]
    if kit.family == "sdxl":  # the same micro-conditioning Kit.generate attaches
        from sdkit.micro_conditioning import add_time_ids

        pairs = [add_time_ids(kit.unet, cd, un, p.width, p.height) for cd, un in pairs]
    cond = TextConditioning.cat([cd for cd, _ in pairs]).to(kit.device, kit.dtype)
    uncond = TextConditioning.cat([un for _, un in pairs]).to(kit.device, kit.dtype)
    scale = torch.tensor([c.params.cfg for c in cells], dtype=kit.dtype, device=kit.device).view(-1, 1, 1, 1)
    guided = BatchCFG(kit.denoiser if model is None else model, cond, uncond, scale)
    # step noise per image: each image's generator after its starting noise, as Kit.generate draws it
    with torch.no_grad():
        x = samplers.sample(first.sampler, guided, x, sigmas, noise_sampler=noise.for_sampler(first.sampler, sigmas))
    return Latents(x, space)


def sweep(
    kit: Any,
    prompt: str,
    x: Axis | None = ("cfg", [1.0, 3.0, 7.5, 12.0]),
    y: Axis | None = None,
    *,
    max_batch: int = 16,
    lockstep: bool = True,
    progress: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
    **fixed: Any,
) -> Grid:
    """Generate a grid over one or two parameter axes; ``fixed`` are further ``Kit.generate`` arguments.

    Returns a ``Grid`` (images, latents and parameters per cell; ``grid.plot()`` for a labelled figure).
    ``lockstep``: runs that cannot share a batch (other sampler or steps) still share each model call
    (``sdkit.lockstep``); ``on_batch(done, total)`` is called after each batched run (progress bars in widgets).
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    cells, ((xn, xv), (yn, yv)) = plan(kit, prompt, x, y, fixed)
    runs = batches(cells, max_batch)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(runs), desc="sweep", unit="batch", leave=False)
    images: list[list[Any]] = [[None] * len(xv) for _ in yv]
    latents: list[list[Any]] = [[None] * len(xv) for _ in yv]
    params: list[list[Any]] = [[None] * len(xv) for _ in yv]
    if lockstep:
        done = _lockstep_latents(kit, runs, max_batch)
    for k, run in enumerate(runs):
        lat = done[k] if lockstep else run_batch(kit, run)
        pics = kit.vae.decode(lat).to_pil()
        for j, cell in enumerate(run):
            images[cell.row][cell.col] = pics[j]
            latents[cell.row][cell.col] = lat[j]
            params[cell.row][cell.col] = cell.params
        if bar is not None:
            bar.update(1)
        if on_batch is not None:
            on_batch(k + 1, len(runs))
    if bar is not None:
        bar.close()
    return Grid(
        images=images,
        x_labels=[label(xn, v) for v in xv],
        y_labels=[label(yn, v) for v in yv] if yn else [""],
        x_name=", ".join(xn),
        y_name=", ".join(yn),
        latents=latents,
        parameters=params,
        title=prompt,
        batches=len(runs),
    )


def lockstep_groups(runs: list[list[Cell]], max_batch: int) -> list[list[int]]:
    """Indices of the runs that share model calls: runs of the same latent size and prompt length, in order, as
    many at a time as fit in ``max_batch`` images (``sdkit.distributed`` splits a sweep along these groups)."""
    groups: list[list[int]] = []
    keys: dict[tuple, int] = {}
    for k, run in enumerate(runs):
        p = run[0].params
        key = (p.width, p.height, run[0].chunks)
        last = groups[keys[key]] if key in keys else None
        if last is None or sum(len(runs[m]) for m in last) + len(run) > max_batch:
            keys[key] = len(groups)
            groups.append([])
        groups[keys[key]].append(k)
    return groups


def _lockstep_latents(kit: Any, runs: list[list[Cell]], max_batch: int) -> list[Latents]:
    """All runs' latents. Runs of the same latent size and prompt length go through the model in lockstep, as many
    at a time as fit in ``max_batch`` images."""
    from sdkit.lockstep import run_in_lockstep

    out: list[Any] = [None] * len(runs)
    for members in lockstep_groups(runs, max_batch):
        jobs = [lambda model, run=runs[k]: run_batch(kit, run, model) for k in members]
        for k, lat in zip(members, run_in_lockstep(kit.denoiser, jobs), strict=True):
            out[k] = lat
    return out


def compare_samplers(
    kit: Any,
    prompt: str,
    samplers: Sequence[str | Sampler] = ("euler", "euler_ancestral", "heun", "dpmpp_2m"),
    steps: Sequence[int] = (5, 10, 20),
    seed: int | Sequence[int] = 0,
    **fixed: Any,
) -> Grid:
    """Rows: samplers; columns: step counts (times seeds, when ``seed`` is a list: cells with the same sampler
    and steps but different seeds share a batch). All runs share every model call in lockstep
    (``sdkit.lockstep``; ``lockstep=False`` in ``fixed`` turns that off)."""
    if isinstance(seed, int):
        return sweep(kit, prompt, x=("steps", list(steps)), y=("sampler", list(samplers)), seed=seed, **fixed)
    columns = [(n, s) for n in steps for s in seed]
    return sweep(kit, prompt, x=(("steps", "seed"), columns), y=("sampler", list(samplers)), **fixed)
