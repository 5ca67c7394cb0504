"""Looking at text embeddings: a per-token heatmap, a 2-D PCA map of words, prompt-to-prompt similarity.

``encoder`` below is anything with ``encode(prompt) -> TextConditioning`` and ``tokenize(prompt) -> Tokens``
(a ``sdkit.text.PromptEncoder``, e.g. ``kit.prompts``). The plots draw on ``ax`` or on a new figure and return
the Axes, which shows its figure in Jupyter (``sdkit.viz.figure``); matplotlib is imported only when plotting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from jaxtyping import Float
from torch import Tensor

from sdkit.text.tokenizer import clean_piece, eos_positions
from sdkit.types import TextConditioning, Tokens

if TYPE_CHECKING:
    from matplotlib.axes import Axes


class _Encodes(Protocol):
    def encode(self, prompt: str) -> TextConditioning: ...

    def tokenize(self, prompt: str) -> Tokens: ...


def plot_token_embeddings(
    cond: TextConditioning, tokens: Tokens, *, padding: int = 2, dims: int | None = 64, ax: Any = None
) -> Axes:
    """Heatmap of the per-token embeddings (rows: tokens of the first chunk up to EOS plus ``padding``
    padding positions; columns: the first ``dims`` features). Returns the matplotlib Axes."""
    from sdkit.viz.figure import new_axes

    end = eos_positions(tokens)[0] + 1 + padding
    z = cond.embeds[0, :end, :dims].detach().float().cpu()  # [tokens, dims]
    labels = [f"{k} {clean_piece(p)}" for k, p in enumerate(tokens.pieces[0][:end])]
    ax = new_axes(ax, (8, 0.25 * len(labels) + 1.5))
    limit = float(z.abs().quantile(0.99)) or 1.0  # robust colour range: BOS has huge outliers in real CLIP
    image = ax.imshow(z.numpy(), aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel(f"feature (first {z.shape[1]} of {cond.embeds.shape[-1]})")
    ax.set_title(f"token embeddings: {tokens.text[:60]!r}")
    ax.figure.colorbar(image, ax=ax, fraction=0.03)
    return ax


def word_embeddings(encoder: _Encodes, words: list[str]) -> Float[Tensor, "n d"]:
    """One vector per word: the mean of its tokens' embeddings when encoded alone (``[n, d]``)."""
    vectors = []
    for word in words:
        tokens = encoder.tokenize(word)
        z = encoder.encode(word).embeds[0, : tokens.ids.shape[1]]  # first chunk [77, d]
        content = torch.tensor([w >= 0 for w in tokens.words[0]], device=z.device)
        vectors.append(z[content].mean(0) if content.any() else z[eos_positions(tokens)[0]])
    return torch.stack(vectors).detach().float().cpu()


def pca_2d(x: Float[Tensor, "n d"]) -> Float[Tensor, "n 2"]:
    """Project rows onto their two main principal axes (SVD of the centred matrix)."""
    centred = x - x.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].T


def plot_embedding_pca(encoder: _Encodes, words: list[str], *, ax: Any = None) -> Axes:
    """2-D PCA map of several words' embeddings (``word_embeddings``), labelled. Returns the Axes."""
    from sdkit.viz.figure import new_axes

    points = pca_2d(word_embeddings(encoder, words))
    ax = new_axes(ax, (5, 5))
    ax.scatter(points[:, 0], points[:, 1])
    for (x, y), word in zip(points.tolist(), words, strict=True):
        ax.annotate(word, (x, y), textcoords="offset points", xytext=(4, 4))
    ax.set_title("word embeddings, first two principal components")
    return ax


def prompt_vector(encoder: _Encodes, prompt: str) -> Float[Tensor, " d"]:
    """One vector per prompt: the pooled embedding when the model has one (SDXL), else the EOS token's
    embedding of the first chunk (the position CLIP pools; in the causal model it has seen every token)."""
    cond = encoder.encode(prompt)
    if cond.pooled is not None:
        return cond.pooled[0]
    return cond.embeds[0, eos_positions(encoder.tokenize(prompt))[0]]


def cosine_similarities(
    encoder: _Encodes, prompts: list[str], mode: Literal["pooled", "tokens"] = "pooled"
) -> Float[Tensor, "n n"]:
    """``[n, n]`` cosine similarities between prompts. ``"pooled"``: of ``prompt_vector``; ``"tokens"``:
    of the whole flattened first chunk ``[77 * d]``, i.e. of what the UNet's cross-attention sees."""
    if mode == "pooled":
        v = torch.stack([prompt_vector(encoder, p) for p in prompts])
    else:
        v = torch.stack([encoder.encode(p).embeds[0, :77].flatten() for p in prompts])
    v = torch.nn.functional.normalize(v.detach().float().cpu(), dim=-1)
    return v @ v.T


def plot_cosine_similarities(
    encoder: _Encodes, prompts: list[str], mode: Literal["pooled", "tokens"] = "pooled", *, ax: Any = None
) -> Axes:
    """Heatmap of ``cosine_similarities`` with the values written in. Returns the Axes."""
    from sdkit.viz.figure import new_axes

    sim = cosine_similarities(encoder, prompts, mode)
    ax = new_axes(ax, (1 + 0.8 * len(prompts), 1 + 0.8 * len(prompts)))
    ax.imshow(sim.numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
    labels = [p if len(p) <= 24 else p[:22] + "..." for p in prompts]
    ax.set_xticks(range(len(prompts)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(prompts)), labels)
    for i in range(len(prompts)):
        for j in range(len(prompts)):
            ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(f"cosine similarity ({mode})")
    return ax
