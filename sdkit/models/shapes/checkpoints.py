"""The trainer's saving and resuming: the whole state in ``OUT/checkpoint.pt``, or the fp16 EMA weights of an export.

- ``save``: every weight, the optimizer, the gradient scaler, EMA, step and samples seen; rank 0 writes it (every
  process holds the same weights).
- ``load``: rank 0 reads it and sends it to the other processes (no shared disk needed); the run then continues
  exactly, since data and noise depend only on the seed and the step.
- ``resume_from_export``: only the exported folder outlived the machine (what is kept between GPU windows): its
  weights become both the trained and the EMA weights, and the optimizer starts fresh and re-warms.
- ``truncate_records``: ``losses.jsonl`` and ``curve.jsonl`` lose the rows written after the state being resumed.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

STAGE_ORDER = ("vae", "unet", "controlnet", "done")


def save(trainer: Any) -> None:
    """The whole training state (rank 0 writes it; every process holds the same weights)."""
    if not trainer.group.is_main:
        return
    state = {
        "config": asdict(trainer.cfg),
        "stage": trainer.stage,
        "step": trainer.step,
        "samples": trainer.samples,
        "warm_from": trainer.warm_from,
        "latent_scale": trainer.latent_scale,
        "metrics": trainer.metrics,
        "vae": trainer.vae.state_dict(),
        "text_encoder": trainer.text_encoder.state_dict(),
        "unet": trainer.unet.state_dict(),
        "controlnets": {k: m.state_dict() for k, m in trainer.controlnets.items()},
        "opt": trainer.opt.state_dict() if trainer.opt else None,
        "scaler": trainer.scaler.state_dict(),
        "ema": trainer.ema,
    }
    tmp = trainer.out / "checkpoint.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(trainer.out / "checkpoint.pt")
    trainer.last_ckpt = time.monotonic()


def load(trainer: Any) -> None:
    """Resume from ``checkpoint.pt``: rank 0 reads it and sends it to the others (no shared disk needed)."""
    state = None
    if trainer.group.is_main:
        state = torch.load(trainer.out / "checkpoint.pt", map_location="cpu", weights_only=True)
    state = trainer.group.broadcast(state)
    trainer.stage, trainer.step = state["stage"], state["step"]
    trainer.samples, trainer.warm_from = state.get("samples", {}), state.get("warm_from", 0)
    trainer.latent_scale, trainer.metrics = state["latent_scale"], state["metrics"]
    for name in ("vae", "text_encoder", "unet"):
        getattr(trainer, name).load_state_dict(state[name])
    if state["controlnets"]:
        trainer.ensure_controlnets()
        for k, m in trainer.controlnets.items():
            m.load_state_dict(state["controlnets"][k])
    if trainer.stage != "vae":
        trainer.vae.eval().requires_grad_(False)
    if trainer.stage == "controlnet":
        trainer.unet.eval().requires_grad_(False)
        trainer.text_encoder.eval().requires_grad_(False)
    if trainer.stage != "done" and state["opt"] is not None:
        trainer.make_optimizer()
        assert trainer.opt is not None
        trainer.opt.load_state_dict(state["opt"])
        if state.get("scaler"):
            trainer.scaler.load_state_dict(state["scaler"])
        if state["ema"] is not None:
            trainer.ema = [e.to(trainer.device) for e in state["ema"]]
    truncate_records(trainer)
    trainer.log(f"resumed at stage {trainer.stage}, step {trainer.step}")


def resume_from_export(trainer: Any, folder: Path) -> None:
    """Resume from an exported folder alone (fp16 EMA weights, as committed between GPU sessions): the weights
    become both the trained and the EMA weights, the optimizer starts fresh and re-warms."""
    info = json.loads((folder / "sdkit.json").read_text())
    training = info.get("training")
    if not training or training.get("stage") not in ("unet", "controlnet"):
        raise ValueError(f"resume: {folder} records no interrupted UNet or ControlNet stage to continue")
    if int(info.get("default_size", trainer.size)) != trainer.size:
        raise ValueError(
            f"resume: {folder} was trained at {info['default_size']} px; pass --image-size {info['default_size']}"
        )
    trainer.load_exported(folder, stage=training["stage"])
    if trainer.stage == "unet":
        trainer.controlnets = {}  # an export in the UNet stage holds placeholders: copy the final UNet later
    trainer.metrics.update(info.get("metrics", {}))
    trainer.step, trainer.samples = int(training["step"]), dict(training.get("samples", {}))
    trainer.warm_from = trainer.step
    truncate_records(trainer)
    where = f"stage {trainer.stage}, step {trainer.step}"
    trainer.log(f"resumed from the exported weights at {where} (optimizer re-warmed)")


def truncate_records(trainer: Any) -> None:
    """Drop loss and curve rows written after the state being resumed (a run killed after its last checkpoint
    wrote some): the resumed run writes them again, so the files hold one curve."""
    if not trainer.group.is_main:
        return
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    for name in ("losses.jsonl", "curve.jsonl"):
        path = trainer.out / name
        if not path.exists():
            continue
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a line half-written by a killed run
                continue
            later = (order[row["stage"]], row["step"]) > (order[trainer.stage], trainer.step)
            if not later:
                kept.append(line)
        path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")


def resume(trainer: Any) -> None:
    """``--resume``: from ``checkpoint.pt`` if rank 0 has one, else from the exported folder, else from scratch."""
    # rank 0's disk decides (the checkpoint is sent to the others; an export must be on every disk)
    found = None
    if trainer.group.is_main:
        if (trainer.out / "checkpoint.pt").exists():
            found = "checkpoint"
        elif (trainer.out / "model" / "sdkit.json").exists():
            found = "export"
    found = trainer.group.broadcast(found)
    if found == "checkpoint":
        load(trainer)
    elif found == "export":
        if not (trainer.out / "model" / "sdkit.json").exists():
            raise FileNotFoundError(f"resume: rank {trainer.group.rank} has no {trainer.out / 'model'} (rank 0 has)")
        resume_from_export(trainer, trainer.out / "model")
