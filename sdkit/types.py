"""The contract of sdkit: the protocols every component implements and the small frozen records that
cross component edges. Read this file first.

Conventions (k-diffusion's, Karras et al. 2022): a *denoiser* maps a noisy latent ``x`` at noise level
``sigma`` to its estimate of the clean latent (``denoised``, "x0"). Samplers only ever see denoisers and
tensors of sigmas; prompts, timesteps and input scaling live in the adapters (``sdkit.denoisers``).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor


# ----------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Tokens:
    """One prompt, tokenized into chunks of ``n`` ids (77 for CLIP: BOS + 75 tokens + EOS/padding).

    ``pieces[c][k]`` is the token string of ``ids[c, k]``; ``weights`` are the prompt-weighting factors
    (1.0 where nothing was weighted); ``words[c][k]`` is the index of the prompt word a token came from
    (-1 for BOS/EOS/padding), so a notebook can show where a word split into several tokens.
    """

    ids: Int[Tensor, "chunks n"]
    weights: Float[Tensor, "chunks n"]
    pieces: tuple[tuple[str, ...], ...]
    words: tuple[tuple[int, ...], ...] = ()
    text: str = ""
    pad_id: int = 49407

    @property
    def chunks(self) -> int:
        return int(self.ids.shape[0])

    def _repr_html_(self) -> str:
        return tokens_table(self)


@dataclass(frozen=True)
class TextConditioning:
    """What the text encoder gives the noise predictor: per-token embeddings and, for SDXL, a pooled one.

    ``extra`` carries family-specific conditioning as tensors (SDXL's ``time_ids``), batched like ``embeds``.
    """

    embeds: Float[Tensor, "b t d"]
    pooled: Float[Tensor, "b d"] | None = None
    extra: dict[str, Tensor] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return int(self.embeds.shape[0])

    def repeat(self, n: int) -> TextConditioning:
        """The same conditioning for ``n`` images per entry (batch ``b`` becomes ``b * n``)."""
        return TextConditioning(
            self.embeds.repeat_interleave(n, 0),
            None if self.pooled is None else self.pooled.repeat_interleave(n, 0),
            {k: v.repeat_interleave(n, 0) for k, v in self.extra.items()},
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TextConditioning:
        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return TextConditioning(
            move(self.embeds),
            None if self.pooled is None else move(self.pooled),
            {k: move(v) for k, v in self.extra.items()},
        )

    @staticmethod
    def cat(parts: list[TextConditioning]) -> TextConditioning:
        """Concatenate along the batch; token lengths must agree (pad prompts to the same chunk count)."""
        lengths = {p.embeds.shape[1] for p in parts}
        if len(lengths) != 1:
            raise ValueError(
                f"conditionings have different token lengths {sorted(lengths)}; pad them to the same chunks"
            )
        pooled = [p.pooled for p in parts]
        keys = set(parts[0].extra)
        return TextConditioning(
            torch.cat([p.embeds for p in parts]),
            None if any(p is None for p in pooled) else torch.cat(pooled),  # type: ignore[arg-type]
            {k: torch.cat([p.extra[k] for p in parts]) for k in keys},
        )


@dataclass(frozen=True)
class Step:
    """One sampler step: from ``x`` at ``sigma`` to ``x_next`` at ``sigma_next``, via the x0 estimate."""

    i: int
    sigma: float
    sigma_next: float
    x: Float[Tensor, "b c h w"]
    denoised: Float[Tensor, "b c h w"]
    x_next: Float[Tensor, "b c h w"]


# --------------------------------------------------------------------------------------------- protocols
@runtime_checkable
class Denoiser(Protocol):
    """``(x, sigma[b]) -> denoised``: the only thing a sampler calls (k-diffusion's model convention)."""

    def __call__(self, x: Float[Tensor, "b c h w"], sigma: Float[Tensor, " b"]) -> Float[Tensor, "b c h w"]: ...


@runtime_checkable
class ConditionalDenoiser(Protocol):
    """A denoiser that still needs its text conditioning; ``bind``/``cfg`` turn it into a ``Denoiser``."""

    def __call__(
        self, x: Float[Tensor, "b c h w"], sigma: Float[Tensor, " b"], cond: TextConditioning, **extra: Any
    ) -> Float[Tensor, "b c h w"]: ...


@runtime_checkable
class NoisePredictor(Protocol):
    """The UNet, raw view: ``(x_in, timestep[b], cond) -> model output`` (eps or v, per ``prediction_type``)."""

    @property
    def in_channels(self) -> int: ...

    def __call__(
        self,
        x_in: Float[Tensor, "b c h w"],
        timestep: Float[Tensor, " b"],
        cond: TextConditioning,
        **extra: Any,
    ) -> Float[Tensor, "b c h w"]: ...


@runtime_checkable
class Tokenizer(Protocol):
    def __call__(self, prompt: str) -> Tokens: ...


@runtime_checkable
class TextEncoder(Protocol):
    def __call__(self, tokens: Tokens) -> TextConditioning: ...


NoiseSampler = Callable[[Tensor, Tensor], Tensor]
"""``(sigma, sigma_next) -> standard normal noise shaped like x`` (k-diffusion's noise_sampler)."""


class Sampler(Protocol):
    """A stateless sampling algorithm: yields one ``Step`` per interval of ``sigmas``."""

    def __call__(
        self, denoiser: Denoiser, x: Float[Tensor, "b c h w"], sigmas: Float[Tensor, " n"], **options: Any
    ) -> Iterator[Step]: ...


class Scheduler(Protocol):
    """Makes a noise schedule: ``n`` steps -> ``n + 1`` decreasing sigmas ending in 0."""

    def __call__(self, n: int, sigma_min: float, sigma_max: float) -> Float[Tensor, " n1"]: ...


class Conditioner(Protocol):
    """Image-shaped conditioning (init image, mask, depth, pose): prepares what a recipe consumes."""

    def __call__(self, image: Any) -> Any: ...


# ------------------------------------------------------------------------------------------------ tokens
def eos_positions(tokens: Tokens) -> list[int]:
    """Position of the EOS token in each chunk: the first non-word position after BOS."""
    if not tokens.words:
        raise ValueError("these Tokens carry no word indices; cannot locate EOS")
    return [next(k for k in range(1, len(w)) if w[k] < 0) for w in tokens.words]


def tokens_table(tokens: Tokens, show_padding: int = 2) -> str:
    """HTML view of ``Tokens`` for notebooks (what ``Tokens._repr_html_`` shows): one row per chunk, one
    cell per token (piece, id, weight when not 1), cells of the same word share a colour, and padding
    is summarised after ``show_padding`` cells."""
    from sdkit.text.vocabulary import clean_piece  # the BPE byte symbols back to text (a stdlib-only module)

    palette = ("#dbeafe", "#fde68a", "#bbf7d0", "#fbcfe8", "#ddd6fe", "#fed7aa")
    rows = []
    for c in range(tokens.chunks):
        ids = tokens.ids[c].tolist()
        weights = tokens.weights[c].tolist()
        words = tokens.words[c] if tokens.words else (-1,) * len(ids)
        end = eos_positions(tokens)[c] + 1 if tokens.words else len(ids)
        cells = []
        for k in range(min(len(ids), end + show_padding)):
            colour = "#e5e7eb" if words[k] < 0 else palette[words[k] % len(palette)]
            weight = "" if weights[k] == 1.0 else f"<br><b>x{weights[k]:.3g}</b>"
            piece = html.escape(clean_piece(tokens.pieces[c][k]))
            cells.append(
                f'<td style="background:{colour};padding:2px 4px;text-align:center" title="position {k}, '
                f'word {words[k]}">{piece}<br><small>{ids[k]}</small>{weight}</td>'
            )
        if len(ids) > end + show_padding:
            cells.append(f"<td><small>+{len(ids) - end - show_padding} padding ({tokens.pad_id})</small></td>")
        rows.append(f"<tr><th>chunk {c}</th>{''.join(cells)}</tr>")
    title = html.escape(tokens.text if len(tokens.text) < 200 else tokens.text[:200] + "...")
    return (
        f"<div><small>Tokens: {tokens.chunks} chunk(s) x {tokens.ids.shape[1]} &mdash; {title!s}</small>"
        '<table style="border-collapse:collapse;font-family:monospace;font-size:11px">'
        f"{''.join(rows)}</table></div>"
    )
