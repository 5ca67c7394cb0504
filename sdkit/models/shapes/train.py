"""Train the embedded shapes model from nothing, with sdkit's own code, in minutes on one GPU.

Three stages, the way Stable Diffusion was built (Rombach et al. 2022; Zhang et al. 2023 for ControlNet):

1. VAE: reconstruct rendered scenes (L1 + L2 + a small KL term), then freeze it and set the latent scale
   factor to ``1 / std(latents)`` (SD's 0.18215 was found the same way).
2. Text encoder + UNet together: the epsilon-prediction loss of forward diffusion on SD's scaled-linear
   schedule, with 10% of captions dropped to "" so classifier-free guidance works.
3. Depth and pose ControlNets, copied from the trained UNet's encoder, with UNet and text encoder frozen.

Data is rendered on the fly on the training device from a pool of random scenes (``world.py``); nothing is
read from disk. The diffusion stages encode each pool once with the frozen VAE and draw every batch's latents
from that cached posterior (``--no-cache-latents`` renders and encodes each batch instead).
``--time-budget-s`` splits the wall time across the stages (25/55/20%) and stops each gracefully; after every
stage the model is exported (``export.py``), so a usable folder always exists.
``--resume`` continues from ``OUT/checkpoint.pt`` (exactly: data and noise depend only on the seed and the step),
or, where only an exported folder survived (``OUT/model``, fp16 EMA weights and the step they were taken at), from
that folder with a re-warmed optimizer. ``--run-steps N`` stops after N steps, writing both; so a GPU lent for a
quarter of an hour trains, and the next one resumes where it stopped. Everything is seeded: the same seed and step
counts give the same model (time budgets make the step counts depend on the machine's speed).

Every step's loss goes to ``OUT/losses.jsonl``; ``--eval-every N`` scores the model every N UNet steps into
``OUT/curve.jsonl`` (``sdkit.models.shapes.curve``). Under ``torchrun`` the run is data-parallel
(``sdkit.models.shapes.parallel``); ``--precision`` picks bf16 or fp16 autocast (fp16 with a gradient scaler).

    python -m sdkit.models.shapes.train --out runs/shapes --device cuda --time-budget-s 440
    torchrun --standalone --nproc_per_node gpu -m sdkit.models.shapes.train --out runs/shapes --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sdkit.distributed.group import Group, join
from sdkit.models.shapes import architecture as arch
from sdkit.models.shapes import checkpoints, world
from sdkit.models.shapes.captions import token_ids
from sdkit.models.shapes.export import export
from sdkit.models.shapes.parallel import Split, StageLoss, StepSync, accumulating, take, wrap
from sdkit.models.shapes.pool import ScenePool
from sdkit.models.shapes.sampling import alphas_cumprod, sample

__all__ = ["Config", "Trainer", "main", "alphas_cumprod", "sample", "ScenePool", "PRECISIONS"]

STAGES = ("vae", "unet", "controlnet")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TIME_SHARE = {"vae": 0.25, "unet": 0.55, "controlnet": 0.20}


@dataclass
class Config:
    out: str
    device: str = "cpu"
    vae_steps: int = 6000
    unet_steps: int = 20000
    controlnet_steps: int = 4000
    batch: int = 0  # global batch (all processes): 0: 256 VAE / 1024 UNet / 512 ControlNet on CUDA, 16 / 32 / 16 on CPU
    accumulate: int = 1  # micro-batches per process and step (gradient accumulation)
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 elsewhere), fp32, bf16, fp16 (with a gradient scaler)
    run_steps: int = 0  # stop this run after so many steps, with checkpoint and export written; 0: no limit
    eval_every: int = 0  # score the model every N UNet steps into curve.jsonl; 0: only at the end of the stage
    curve_n: int = 0  # prompts per row of each learning-curve point; 0: 64 on CUDA, 8 on CPU
    image_size: int = arch.IMAGE_SIZE  # pixels per side (latents: image_size / 8); the world is drawn at any size
    seed: int = 0
    resume: bool = False
    time_budget_s: float = 0.0  # 0: no limit, run all steps
    pause_at_budget: bool = False  # when the budget ends mid-stage, stop (checkpoint + export) instead of finishing it
    vae_lr: float = 1e-3
    unet_lr: float = 6e-4
    controlnet_lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    kl_weight: float = 1e-6  # on the per-image KL sum, as in SD's autoencoder config
    pool: int = 0  # scenes per data pool; 0: 131072 on CUDA, 4096 on CPU
    eval_n: int = 0  # prompts for the end-of-stage evaluation; 0: 256 on CUDA, 16 on CPU
    log_every: int = 100
    checkpoint_every_s: float = 120.0
    init_from: str = ""  # an exported model folder: continue training from there (VAE frozen)
    init_stage: str = "unet"  # with init_from: "unet" (UNet + text encoder, then ControlNets) or "controlnet"
    fresh_controlnets: bool = False  # with init_from: new ControlNets from its UNet instead of its own
    skip_controlnet: bool = False  # stop after the UNet stage (keeps ControlNets loaded by init_from)
    cache_latents: bool = True  # encode each pool's scenes once for the diffusion stages (--no-cache-latents)
    compile: bool = False  # torch.compile the UNet, text encoder and ControlNets for the diffusion stages


def _batch_sizes(cfg: Config) -> dict[str, int]:
    if cfg.batch:
        return dict.fromkeys(STAGES, cfg.batch)
    cuda = cfg.device.startswith("cuda")
    return {"vae": 256 if cuda else 16, "unet": 1024 if cuda else 32, "controlnet": 512 if cuda else 16}


def _seed(cfg: Config, stage: str, step: int) -> int:
    """A seed per (stage, step): data and noise depend only on it, which makes ``--resume`` exact."""
    return (cfg.seed * 1_000_003 + STAGES.index(stage) * 100_000_007 + step) % (2**62)


class Trainer:
    def __init__(self, cfg: Config, group: Group | None = None) -> None:
        if cfg.init_stage not in ("unet", "controlnet"):
            raise ValueError(f"init_stage must be 'unet' or 'controlnet', got {cfg.init_stage!r}")
        if cfg.init_stage == "controlnet" and cfg.skip_controlnet:
            raise ValueError("init_stage='controlnet' with skip_controlnet leaves nothing to train")
        if cfg.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
        if cfg.accumulate < 1 or cfg.run_steps < 0 or cfg.eval_every < 0:
            raise ValueError("accumulate must be >= 1, run_steps and eval_every >= 0")
        self.group = group if group is not None else join()
        device = torch.device(cfg.device)
        if self.group.world_size > 1 and device == torch.device("cuda") and self.group.device.type == "cuda":
            device = self.group.device  # plain "cuda" under torchrun: one GPU per process, by LOCAL_RANK
        self.cfg, self.device, self.t0 = cfg, device, time.monotonic()
        self.split = Split(self.group.rank, self.group.world_size, cfg.accumulate)
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.batch = _batch_sizes(cfg)
        self.cuda = self.device.type == "cuda"
        self.precision = cfg.precision if cfg.precision != "auto" else ("bf16" if self.cuda else "fp32")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(cfg.seed)  # the same initial weights in every process
        self.size = cfg.image_size
        if self.size % arch.DOWNSAMPLE or self.size < 2 * arch.DOWNSAMPLE:
            raise ValueError(f"image_size must be a multiple of {arch.DOWNSAMPLE} and >= 16, got {self.size}")
        self.vae = arch.make_vae(self.size).to(self.device)
        self.text_encoder = arch.make_text_encoder().to(self.device)
        self.unet = arch.make_unet(self.size).to(self.device)
        self.controlnets: dict[str, Any] = {}
        self.latent_scale = 1.0
        self.stage, self.step = "vae", 0
        self.samples: dict[str, int] = {}  # samples seen per stage, over all processes
        self.warm_from = 0  # the step the learning-rate warmup starts from (a resume from weights alone re-warms)
        self.steps_this_run = 0  # optimizer steps taken by this process's run, over all stages (--run-steps)
        self.metrics: dict[str, Any] = {}
        self.skipped_steps: dict[str, int] = {}  # fp16: optimizer steps the gradient scaler skipped, per stage
        self.opt: torch.optim.Optimizer | None = None
        self.model: torch.nn.Module | None = None  # the stage's StageLoss, under DDP when there are several processes
        self.ema: list[Tensor] | None = None
        self.acp = alphas_cumprod().to(self.device)
        self.empty_ids = token_ids([""]).to(self.device)
        self.pools: dict[str, ScenePool] = {}
        self.sync = StepSync(self.group, self.device)
        self.last_ckpt = time.monotonic()
        self.log_file = open(self.out / "train.log", "a") if self.group.is_main else None  # noqa: SIM115
        if cfg.init_from:
            self.load_exported(Path(cfg.init_from))

    def load_exported(self, folder: Path, stage: str | None = None) -> dict[str, Any]:
        """Start from an exported model (e.g. a shorter earlier run): its VAE is kept frozen, training resumes
        at ``init_stage`` (or ``stage``) with fresh optimizer state. Returns the folder's ``sdkit.json``."""
        from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
        from transformers import CLIPTextModel

        from sdkit.quiet import quiet_libraries

        f32 = torch.float32
        with quiet_libraries():  # no "Loading weights" bars
            self.vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=f32).to(self.device)
            text_encoder: Any = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=f32)
            self.text_encoder = text_encoder.to(self.device)
            self.unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=f32).to(self.device)
            for name in ("depth", "pose"):
                if (folder / f"controlnet_{name}").is_dir() and not self.cfg.fresh_controlnets:
                    cn = ControlNetModel.from_pretrained(folder / f"controlnet_{name}", torch_dtype=f32)
                    self.controlnets[name] = cn.to(self.device)
        info = json.loads((folder / "sdkit.json").read_text())
        self.latent_scale = float(info["latent_scale"])
        self.metrics = {k: v for k, v in info.get("metrics", {}).items() if k.startswith("vae_")}
        self.metrics["init_unet_steps"] = info.get("metrics", {}).get("unet_steps", 0)
        self.vae.eval().requires_grad_(False)
        self.stage, self.step = stage or self.cfg.init_stage, 0
        if self.stage == "controlnet":
            self.metrics = {k: v for k, v in info.get("metrics", {}).items() if not k.startswith("controlnet")}
            self.metrics["init_controlnet_steps"] = (
                0 if self.cfg.fresh_controlnets else info.get("metrics", {}).get("controlnet_steps", 0)
            )
            for m in (self.unet, self.text_encoder):
                m.eval().requires_grad_(False)
        self.log(f"initialised from {folder} at stage {self.stage} (latent scale {self.latent_scale:.4f})")
        return info

    # ------------------------------------------------------------------------------------------ utilities
    def log(self, msg: str) -> None:
        """A line on rank 0's output and in ``train.log`` (other ranks stay quiet)."""
        if self.log_file is None:
            return
        line = f"[{time.monotonic() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def pool(self, name: str) -> ScenePool:
        """A scene pool, the same in every process (seeded)."""
        if name not in self.pools:
            cfg = self.cfg
            n = cfg.pool or (131072 if self.cuda else 4096)
            t = time.monotonic()
            person = 1.0 if name == "person" else 0.15
            n = n // 4 if name == "person" else n  # people only feed the pose ControlNet
            self.pools[name] = ScenePool(n, cfg.seed + len(name), self.device, person_fraction=person)
            self.log(f"pool {name}: {n} scenes in {time.monotonic() - t:.1f}s")
        return self.pools[name]

    def draw(self, pool: str, stage: str, step: int) -> tuple[dict[str, Tensor], Tensor, torch.Generator, Tensor]:
        """One global batch of packed scenes and token ids, a generator for this step's noise, and the scene
        indices: the same in every process."""
        g = torch.Generator(self.device).manual_seed(_seed(self.cfg, stage, step))
        p = self.pool(pool)
        idx = torch.randint(0, p.n, (self.batch[stage],), generator=g, device=self.device)
        return p.batch(idx), p.ids[idx], g, idx

    def clean_latents(self, pool: str, idx: Tensor, scenes: dict[str, Tensor], g: torch.Generator) -> Tensor:
        """x_0 for the diffusion loss: a posterior sample of each scene's latent, from the pool's cache (encoded
        on first use) or, with ``cache_latents`` off, by rendering and encoding the batch now. Both draw the same
        noise from ``g``, so they agree up to the VAE's batch-size rounding."""
        noise = torch.randn(len(idx), arch.LATENT_CHANNELS, *self.latent_hw, generator=g, device=self.device)
        if not self.cfg.cache_latents:
            return self.encode(world.render_packed(scenes, self.size) * 2 - 1, noise)
        means, stds = self.posterior(pool)
        return (means[idx] + stds[idx] * noise) * self.latent_scale

    @property
    def latent_hw(self) -> tuple[int, int]:
        side = self.size // arch.DOWNSAMPLE
        return side, side

    def posterior(self, pool: str) -> tuple[Tensor, Tensor]:
        """The pool's cached latent posterior (mean, std), encoded with the frozen VAE on first use."""
        p = self.pool(pool)
        if p.posterior is None:
            t = time.monotonic()
            p.cache_latents(self.vae, 4096 if self.cuda else 256, self.autocast(), self.size)
            self.log(f"pool {pool}: {p.n} latents cached in {time.monotonic() - t:.1f}s")
        assert p.posterior is not None
        return p.posterior

    def lr_factor(self, step: int, steps: int, progress: float) -> float:
        """Linear warmup (from ``warm_from``), then cosine decay to 10% over the stage (in steps, or in time when
        ``progress``, the share of the stage's time budget used, is further along)."""
        progress = max(progress, step / max(steps, 1))
        warm = min(1.0, (step - self.warm_from + 1) / self.cfg.warmup)
        return warm * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))

    def deadline(self, stage: str) -> float:
        """This stage's share of the time left (a stage that ends early leaves its time to the next)."""
        if not self.cfg.time_budget_s:
            return math.inf
        reserve = 10 + 0.05 * self.cfg.time_budget_s  # final export and evaluation
        end = self.t0 + self.cfg.time_budget_s - reserve
        left = [s for s in STAGES[STAGES.index(stage) :] if not (s == "controlnet" and self.cfg.skip_controlnet)]
        share = 1.0 if self.cfg.pause_at_budget else TIME_SHARE[stage] / sum(TIME_SHARE[s] for s in left)
        now = time.monotonic()
        return now + max(0.0, end - now) * share

    def encode(self, x: Tensor, noise: Tensor) -> Tensor:
        """Pixels in [-1, 1] -> scaled latents, a sample of the VAE's posterior (as SD trained on)."""
        with torch.no_grad(), self.autocast():
            post = self.vae.encode(x).latent_dist
            return ((post.mean + post.std * noise) * self.latent_scale).float()

    def pose_image(self, keypoints: Tensor) -> Tensor:
        """OpenPose skeleton images at the training size (keypoints are in the world's 64-pixel units)."""
        scale = self.size / world.SIZE
        return world.render_pose(keypoints * scale, self.size, limb_width=1.2 * scale, joint_radius=1.6 * scale)

    def encode_text(self, ids: Tensor) -> Tensor:
        return self.text_encoder(ids).last_hidden_state

    def trained_modules(self) -> list[torch.nn.Module]:
        if self.stage == "vae":
            return [self.vae]
        if self.stage == "unet":
            return [self.unet, self.text_encoder]
        return list(self.controlnets.values())

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for m in self.trained_modules() for p in m.parameters()]

    def make_optimizer(self) -> None:
        """The stage's optimizer, EMA (UNet stage) and loss module (under DDP with several processes)."""
        lr = {"vae": self.cfg.vae_lr, "unet": self.cfg.unet_lr, "controlnet": self.cfg.controlnet_lr}[self.stage]
        for m in (self.vae, self.text_encoder, self.unet, *self.controlnets.values()):
            m.requires_grad_(False)
        params = self.trainable()
        for p in params:
            p.requires_grad_(True)
        self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.99))
        for group in self.opt.param_groups:
            group["base_lr"] = lr
        self.ema = [p.detach().clone() for p in params] if self.stage == "unet" else None
        stage = self.stage
        loss = self.vae_loss if stage == "vae" else lambda b: self.diffusion_loss(b, stage)
        module = StageLoss(self.trained_modules(), loss)
        self.model = wrap(module, self.group, self.device, find_unused=stage == "controlnet")

    def train_step(self, batch: dict[str, Any], factor: float, step: int) -> Tensor:
        """One optimizer step on this process's share of the global ``batch``, in micro-batches; returns this
        process's mean loss (a device tensor)."""
        assert self.opt is not None and self.model is not None
        for group in self.opt.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.opt.zero_grad(set_to_none=True)
        parts = self.split.micro_slices(len(batch["ids"]))
        total = torch.zeros((), device=self.device)
        for k, part in enumerate(parts):
            with accumulating(self.model, last=k == len(parts) - 1):
                loss = self.model(take(batch, part))
                self.scaler.scale(loss / len(parts)).backward()
            total += loss.detach().float()
        self.scaler.unscale_(self.opt)
        params = [p for group in self.opt.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 0.0  # fp16 only: one sync per step
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.scaler.is_enabled() and self.scaler.get_scale() < scale:
            # inf/NaN gradients: the scaler skipped the optimizer step and halved the scale; the EMA stays put too
            self.skipped_steps[self.stage] = self.skipped_steps.get(self.stage, 0) + 1
            return total / len(parts)
        if self.ema is not None:  # EMA with a warmup, so early steps do not freeze the random init in
            decay = min(self.cfg.ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(self.ema, [p.detach() for p in params], 1 - decay)
        return total / len(parts)

    # --------------------------------------------------------------------------------------------- losses
    def vae_batch(self, step: int) -> dict[str, Any]:
        """The VAE stage's global batch: scenes and the posterior noise of each."""
        p, ids, g, _ = self.draw("main", "vae", step)
        noise = torch.randn(len(ids), arch.LATENT_CHANNELS, *self.latent_hw, generator=g, device=self.device)
        return {"scenes": p, "ids": ids, "noise": noise}

    def vae_loss(self, b: dict[str, Any]) -> Tensor:
        x = world.render_packed(b["scenes"], self.size) * 2 - 1
        with self.autocast():
            post = self.vae.encode(x).latent_dist
            z = post.mean + post.std * b["noise"]
            rec = self.vae.decode(z).sample.float()
        kl = post.kl().float().mean()
        return F.l1_loss(rec, x) + F.mse_loss(rec, x) + self.cfg.kl_weight * kl

    def diffusion_batch(self, step: int, stage: str) -> dict[str, Any]:
        """Forward diffusion for a global batch: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (DDPM eq. 14)."""
        pool = "main"
        if stage == "controlnet":  # alternate steps: depth on all scenes, pose on scenes with a person
            pool = "person" if step % 2 else "main"
        p, ids, g, idx = self.draw(pool, stage, step)
        x0 = self.clean_latents(pool, idx, p, g)
        drop = torch.rand(ids.shape[0], generator=g, device=self.device) < (0.1 if stage == "unet" else 0.5)
        ids = torch.where(drop[:, None], self.empty_ids, ids)  # "" for classifier-free guidance
        t = torch.randint(0, len(self.acp), (ids.shape[0],), generator=g, device=self.device)
        eps = torch.randn(x0.shape, generator=g, device=self.device)
        abar = self.acp[t].view(-1, 1, 1, 1)
        xt = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        return {"scenes": p, "ids": ids, "t": t, "eps": eps, "xt": xt, "pose": pool == "person"}

    def diffusion_loss(self, b: dict[str, Any], stage: str) -> Tensor:
        """Learn to predict eps from x_t (and, in the ControlNet stage, the scene's depth map or skeleton)."""
        xt, t, ids = b["xt"], b["t"], b["ids"]
        with self.autocast():
            if stage == "unet":
                pred = self.unet(xt, t, self.encode_text(ids)).sample
            else:
                with torch.no_grad():
                    text = self.encode_text(ids)
                p = b["scenes"]
                if b["pose"]:
                    net, cond = self.controlnets["pose"], self.pose_image(world.pose_keypoints_packed(p))
                else:
                    net, cond = self.controlnets["depth"], world.render_depth_packed(p, self.size).expand(-1, 3, -1, -1)
                down, mid = net(xt, t, text, controlnet_cond=cond, return_dict=False)
                pred = self.unet(
                    xt, t, text, down_block_additional_residuals=down, mid_block_additional_residual=mid
                ).sample
        return F.mse_loss(pred.float(), b["eps"])

    # --------------------------------------------------------------------------------------------- stages
    def prepare(self, stage: str) -> None:
        """Before a stage's clock starts: its scene pools, their latent caches, and (``--compile``) its models."""
        pools = {"vae": ("main",), "unet": ("main",), "controlnet": ("main", "person")}[stage]
        for name in pools:
            if stage != "vae" and self.cfg.cache_latents:
                self.posterior(name)
            else:
                self.pool(name)
        if self.cfg.compile and stage != "vae":  # in place (nn.Module.compile): state_dict keys stay the same
            models = (self.unet, self.text_encoder) if stage == "unet" else (self.unet, *self.controlnets.values())
            for m in models:
                if getattr(m, "_compiled_call_impl", None) is None:  # compiled once, not again per stage
                    m.compile()

    def run_stage(self, stage: str, steps: int) -> bool:
        """Train ``stage`` up to ``steps`` (or its time budget); False if ``run_steps`` or, with ``pause_at_budget``,
        the time budget stopped it first (the stage is to be resumed, not finished)."""
        self.split.check(self.batch[stage], stage)
        self.prepare(stage)
        started, deadline = time.monotonic(), self.deadline(stage)
        if self.opt is None:
            self.make_optimizer()
        self.metrics[f"{stage}_batch"] = self.batch[stage]
        first, progress, stop = self.step, 0.0, False
        losses: list[tuple[int, int, Tensor, float]] = []  # (step, samples, loss, lr factor), flushed at log time
        self.log(f"stage {stage}: steps {self.step}..{steps}, batch {self.batch[stage]} = {self.group.world_size} "
                 f"process(es) x {self.cfg.accumulate} micro-batch(es), {self.precision}, budget "
                 f"{deadline - started if math.isfinite(deadline) else math.inf:.0f}s")  # fmt: skip
        paused = False
        while self.step < steps and not stop:
            if self.cfg.run_steps and self.steps_this_run >= self.cfg.run_steps:
                paused = True
                break
            batch = self.vae_batch(self.step) if stage == "vae" else self.diffusion_batch(self.step, stage)
            factor = self.lr_factor(self.step, steps, progress)
            local = self.train_step(batch, factor, self.step)
            now = time.monotonic()
            if math.isfinite(deadline) and not self.cfg.pause_at_budget:  # paused runs: steps alone set the schedule
                progress = (now - started) / max(deadline - started, 1e-6)
            loss, stop, progress = self.sync(local, now >= deadline, progress)  # rank 0's clock decides for all
            self.step += 1
            self.steps_this_run += 1
            self.samples[stage] = self.samples.get(stage, 0) + self.batch[stage]
            losses.append((self.step, self.samples[stage], loss, factor))
            if self.step % self.cfg.log_every == 0 or self.step == steps:
                per_step = (time.monotonic() - started) / (self.step - first)
                mean = self.flush_losses(stage, losses)
                self.log(f"{stage} step {self.step}: loss {mean:.4f}  {per_step:.3f} s/step")
            if stage == "unet" and self.cfg.eval_every and self.step % self.cfg.eval_every == 0:
                self.flush_losses(stage, losses)
                self.curve_point()
            if self.group.is_main and time.monotonic() - self.last_ckpt > self.cfg.checkpoint_every_s:
                self.flush_losses(stage, losses)  # the file holds every step the checkpoint has seen
                self.save_checkpoint()
        self.flush_losses(stage, losses)
        self.metrics[f"{stage}_steps"] = self.step
        if self.scaler.is_enabled():
            self.metrics[f"{stage}_fp16_skipped_steps"] = self.skipped_steps.get(stage, 0)
        self.metrics[f"{stage}_s_per_step"] = (time.monotonic() - started) / max(self.step - first, 1)
        return not (paused or (stop and self.cfg.pause_at_budget and self.step < steps))

    def flush_losses(self, stage: str, losses: list[tuple[int, int, Tensor, float]]) -> float:
        """Append the logged steps to ``losses.jsonl`` (rank 0) and empty ``losses``; their mean loss."""
        if not losses:
            return math.nan
        values = torch.stack([loss for _, _, loss, _ in losses]).tolist()  # one device sync per flush
        if self.group.is_main:
            with open(self.out / "losses.jsonl", "a", encoding="utf-8") as f:
                for (step, samples, _, factor), value in zip(losses, values, strict=True):
                    row = {"stage": stage, "step": step, "samples": samples, "loss": value, "lr_factor": factor}
                    f.write(json.dumps(row) + "\n")
        losses.clear()
        return sum(values) / len(values)

    def curve_point(self) -> None:
        """One point of the learning curve: the EMA weights scored on every scorecard row (rank 0), appended to
        ``curve.jsonl`` with the samples seen."""
        from sdkit.models.shapes import curve

        if self.group.is_main:
            n = self.cfg.curve_n or (64 if self.cuda else 8)
            with self.ema_weights():
                scores = curve.score(self, n)
            row = {"stage": self.stage, "step": self.step, "samples": self.samples.get(self.stage, 0), **scores}
            with open(self.out / "curve.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            self.log("curve " + json.dumps(row))
        self.group.barrier()

    @contextlib.contextmanager
    def ema_weights(self) -> Any:
        """The EMA weights in place of the trained ones for the duration (no-op without EMA)."""
        if self.ema is None:
            yield
            return
        params = [p for group in self.opt.param_groups for p in group["params"]] if self.opt else []
        saved = [p.detach().clone() for p in params]
        torch._foreach_copy_([p.data for p in params], self.ema)
        try:
            with torch.no_grad():
                yield
        finally:
            torch._foreach_copy_([p.data for p in params], saved)

    def finish_vae(self) -> None:
        """Freeze the VAE, measure PSNR, and set the latent scale to 1 / std of the latents (SD's recipe)."""
        self.vae.eval().requires_grad_(False)
        p, _, g, _ = self.draw("main", "vae", 10**9)
        x = world.render_packed(p, self.size) * 2 - 1
        self.latent_scale = 1.0
        noise = torch.randn(len(x), arch.LATENT_CHANNELS, *self.latent_hw, generator=g, device=self.device)
        with torch.no_grad(), self.autocast():
            z = self.encode(x, noise)
            rec = self.vae.decode(z).sample.float().clamp(-1, 1)
        self.latent_scale = float(1 / z.float().std())
        from sdkit.models.shapes.evaluate import psnr

        self.metrics["vae_psnr"] = psnr((rec + 1) / 2, (x + 1) / 2)
        self.log(f"VAE PSNR {self.metrics['vae_psnr']:.2f} dB, latent scale {self.latent_scale:.4f}")

    def finish_unet(self) -> None:
        """Swap the EMA weights in, then measure prompt following with the evaluator."""
        if self.ema is not None:
            params = list(self.unet.parameters()) + list(self.text_encoder.parameters())
            torch._foreach_copy_([p.data for p in params], self.ema)
            self.ema = None
        self.unet.eval().requires_grad_(False)
        self.text_encoder.eval().requires_grad_(False)
        if self.group.is_main:
            self.evaluate()
        self.group.barrier()

    def new_controlnets(self) -> dict[str, Any]:
        """Depth and pose ControlNets copied from the UNet as it is now."""
        return {
            k: arch.make_controlnet(self.unet, seed=self.cfg.seed + i).to(self.device)
            for i, k in enumerate(("depth", "pose"))
        }

    def ensure_controlnets(self) -> None:
        """The ControlNets to train: loaded or trained ones if there are any, else copies of the trained UNet."""
        if not self.controlnets:
            self.controlnets = self.new_controlnets()

    @torch.no_grad()
    def images_for(self, prompts: list[str], *, cfg: float = 7.5, seed: int = 0, **control: Any) -> Tensor:
        """Images in [0, 1] for ``prompts``: 20 Euler steps with guidance ``cfg`` on the models as they are now
        (``control``: ``controlnet=`` and ``cond=`` for a ControlNet)."""
        text = self.encode_text(token_ids(prompts).to(self.device))
        uncond = self.encode_text(token_ids([""] * len(prompts)).to(self.device))
        with self.autocast():
            latents = sample(self.unet, text, uncond, self.acp, steps=20, cfg=cfg, seed=seed,
                             latent_size=self.latent_hw[0], **control)  # fmt: skip
            images = ((self.vae.decode(latents / self.latent_scale).sample.float() + 1) / 2).clamp(0, 1)
        return images.cpu()

    def evaluate(self, control: bool = False) -> None:
        try:
            from sdkit.models.shapes import evaluate as ev
        except ImportError:
            return
        n = self.cfg.eval_n or (256 if self.cuda else 16)
        scenes = world.sample_scenes(n, self.cfg.seed + 12345, full_caption=True, person_fraction=0.0)
        prompts = [world.caption(s) for s in scenes]
        if control:
            depth = world.render_depth(scenes, self.device, self.size).expand(-1, 3, -1, -1)
            images = self.images_for(prompts, seed=self.cfg.seed, controlnet=self.controlnets["depth"], cond=depth)
            self.metrics["depth_iou"] = float(ev.depth_iou(images, world.render_depth(scenes)).mean())
            persons = world.sample_scenes(n, self.cfg.seed + 777, person_fraction=1.0, full_caption=True)
            kp = world.pose_keypoints(persons).to(self.device)
            images = self.images_for([world.caption(s) for s in persons], seed=self.cfg.seed,
                                     controlnet=self.controlnets["pose"], cond=self.pose_image(kp))  # fmt: skip
            self.metrics["pose_coverage"] = float(ev.pose_coverage(images, kp.cpu()).mean())
        else:
            result = ev.evaluate(self.images_for(prompts, seed=self.cfg.seed), prompts)
            self.metrics.update({f"eval_{k}": v for k, v in result.items() if isinstance(v, float)})
        self.log("eval " + json.dumps({k: round(v, 4) for k, v in self.metrics.items() if isinstance(v, float)}))

    # ------------------------------------------------------------------------------- checkpoint + export
    def save_checkpoint(self) -> None:
        checkpoints.save(self)

    def load_checkpoint(self) -> None:
        checkpoints.load(self)

    def resume_from_export(self, folder: Path) -> None:
        checkpoints.resume_from_export(self, folder)

    def export(self) -> None:
        """Write the diffusers folder (rank 0). Before the ControlNet stage the folder gets untrained placeholder
        ControlNets (zero output: they change nothing), which are not kept: that stage copies the UNet it ends
        up with. In the middle of a stage the UNet stage exports its EMA weights, and ``sdkit.json`` records where
        training stopped, so that the folder alone can resume (``resume_from_export``)."""
        if not self.group.is_main:
            return
        t = time.monotonic()
        done = len(STAGES) if self.stage == "done" else STAGES.index(self.stage)
        info: dict[str, Any] = {"metrics": self.metrics, "trained_stages": list(STAGES[:done])}
        info["default_size"] = self.size
        if self.stage != "done" and self.step > 0:
            info["training"] = {"stage": self.stage, "step": self.step, "samples": self.samples}
        controlnets = self.controlnets or self.new_controlnets()
        with self.ema_weights():
            folder = export(self.out / "model", vae=self.vae, text_encoder=self.text_encoder, unet=self.unet,
                            controlnets=controlnets, latent_scale=self.latent_scale, info=info)  # fmt: skip
        (self.out / "metrics.json").write_text(json.dumps(self.metrics, indent=2) + "\n")
        self.log(f"exported {folder} ({time.monotonic() - t:.1f}s)")

    # ------------------------------------------------------------------------------------------------ run
    def run(self) -> None:
        cfg = self.cfg
        if cfg.resume:
            checkpoints.resume(self)
        steps = {"vae": cfg.vae_steps, "unet": cfg.unet_steps, "controlnet": cfg.controlnet_steps}
        while self.stage != "done":
            stage = self.stage
            if stage == "controlnet":
                self.ensure_controlnets()
            if not self.run_stage(stage, steps[stage]):  # --run-steps reached: keep everything, stop here
                self.save_checkpoint()
                self.export()
                self.group.barrier()
                self.log(f"paused at stage {stage}, step {self.step}; --resume continues")
                return
            if stage == "vae":
                self.finish_vae()
            elif stage == "unet":
                self.finish_unet()
            else:
                for m in self.controlnets.values():
                    m.eval().requires_grad_(False)
                if self.group.is_main:
                    self.evaluate(control=True)
            self.stage = STAGES[STAGES.index(stage) + 1] if stage != "controlnet" else "done"
            if self.stage == "controlnet" and self.cfg.skip_controlnet:
                self.stage = "done"
            self.step, self.opt, self.model, self.warm_from = 0, None, None, 0
            self.save_checkpoint()
            self.export()
            self.group.barrier()
        self.log(f"done in {time.monotonic() - self.t0:.1f}s: {json.dumps(self.metrics)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the embedded shapes model.")
    defaults = Config(out="")
    parser.add_argument("--out", required=True, help="folder for checkpoint.pt, train.log and model/")
    for name, value in asdict(defaults).items():
        if name == "out" or isinstance(value, bool):  # the switches below
            continue
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--skip-controlnet", action="store_true", help="stop after the UNet stage")
    pause = "when --time-budget-s ends mid-stage, stop with checkpoint and export for --resume"
    parser.add_argument("--pause-at-budget", action="store_true", help=pause)
    parser.add_argument("--fresh-controlnets", action="store_true", help="with --init-from: new ControlNets")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models of the diffusion stages")
    parser.add_argument("--no-cache-latents", dest="cache_latents", action="store_false",
                        help="render and encode every batch instead of encoding each pool once")  # fmt: skip
    cfg = Config(**vars(parser.parse_args(argv)))
    if cfg.precision not in PRECISIONS:
        parser.error(f"--precision must be one of {', '.join(PRECISIONS)}")
    # DDP's note that some gradient (on the CPU, from oneDNN kernels) has other strides than its bucket: harmless
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    with join() as group:  # a group of one unless launched by torchrun
        Trainer(cfg, group).run()


if __name__ == "__main__":
    main()
