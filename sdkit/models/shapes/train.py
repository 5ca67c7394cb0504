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
``--resume`` continues from ``OUT/checkpoint.pt``. Everything is seeded: the same seed and step counts
give the same model (time budgets make the step counts depend on the machine's speed).

    python -m sdkit.models.shapes.train --out runs/shapes --device cuda --time-budget-s 440
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sdkit.models.shapes import architecture as arch
from sdkit.models.shapes import world
from sdkit.models.shapes.captions import token_ids
from sdkit.models.shapes.export import export

STAGES = ("vae", "unet", "controlnet")
TIME_SHARE = {"vae": 0.25, "unet": 0.55, "controlnet": 0.20}


@dataclass
class Config:
    out: str
    device: str = "cpu"
    vae_steps: int = 6000
    unet_steps: int = 20000
    controlnet_steps: int = 4000
    batch: int = 0  # 0: 256 VAE / 1024 UNet / 512 ControlNet images on CUDA, 16 / 32 / 16 on CPU
    seed: int = 0
    resume: bool = False
    time_budget_s: float = 0.0  # 0: no limit, run all steps
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


def alphas_cumprod(n: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Tensor:
    """SD's "scaled_linear" schedule: betas linear in sqrt space; returns abar_t = prod(1 - beta)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


@torch.no_grad()
def sample(
    unet: Any,
    text: Tensor,
    uncond: Tensor,
    acp: Tensor,
    *,
    steps: int = 20,
    cfg: float = 7.5,
    seed: int = 0,
    controlnet: Any = None,
    cond: Tensor | None = None,
) -> Tensor:
    """Euler sampling with classifier-free guidance, for in-training evaluation only (the real samplers live
    in ``sdkit.samplers``). Works in k-diffusion's sigma space: sigma_t = sqrt((1 - abar_t) / abar_t)."""
    b, device = text.shape[0], text.device
    ts = torch.linspace(len(acp) - 1, 0, steps, device=device).round().long()
    sigmas = torch.cat([((1 - acp[ts]) / acp[ts]).sqrt(), torch.zeros(1, device=device)])
    g = torch.Generator("cpu").manual_seed(seed)  # CPU noise: the same images on any device
    x = torch.randn(b, 4, 8, 8, generator=g).to(device) * sigmas[0]
    both = torch.cat([uncond, text])
    for i, t in enumerate(ts):
        x_in = torch.cat([x, x]) / (sigmas[i] ** 2 + 1).sqrt()  # c_in: undo the VP scaling the UNet expects
        extra: dict[str, Any] = {}
        if controlnet is not None:
            assert cond is not None, "a ControlNet needs its condition image"
            down, mid = controlnet(x_in, t, both, controlnet_cond=torch.cat([cond, cond]), return_dict=False)
            extra = dict(down_block_additional_residuals=down, mid_block_additional_residual=mid)
        eps_u, eps_c = unet(x_in, t, both, **extra).sample.float().chunk(2)
        eps = eps_u + cfg * (eps_c - eps_u)
        denoised = x - sigmas[i] * eps
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])  # Euler: dx/dsigma = (x - x0) / sigma
    return x


class ScenePool:
    """Random scenes packed as tensors on the device, with their token ids: a batch is an index draw.

    Once the VAE is frozen, ``cache_latents`` encodes every scene once; the diffusion stages then draw their
    latents from the cached posterior (mean, std) instead of rendering and encoding each batch again."""

    def __init__(self, n: int, seed: int, device: str, person_fraction: float = 0.15) -> None:
        scenes = world.sample_scenes(n, seed, person_fraction=person_fraction)
        self.packed = world.pack(scenes, device)
        self.ids = token_ids([world.caption(s) for s in scenes]).to(device)
        self.n = n
        self.posterior: tuple[Tensor, Tensor] | None = None

    def batch(self, idx: Tensor) -> dict[str, Tensor]:
        return {k: v[idx] for k, v in self.packed.items()}

    @torch.no_grad()
    def cache_latents(self, vae: Any, chunk: int, autocast: contextlib.AbstractContextManager[Any]) -> None:
        means, stds = [], []
        for start in range(0, self.n, chunk):
            idx = torch.arange(start, min(start + chunk, self.n), device=self.ids.device)
            with autocast:
                post = vae.encode(world.render_packed(self.batch(idx)) * 2 - 1).latent_dist
            means.append(post.mean.float())
            stds.append(post.std.float())
        self.posterior = (torch.cat(means), torch.cat(stds))


class Trainer:
    def __init__(self, cfg: Config) -> None:
        if cfg.init_stage not in ("unet", "controlnet"):
            raise ValueError(f"init_stage must be 'unet' or 'controlnet', got {cfg.init_stage!r}")
        if cfg.init_stage == "controlnet" and cfg.skip_controlnet:
            raise ValueError("init_stage='controlnet' with skip_controlnet leaves nothing to train")
        self.cfg, self.device, self.t0 = cfg, torch.device(cfg.device), time.monotonic()
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.batch = _batch_sizes(cfg)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(cfg.seed)
        self.vae = arch.make_vae().to(self.device)
        self.text_encoder = arch.make_text_encoder().to(self.device)
        self.unet = arch.make_unet().to(self.device)
        self.controlnets: dict[str, Any] = {}
        self.latent_scale = 1.0
        self.stage, self.step = "vae", 0
        self.metrics: dict[str, Any] = {}
        self.opt: torch.optim.Optimizer | None = None
        self.ema: list[Tensor] | None = None
        self.acp = alphas_cumprod().to(self.device)
        self.empty_ids = token_ids([""]).to(self.device)
        self.pools: dict[str, ScenePool] = {}
        self.last_ckpt = time.monotonic()
        self.log_file = open(self.out / "train.log", "a")  # noqa: SIM115 - lives as long as the trainer
        if cfg.init_from:
            self.load_exported(Path(cfg.init_from))

    def load_exported(self, folder: Path) -> None:
        """Start from an exported model (e.g. a shorter earlier run): its VAE is kept frozen, training resumes
        at ``init_stage`` with fresh optimizer state."""
        from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
        from transformers import CLIPTextModel

        f32 = torch.float32
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
        self.stage, self.step = self.cfg.init_stage, 0
        if self.stage == "controlnet":
            self.metrics = {k: v for k, v in info.get("metrics", {}).items() if not k.startswith("controlnet")}
            self.metrics["init_controlnet_steps"] = (
                0 if self.cfg.fresh_controlnets else info.get("metrics", {}).get("controlnet_steps", 0)
            )
            for m in (self.unet, self.text_encoder):
                m.eval().requires_grad_(False)
        self.log(f"initialised from {folder} at stage {self.stage} (latent scale {self.latent_scale:.4f})")

    # ------------------------------------------------------------------------------------------ utilities
    def log(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def pool(self, name: str) -> ScenePool:
        if name not in self.pools:
            cfg = self.cfg
            n = cfg.pool or (131072 if self.cuda else 4096)
            t = time.monotonic()
            person = 1.0 if name == "person" else 0.15
            n = n // 4 if name == "person" else n  # people only feed the pose ControlNet
            self.pools[name] = ScenePool(n, cfg.seed + len(name), cfg.device, person_fraction=person)
            self.log(f"pool {name}: {n} scenes in {time.monotonic() - t:.1f}s")
        return self.pools[name]

    def draw(self, pool: str, stage: str, step: int) -> tuple[dict[str, Tensor], Tensor, torch.Generator, Tensor]:
        """One batch of packed scenes and token ids, a generator for this step's noise, and the scene indices."""
        g = torch.Generator(self.device).manual_seed(_seed(self.cfg, stage, step))
        p = self.pool(pool)
        idx = torch.randint(0, p.n, (self.batch[stage],), generator=g, device=self.device)
        return p.batch(idx), p.ids[idx], g, idx

    def clean_latents(self, pool: str, idx: Tensor, scenes: dict[str, Tensor], g: torch.Generator) -> Tensor:
        """x_0 for the diffusion loss: a posterior sample of each scene's latent, from the pool's cache (encoded
        on first use) or, with ``cache_latents`` off, by rendering and encoding the batch now. Both draw the same
        noise from ``g``, so they agree up to the VAE's batch-size rounding."""
        if not self.cfg.cache_latents:
            return self.encode(world.render_packed(scenes) * 2 - 1, g)
        means, stds = self.posterior(pool)
        mean, std = means[idx], stds[idx]
        return (mean + std * torch.randn(mean.shape, generator=g, device=self.device)) * self.latent_scale

    def posterior(self, pool: str) -> tuple[Tensor, Tensor]:
        """The pool's cached latent posterior (mean, std), encoded with the frozen VAE on first use."""
        p = self.pool(pool)
        if p.posterior is None:
            t = time.monotonic()
            p.cache_latents(self.vae, 4096 if self.cuda else 256, self.autocast())
            self.log(f"pool {pool}: {p.n} latents cached in {time.monotonic() - t:.1f}s")
        assert p.posterior is not None
        return p.posterior

    def lr_factor(self, step: int, steps: int, started: float, deadline: float) -> float:
        """Linear warmup, then cosine decay to 10% over the stage (measured in steps or in time)."""
        progress = step / max(steps, 1)
        if math.isfinite(deadline):
            progress = max(progress, (time.monotonic() - started) / max(deadline - started, 1e-6))
        warm = min(1.0, (step + 1) / self.cfg.warmup)
        return warm * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))

    def deadline(self, stage: str) -> float:
        """This stage's share of the time left (a stage that ends early leaves its time to the next)."""
        if not self.cfg.time_budget_s:
            return math.inf
        reserve = 10 + 0.05 * self.cfg.time_budget_s  # final export and evaluation
        end = self.t0 + self.cfg.time_budget_s - reserve
        left = [s for s in STAGES[STAGES.index(stage) :] if not (s == "controlnet" and self.cfg.skip_controlnet)]
        share = TIME_SHARE[stage] / sum(TIME_SHARE[s] for s in left)
        now = time.monotonic()
        return now + max(0.0, end - now) * share

    def encode(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Pixels in [-1, 1] -> scaled latents, a sample of the VAE's posterior (as SD trained on)."""
        with torch.no_grad(), self.autocast():
            post = self.vae.encode(x).latent_dist
            noise = torch.randn(post.mean.shape, generator=g, device=self.device)
            return ((post.mean + post.std * noise) * self.latent_scale).float()

    def encode_text(self, ids: Tensor) -> Tensor:
        return self.text_encoder(ids).last_hidden_state

    def trainable(self) -> list[torch.nn.Parameter]:
        if self.stage == "vae":
            return list(self.vae.parameters())
        if self.stage == "unet":
            return list(self.unet.parameters()) + list(self.text_encoder.parameters())
        return [p for m in self.controlnets.values() for p in m.parameters()]

    def make_optimizer(self) -> None:
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

    def optimizer_step(self, loss: Tensor, factor: float, step: int) -> None:
        assert self.opt is not None
        for group in self.opt.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for group in self.opt.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        self.opt.step()
        if self.ema is not None:  # EMA with a warmup, so early steps do not freeze the random init in
            decay = min(self.cfg.ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(self.ema, [p.detach() for p in params], 1 - decay)

    # --------------------------------------------------------------------------------------------- losses
    def vae_loss(self, step: int) -> Tensor:
        p, _, g, _ = self.draw("main", "vae", step)
        x = world.render_packed(p) * 2 - 1
        with self.autocast():
            post = self.vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=g, device=self.device)
            rec = self.vae.decode(z).sample.float()
        kl = post.kl().float().mean()
        return F.l1_loss(rec, x) + F.mse_loss(rec, x) + self.cfg.kl_weight * kl

    def diffusion_loss(self, step: int, stage: str) -> Tensor:
        """Forward diffusion: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps; learn to predict eps (DDPM eq. 14)."""
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
        with self.autocast():
            if stage == "unet":
                pred = self.unet(xt, t, self.encode_text(ids)).sample
            else:
                with torch.no_grad():
                    text = self.encode_text(ids)
                if pool == "person":
                    net, cond = self.controlnets["pose"], world.render_pose(world.pose_keypoints_packed(p))
                else:
                    net, cond = self.controlnets["depth"], world.render_depth_packed(p).expand(-1, 3, -1, -1)
                down, mid = net(xt, t, text, controlnet_cond=cond, return_dict=False)
                pred = self.unet(
                    xt, t, text, down_block_additional_residuals=down, mid_block_additional_residual=mid
                ).sample
        return F.mse_loss(pred.float(), eps)

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

    def run_stage(self, stage: str, steps: int) -> None:
        self.prepare(stage)
        started, deadline = time.monotonic(), self.deadline(stage)
        if self.opt is None:
            self.make_optimizer()
        self.metrics[f"{stage}_batch"] = self.batch[stage]
        first, n = self.step, 0
        running: Tensor | float = 0.0  # a device tensor while summing: no sync per step
        self.log(f"stage {stage}: steps {self.step}..{steps}, batch {self.batch[stage]}, budget "
                 f"{deadline - started if math.isfinite(deadline) else math.inf:.0f}s")  # fmt: skip
        while self.step < steps and time.monotonic() < deadline:
            loss_fn = self.vae_loss if stage == "vae" else lambda s: self.diffusion_loss(s, stage)
            loss = loss_fn(self.step)
            self.optimizer_step(loss, self.lr_factor(self.step, steps, started, deadline), self.step)
            running, n, self.step = running + loss.detach(), n + 1, self.step + 1
            if self.step % self.cfg.log_every == 0 or self.step == steps:
                per_step = (time.monotonic() - started) / (self.step - first)
                self.log(f"{stage} step {self.step}: loss {float(running) / n:.4f}  {per_step:.3f} s/step")
                running, n = 0.0, 0
            if time.monotonic() - self.last_ckpt > self.cfg.checkpoint_every_s:
                self.save_checkpoint()
        self.metrics[f"{stage}_steps"] = self.step
        self.metrics[f"{stage}_s_per_step"] = (time.monotonic() - started) / max(self.step - first, 1)

    def finish_vae(self) -> None:
        """Freeze the VAE, measure PSNR, and set the latent scale to 1 / std of the latents (SD's recipe)."""
        self.vae.eval().requires_grad_(False)
        p, _, g, _ = self.draw("main", "vae", 10**9)
        x = world.render_packed(p) * 2 - 1
        self.latent_scale = 1.0
        with torch.no_grad(), self.autocast():
            z = self.encode(x, g)
            rec = self.vae.decode(z).sample.float().clamp(-1, 1)
        self.latent_scale = float(1 / z.float().std())
        mse = F.mse_loss((rec + 1) / 2, (x + 1) / 2, reduction="none").mean((1, 2, 3))
        self.metrics["vae_psnr"] = float((-10 * torch.log10(mse.clamp_min(1e-10))).mean())
        self.log(f"VAE PSNR {self.metrics['vae_psnr']:.2f} dB, latent scale {self.latent_scale:.4f}")

    def finish_unet(self) -> None:
        """Swap the EMA weights in, then measure prompt following with the evaluator."""
        if self.ema is not None:
            params = list(self.unet.parameters()) + list(self.text_encoder.parameters())
            torch._foreach_copy_([p.data for p in params], self.ema)
            self.ema = None
        self.unet.eval().requires_grad_(False)
        self.text_encoder.eval().requires_grad_(False)
        self.evaluate()

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

    def evaluate(self, control: bool = False) -> None:
        try:
            from sdkit.models.shapes import evaluate as ev
        except ImportError:
            return
        n = self.cfg.eval_n or (256 if self.cuda else 16)
        scenes = world.sample_scenes(n, self.cfg.seed + 12345, full_caption=True, person_fraction=0.0)
        prompts = [world.caption(s) for s in scenes]
        text = self.encode_text(token_ids(prompts).to(self.device))
        uncond = self.encode_text(token_ids([""] * n).to(self.device))
        kw: dict[str, Any] = {}
        if control:
            kw = dict(controlnet=self.controlnets["depth"], cond=world.render_depth(scenes, self.device))
            kw["cond"] = kw["cond"].expand(-1, 3, -1, -1)
        with torch.no_grad(), self.autocast():
            latents = sample(self.unet, text, uncond, self.acp, steps=20, cfg=7.5, seed=self.cfg.seed, **kw)
            images = ((self.vae.decode(latents / self.latent_scale).sample.float() + 1) / 2).clamp(0, 1)
        if control:
            iou = ev.depth_iou(images.cpu(), world.render_depth(scenes))
            self.metrics["depth_iou"] = float(iou.mean())
            persons = world.sample_scenes(n, self.cfg.seed + 777, person_fraction=1.0, full_caption=True)
            kp = world.pose_keypoints(persons).to(self.device)
            text = self.encode_text(token_ids([world.caption(s) for s in persons]).to(self.device))
            with torch.no_grad(), self.autocast():
                latents = sample(self.unet, text, uncond, self.acp, steps=20, cfg=7.5, seed=self.cfg.seed,
                                 controlnet=self.controlnets["pose"], cond=world.render_pose(kp))  # fmt: skip
                images = ((self.vae.decode(latents / self.latent_scale).sample.float() + 1) / 2).clamp(0, 1)
            self.metrics["pose_coverage"] = float(ev.pose_coverage(images.cpu(), kp.cpu()).mean())
        else:
            result = ev.evaluate(images.cpu(), prompts)
            self.metrics.update({f"eval_{k}": v for k, v in result.items() if isinstance(v, float)})
        self.log("eval " + json.dumps({k: round(v, 4) for k, v in self.metrics.items() if isinstance(v, float)}))

    # ------------------------------------------------------------------------------- checkpoint + export
    def save_checkpoint(self) -> None:
        state = {
            "config": asdict(self.cfg),
            "stage": self.stage,
            "step": self.step,
            "latent_scale": self.latent_scale,
            "metrics": self.metrics,
            "vae": self.vae.state_dict(),
            "text_encoder": self.text_encoder.state_dict(),
            "unet": self.unet.state_dict(),
            "controlnets": {k: m.state_dict() for k, m in self.controlnets.items()},
            "opt": self.opt.state_dict() if self.opt else None,
            "ema": self.ema,
        }
        tmp = self.out / "checkpoint.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out / "checkpoint.pt")
        self.last_ckpt = time.monotonic()

    def load_checkpoint(self) -> None:
        state = torch.load(self.out / "checkpoint.pt", map_location=self.device, weights_only=True)
        self.stage, self.step = state["stage"], state["step"]
        self.latent_scale, self.metrics = state["latent_scale"], state["metrics"]
        for name in ("vae", "text_encoder", "unet"):
            getattr(self, name).load_state_dict(state[name])
        if state["controlnets"]:
            self.ensure_controlnets()
            for k, m in self.controlnets.items():
                m.load_state_dict(state["controlnets"][k])
        if self.stage != "vae":
            self.vae.eval().requires_grad_(False)
        if self.stage == "controlnet":
            self.unet.eval().requires_grad_(False)
            self.text_encoder.eval().requires_grad_(False)
        if self.stage != "done" and state["opt"] is not None:
            self.make_optimizer()
            assert self.opt is not None
            self.opt.load_state_dict(state["opt"])
            if state["ema"] is not None:
                self.ema = state["ema"]
        self.log(f"resumed at stage {self.stage}, step {self.step}")

    def export(self) -> None:
        """Write the diffusers folder. Before the ControlNet stage the folder gets untrained placeholder
        ControlNets (zero output: they change nothing), which are not kept: that stage copies the UNet it ends
        up with."""
        t = time.monotonic()
        done = len(STAGES) if self.stage == "done" else STAGES.index(self.stage)
        info = {"metrics": self.metrics, "trained_stages": list(STAGES[:done])}
        controlnets = self.controlnets or self.new_controlnets()
        folder = export(self.out / "model", vae=self.vae, text_encoder=self.text_encoder, unet=self.unet,
                        controlnets=controlnets, latent_scale=self.latent_scale, info=info)  # fmt: skip
        (self.out / "metrics.json").write_text(json.dumps(self.metrics, indent=2) + "\n")
        self.log(f"exported {folder} ({time.monotonic() - t:.1f}s)")

    # ------------------------------------------------------------------------------------------------ run
    def run(self) -> None:
        cfg = self.cfg
        if cfg.resume and (self.out / "checkpoint.pt").exists():
            self.load_checkpoint()
        steps = {"vae": cfg.vae_steps, "unet": cfg.unet_steps, "controlnet": cfg.controlnet_steps}
        while self.stage != "done":
            stage = self.stage
            if stage == "controlnet":
                self.ensure_controlnets()
            self.run_stage(stage, steps[stage])
            if stage == "vae":
                self.finish_vae()
            elif stage == "unet":
                self.finish_unet()
            else:
                for m in self.controlnets.values():
                    m.eval().requires_grad_(False)
                self.evaluate(control=True)
            self.stage = STAGES[STAGES.index(stage) + 1] if stage != "controlnet" else "done"
            if self.stage == "controlnet" and self.cfg.skip_controlnet:
                self.stage = "done"
            self.step, self.opt = 0, None
            self.save_checkpoint()
            self.export()
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
    parser.add_argument("--fresh-controlnets", action="store_true", help="with --init-from: new ControlNets")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models of the diffusion stages")
    parser.add_argument("--no-cache-latents", dest="cache_latents", action="store_false",
                        help="render and encode every batch instead of encoding each pool once")  # fmt: skip
    cfg = Config(**vars(parser.parse_args(argv)))
    Trainer(cfg).run()


if __name__ == "__main__":
    main()
