"""Cross-attention capture: which prompt tokens each latent pixel looked at, per step and per layer.

In every transformer block of the SD UNet, ``attn2`` is cross-attention: its queries are the latent pixels
``[b, h*w, c]`` and its keys/values are the text embeddings ``[b, chunks*77, d]``. The attention
probabilities ``softmax(Q K^T / sqrt(d_head))`` ``[b, heads, h*w, tokens]`` say how much each pixel reads
from each token. DAAM (Tang et al. 2022, "What the DAAM: Interpreting Stable Diffusion Using Cross
Attention", arXiv:2210.04885) turns them into per-word heat maps by upsampling every layer's maps to the
image size and summing over heads, layers and steps.

How it is wired (diffusers 0.42's ``Attention``/processor API): ``capture_attention`` puts a
``CaptureProcessor`` on every cross-attention module (``attn.is_cross_attention``, named ``...attn2``). The
processor always delegates the real computation to the processor that was there before (SDPA by default),
so a generation with capture installed is bit-identical to one without; for the requested layers and steps
it *also* computes the probabilities explicitly and records them (on the CPU). Self-attention modules are
never touched.

    with capture_attention(kit, layers=["up_blocks"], steps=range(5, 20)) as maps:
        gen = kit.generate("a red circle", seed=1)
    heat = maps.word_map("circle")          # [b, H, W] in [0, 1], at image resolution

"Steps" here count UNet evaluations (one per step for Euler, DPM++ 2M, DDIM; two for Heun or DPM2);
``maps.sigmas[i]`` is the noise level of evaluation ``i``. Under classifier-free guidance the UNet sees
``[uncond, cond]`` as one batch; only the cond half is kept.

Captures nest, on the same UNet too: each one wraps what is installed when it enters, and on exit unlinks
its own processors (and its ``encode_pair`` watch) from wherever they sit in the chain, so blocks may exit in
any order and the last one out leaves the very processor objects that were there before the first.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from sdkit.types import Tokens

LayerSelection = Iterable[str] | Callable[[str], bool] | None
StepSelection = Iterable[int] | Callable[[int], bool] | None


# ----------------------------------------------------------------------------------------- the math
def attention_probabilities(
    attn: Any, hidden_states: Tensor, context: Tensor, attention_mask: Tensor | None = None
) -> Float[Tensor, "b heads q t"]:
    """``softmax(Q K^T * scale)`` of a diffusers cross-attention module, computed explicitly in float32.

    ``hidden_states`` ``[b, q, c]`` (or ``[b, c, h, w]``), ``context`` ``[b, t, d]``. ``attn.scale`` is
    ``1/sqrt(d_head)`` (Vaswani et al. 2017, eq. 1), what SDPA uses by default.
    """
    if hidden_states.ndim == 4:
        b, c, h, w = hidden_states.shape
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
    if getattr(attn, "norm_cross", None):
        context = attn.norm_encoder_hidden_states(context)
    query, key = attn.to_q(hidden_states), attn.to_k(context)
    b, q_len, inner = query.shape
    heads = attn.heads
    query = query.view(b, q_len, heads, inner // heads).transpose(1, 2)  # [b, heads, q, d]
    key = key.view(b, key.shape[1], heads, inner // heads).transpose(1, 2)  # [b, heads, t, d]
    if getattr(attn, "norm_q", None) is not None:
        query = attn.norm_q(query)
    if getattr(attn, "norm_k", None) is not None:
        key = attn.norm_k(key)
    scores = query.float() @ key.float().transpose(-1, -2) * attn.scale
    if attention_mask is not None:
        scores = scores + attention_mask.float().view(b, -1, *attention_mask.shape[-2:])
    return scores.softmax(dim=-1)


def cross_attention_modules(unet: nn.Module) -> dict[str, Any]:
    """The UNet's cross-attention modules by name (``...transformer_blocks.0.attn2``), in forward order."""
    from diffusers.models.attention_processor import Attention

    return {n: m for n, m in unet.named_modules() if isinstance(m, Attention) and m.is_cross_attention}


def _layer_size(queries: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of a UNet level with ``queries`` pixels: the latent size halved k times (stride-2 convs round up)."""
    h, w = latent_hw
    for k in range(8):
        lh, lw = math.ceil(h / 2**k), math.ceil(w / 2**k)
        if lh * lw == queries:
            return lh, lw
    raise ValueError(f"cannot place {queries} attention queries on a latent of {h}x{w}")


# --------------------------------------------------------------------------------------- the records
@dataclass
class AttentionMaps:
    """Recorded cross-attention probabilities.

    ``probs[(step, layer)]`` is ``[b, heads, h*w, tokens]`` (``heads`` is 1 when captured with
    ``keep_heads=False``); ``sizes[layer]`` is that layer's ``(h, w)``; ``sigmas[step]`` the noise level of
    each UNet evaluation; ``tokens`` the prompt's ``Tokens`` when the capture saw ``kit.prompts`` encode it.
    """

    probs: dict[tuple[int, str], Tensor] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    sigmas: list[float] = field(default_factory=list)
    latent_size: tuple[int, int] = (0, 0)
    factor: int = 8
    tokens: Tokens | None = None
    capturing: bool = field(default=False, compare=False)  # True while its capture is installed

    @property
    def steps(self) -> list[int]:
        return sorted({s for s, _ in self.probs})

    @property
    def layers(self) -> list[str]:
        seen: dict[str, None] = {}
        for _, name in self.probs:
            seen.setdefault(name)
        return list(seen)

    def __len__(self) -> int:
        return len(self.probs)

    def __getitem__(self, key: tuple[int, str]) -> Tensor:
        return self.probs[key]

    def spatial(self, step: int, layer: str) -> Float[Tensor, "b heads t h w"]:
        """One record as images: ``[b, heads, tokens, h, w]`` (unaggregated)."""
        p = self.probs[(step, layer)]
        h, w = self.sizes[layer]
        return p.transpose(-1, -2).reshape(p.shape[0], p.shape[1], p.shape[3], h, w)

    def token_maps(
        self,
        steps: Iterable[int] | None = None,
        layers: Iterable[str] | None = None,
        size: tuple[int, int] | None = None,
        normalize: bool = True,
    ) -> Float[Tensor, "b t H W"]:
        """DAAM aggregation: every (step, layer) map upsampled (bicubic) to ``size`` (default: the image's
        ``(H, W)``), summed over heads, layers and steps, clamped at 0, and scaled per token to max 1."""
        steps = self.steps if steps is None else list(steps)
        layers = self.layers if layers is None else list(layers)
        keys = [(s, n) for s in steps for n in layers if (s, n) in self.probs]
        if not keys:
            raise ValueError(f"no attention recorded for steps {steps} and layers {layers} (have {len(self)} maps)")
        size = size or (self.latent_size[0] * self.factor, self.latent_size[1] * self.factor)
        total: Tensor | None = None
        for key in keys:
            per_token = self.spatial(*key).float().sum(dim=1)  # sum over heads: [b, t, h, w]
            up = F.interpolate(per_token, size=size, mode="bicubic", align_corners=False)
            total = up if total is None else total + up
        assert total is not None
        total = total.clamp_min(0)
        if normalize:
            total = total / total.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        return total

    def token_positions(self, word: str, tokens: Tokens | None = None) -> list[int]:
        """Positions on the token axis (``chunk * n + k``) of every occurrence of ``word`` in the prompt.

        A word split into several tokens (``"hexagon"`` -> ``hex, agon``) gives all of its positions; the
        match is on the cleaned pieces of each prompt word, case-insensitive.
        """
        from sdkit.text.tokenizer import clean_piece

        tokens = tokens or self.tokens
        if tokens is None:
            raise ValueError("pass the prompt's Tokens (kit.prompts.tokenize(prompt)): none were recorded")
        target = word.strip().lower()
        n = int(tokens.ids.shape[1])
        found: list[int] = []
        for c, (pieces, words) in enumerate(zip(tokens.pieces, tokens.words, strict=True)):
            groups: dict[int, list[int]] = {}
            for k, w in enumerate(words):
                if w >= 0:
                    groups.setdefault(w, []).append(k)
            for ks in groups.values():
                if "".join(clean_piece(pieces[k]) for k in ks).lower() == target:
                    found.extend(c * n + k for k in ks)
        if not found:
            raise KeyError(f"word {word!r} is not in the prompt {tokens.text!r}")
        return found

    def word_map(self, word: str, tokens: Tokens | None = None, **options: Any) -> Float[Tensor, "b H W"]:
        """Heat map of ``word`` (summed over its tokens), in [0, 1]; ``options`` as in ``token_maps``."""
        positions = self.token_positions(word, tokens)
        maps = self.token_maps(**{**options, "normalize": False})[:, positions].sum(dim=1)
        return maps / maps.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)

    def to_tensors(self) -> dict[str, Tensor]:
        """A flat dict for ``sdkit.loading.save_tensors`` (keys ``attn.<step>.<layer>``)."""
        out = {f"attn.{s}.{n}": p.contiguous() for (s, n), p in self.probs.items()}
        out["attn_sigmas"] = torch.tensor(self.sigmas, dtype=torch.float64)
        out["attn_latent_size"] = torch.tensor([*self.latent_size, self.factor])
        for n, (h, w) in self.sizes.items():
            out[f"attn_size.{n}"] = torch.tensor([h, w])
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> AttentionMaps:
        maps = cls()
        for key, value in tensors.items():
            if key.startswith("attn."):
                _, step, name = key.split(".", 2)
                maps.probs[(int(step), name)] = value
            elif key.startswith("attn_size."):
                maps.sizes[key.split(".", 1)[1]] = (int(value[0]), int(value[1]))
        if "attn_sigmas" in tensors:
            maps.sigmas = [float(s) for s in tensors["attn_sigmas"]]
        if "attn_latent_size" in tensors:
            h, w, f = (int(v) for v in tensors["attn_latent_size"])
            maps.latent_size, maps.factor = (h, w), f
        return maps


# ------------------------------------------------------------------------------------ the processor
class CaptureProcessor:
    """Delegates to ``inner`` (the module's previous processor) and, when its capture asks, records the
    attention probabilities of the module first."""

    def __init__(self, inner: Any, name: str, capture: AttentionCapture) -> None:
        self.inner, self.name, self.capture = inner, name, capture

    def __call__(
        self,
        attn: Any,  # a diffusers Attention module
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Tensor:
        if encoder_hidden_states is not None and self.capture.wants(self.name):
            keep = self.capture.batch_slice
            with torch.no_grad():
                mask = None if attention_mask is None else attention_mask[keep]
                probs = attention_probabilities(attn, hidden_states[keep], encoder_hidden_states[keep], mask)
            self.capture.record(self.name, probs)
        if temb is not None:
            kwargs["temb"] = temb
        # diffusers' Attention.forward passes everything by keyword; so do we, unchanged.
        return self.inner(
            attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **kwargs
        )


class _PromptWatch:
    """``prompts.encode_pair`` wrapped to tell a capture the uncond embeddings and the prompt's tokens.

    ``inner`` is what it wraps: the previous instance attribute (another watch) when ``own`` is True, else the
    class's method (the watch is then deleted, not replaced, on removal)."""

    def __init__(self, inner: Callable[..., Any], own: bool, capture: AttentionCapture) -> None:
        self.inner, self.own, self.capture = inner, own, capture

    def __call__(self, prompt: str, negative_prompt: str = "", **options: Any) -> Any:
        cond, uncond = self.inner(prompt, negative_prompt, **options)
        self.capture._uncond = uncond.embeds
        self.capture.maps.tokens = self.capture.prompts.tokenize(prompt)
        return cond, uncond


_LIVE: weakref.WeakSet[AttentionCapture] = weakref.WeakSet()  # installed captures


def is_capturing(prompts: Any) -> bool:
    """Whether an attention capture made for the kit with this prompt encoder (``capture_attention(kit)``, whatever
    its ``cond_only``) is installed now."""
    return any(capture.prompts is prompts for capture in list(_LIVE))


def _unlink(top: Any, target: Any, kind: type[Any]) -> bool:
    """Take ``target`` out of a chain of ``kind`` wrappers (each with ``.inner``) that starts at ``top``.

    True when ``target`` is ``top`` itself: the caller puts ``target.inner`` in its place. Otherwise the wrapper
    just above it now wraps what it wrapped; a ``target`` no longer in the chain (something replaced the chain)
    is left alone.
    """
    if top is target:
        return True
    node: Any = top
    while isinstance(node, kind):
        if node.inner is target:
            node.inner = target.inner
            if isinstance(node, _PromptWatch):
                node.own = target.own
            return False
        node = node.inner
    return False


def _selector(selection: Any, kind: str) -> Callable[[Any], bool]:
    if selection is None:
        return lambda _: True
    if callable(selection) and not isinstance(selection, range):
        return selection
    chosen = list(selection)
    if kind == "layer":  # a layer is chosen when any given string is part of its name ("up_blocks", "attn2")
        return lambda name: any(s in name for s in chosen)
    chosen_steps = set(chosen)
    return lambda step: step in chosen_steps


class AttentionCapture:
    """Installs ``CaptureProcessor`` on a UNet's cross-attention modules; a context manager.

    ``layers``: None (all), names or name fragments, or ``name -> bool``; ``steps``: None (all), UNet
    evaluation indices, or ``index -> bool``. Empty selections install the processors but record nothing.
    ``cond_only``: keep the cond half of ``[uncond, cond]`` batches; None detects CFG batches by comparing
    the first half with the uncond embeddings ``kit.prompts`` produced. ``keep_heads=False`` sums the heads
    at capture time (memory / heads); ``dtype`` of the stored probabilities.
    """

    def __init__(
        self,
        unet: Any,  # a diffusers UNet2DConditionModel
        *,
        layers: LayerSelection = None,
        steps: StepSelection = None,
        keep_heads: bool = True,
        dtype: torch.dtype = torch.float32,
        cond_only: bool | None = None,
        schedule: Any = None,
        prompts: Any = None,
        factor: int = 8,
    ) -> None:
        self.unet, self.schedule, self.prompts = unet, schedule, prompts
        self.layer_wanted = _selector(layers, "layer")
        self.step_wanted = _selector(steps, "step")
        self.keep_heads, self.dtype, self.cond_only = keep_heads, dtype, cond_only
        self.maps = AttentionMaps(factor=factor)
        self.step = -1
        self.batch_slice = slice(None)
        self._uncond: Tensor | None = None
        self._installed: dict[str, CaptureProcessor] = {}
        self._watch: _PromptWatch | None = None
        self._hook: Any = None

    # --- bookkeeping driven by the UNet's forward pre-hook
    def _before_unet(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        context = args[2] if len(args) > 2 else kwargs.get("encoder_hidden_states")
        self.step += 1
        self.maps.latent_size = (int(sample.shape[-2]), int(sample.shape[-1]))
        t = torch.as_tensor(timestep).reshape(-1)[:1].detach().double().cpu()
        self.maps.sigmas.append(float(self.schedule.t_to_sigma(t)[0]) if self.schedule is not None else float(t[0]))
        self.batch_slice = slice(sample.shape[0] // 2, None) if self._is_cfg_batch(context) else slice(None)

    def _is_cfg_batch(self, context: Tensor | None) -> bool:
        if self.cond_only is not None or context is None:
            return bool(self.cond_only)
        b = context.shape[0]
        u = self._uncond
        if b % 2 or u is None or u.shape[1:] != context.shape[1:]:
            return False
        return bool(torch.equal(context[: b // 2], u[:1].to(context).expand(b // 2, *u.shape[1:])))

    def _watch_prompts(self) -> None:
        """Wrap ``prompts.encode_pair`` (an instance attribute, unlinked again on exit) to learn the uncond
        embeddings and the prompt's tokens."""
        prompts = self.prompts
        self._watch = _PromptWatch(prompts.encode_pair, "encode_pair" in vars(prompts), self)
        prompts.encode_pair = self._watch

    def wants(self, layer: str) -> bool:
        return self.step >= 0 and self.step_wanted(self.step) and self.layer_wanted(layer)

    def record(self, layer: str, probs: Tensor) -> None:
        if not self.keep_heads:
            probs = probs.sum(dim=1, keepdim=True)
        self.maps.probs[(self.step, layer)] = probs.detach().to("cpu", self.dtype)
        if layer not in self.maps.sizes:
            self.maps.sizes[layer] = _layer_size(probs.shape[2], self.maps.latent_size)

    # --- installing and removing
    def install(self) -> AttentionMaps:
        """Wrap every cross-attention processor installed now (another capture's too) in a ``CaptureProcessor``."""
        if self._installed:
            raise RuntimeError("this attention capture is already installed: make a new one to nest captures")
        for name, module in cross_attention_modules(self.unet).items():
            self._installed[name] = CaptureProcessor(module.processor, name, self)
            module.set_processor(self._installed[name])
        self._hook = self.unet.register_forward_pre_hook(self._before_unet, with_kwargs=True)
        if self.cond_only is None and hasattr(self.prompts, "encode_pair"):
            self._watch_prompts()
        self.maps.capturing = True
        _LIVE.add(self)
        return self.maps

    def remove(self) -> None:
        """Unlink this capture's processors and prompt watch wherever they are in the chains, so captures can
        be removed in any order; what each wrapped goes back in its place."""
        modules = dict(self.unet.named_modules())
        for name, processor in self._installed.items():
            module = modules[name]
            if _unlink(module.processor, processor, CaptureProcessor):
                module.set_processor(processor.inner)
        self._installed.clear()
        _LIVE.discard(self)
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        watch, self._watch = self._watch, None
        if watch is not None and _unlink(vars(self.prompts).get("encode_pair"), watch, _PromptWatch):
            if watch.own:
                self.prompts.encode_pair = watch.inner
            else:
                del self.prompts.encode_pair
        self.maps.capturing = False

    def __enter__(self) -> AttentionMaps:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.remove()


def capture_attention(
    kit: Any,
    layers: LayerSelection = None,
    steps: StepSelection = None,
    *,
    keep_heads: bool = True,
    dtype: torch.dtype = torch.float32,
    cond_only: bool | None = None,
    trace: Any = None,
) -> AttentionCapture:
    """Capture the cross-attention of ``kit``'s UNet: ``with capture_attention(kit, ...) as maps: ...``.

    With ``trace`` (a ``sdkit.trace.Trace`` later passed to ``kit.generate(trace=...)``), the maps are also
    stored as ``trace.attention``, so that they are saved with ``trace.to_tensors()``."""
    capture = AttentionCapture(
        kit.unet,
        layers=layers,
        steps=steps,
        keep_heads=keep_heads,
        dtype=dtype,
        cond_only=cond_only,
        schedule=getattr(kit.denoiser, "schedule", None),
        prompts=getattr(kit, "prompts", None),
        factor=kit.vae.space.factor,
    )
    if trace is not None:
        trace.attention = capture.maps
    return capture
