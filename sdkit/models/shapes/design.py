"""Measurements for designing the next embedded model, on the text side: can the text encoder tell swapped
attributes apart, and how much cross-attention is left for the prompt's words?

    python -m sdkit.models.shapes.design [--model shapes] [-n 50]

- ``swap``: for two-object prompts and their colour swaps ("a red circle and a blue square" / "a blue circle and a
  red square"), the cosine similarity of the two encodings over the whole prompt (the matrices flattened), at the
  end-of-text token, and at the first colour word. A text encoder that binds makes these well below 1: the UNet can
  only draw the difference it is given.
- ``attention``: the share of the UNet's cross-attention that goes to the prompt's own word tokens (not the start
  token, end-of-text and padding), on and off the drawn objects, summed over layers, heads and steps.

The image side (how much the VAE keeps at 64 and 128 pixels) is ``sdkit.models.shapes.ceiling``.
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

import torch

from sdkit.models.shapes import world
from sdkit.models.shapes.captions import COLORS, SHAPES


def swapped_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` prompts "a C1 S1 and a C2 S2" (different colours and shapes) with their colour swap."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        c1, c2 = rng.sample(list(COLORS), 2)
        s1, s2 = rng.sample(list(SHAPES), 2)
        pairs.append((f"a {c1} {s1} and a {c2} {s2}", f"a {c2} {s1} and a {c1} {s2}"))
    return pairs


def swap_similarity(kit: Any, n: int = 50, seed: int = 0) -> dict[str, float]:
    """Mean cosine similarities of swapped-colour encodings: ``matrix``, ``end_of_text``, ``first_colour``, and for
    reference ``different`` (two unrelated prompts of the same form, whole matrix)."""
    cos = torch.nn.functional.cosine_similarity
    stats: dict[str, list[float]] = {"matrix": [], "end_of_text": [], "first_colour": [], "different": []}
    pairs = swapped_pairs(n, seed)
    others = swapped_pairs(n, seed + 1)
    for (a, b), (c, _) in zip(pairs, others, strict=True):
        ea, eb, ec = (kit.prompts.encode(p).embeds[0] for p in (a, b, c))
        tokens = kit.prompts.tokenizers[0](a)
        end = tokens.ids[0].tolist().index(49407)  # the first end-of-text token
        colour = 2  # [BOS, "a", colour, ...]
        stats["matrix"].append(float(cos(ea.flatten(), eb.flatten(), dim=0)))
        stats["end_of_text"].append(float(cos(ea[end], eb[end], dim=0)))
        stats["first_colour"].append(float(cos(ea[colour], eb[colour], dim=0)))
        stats["different"].append(float(cos(ea.flatten(), ec.flatten(), dim=0)))
    return {k: round(sum(v) / len(v), 4) for k, v in stats.items()}


def word_attention_share(kit: Any, n: int = 10, seed: int = 0) -> dict[str, float]:
    """Share of cross-attention given to the prompt's word tokens, on the drawn objects and off them (mean over
    ``n`` two-object full-caption prompts, seed ``seed + i``)."""
    from sdkit.attention import capture_attention
    from sdkit.models.shapes import evaluate

    on, off = [], []
    for i, scene in enumerate(world.sample_scenes(n, seed, person_fraction=0.0, two_fraction=1.0, full_caption=True)):
        with capture_attention(kit) as maps:
            generation = kit.generate(world.caption(scene), seed=seed + i)
        everything = maps.token_maps(normalize=False)[0]  # [tokens, H, W]
        assert maps.tokens is not None, "capture_attention records the prompt's tokens"
        words = [k for k, w in enumerate(maps.tokens.words[0]) if w >= 0]
        share = everything[words].sum(0) / everything.sum(0)
        _, objects = evaluate.components(evaluate.to_tensor(generation.images))[0]
        if not objects:
            continue
        mask = evaluate.mask_at(torch.stack([o.mask for o in objects]).any(0), share.shape)
        on.append(float(share[mask].mean()))
        off.append(float(share[~mask].mean()))
    return {"on_objects": round(sum(on) / len(on), 4), "off_objects": round(sum(off) / len(off), 4), "images": len(on)}


def main(argv: list[str] | None = None) -> None:
    import sdkit

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("-n", type=int, default=50, help="swapped pairs (attention: n / 5 images)")
    args = parser.parse_args(argv)
    kit = sdkit.load(args.model)
    print(json.dumps({"swap_cosine": swap_similarity(kit, args.n)}))
    print(json.dumps({"word_attention_share": word_attention_share(kit, max(1, args.n // 5))}))


if __name__ == "__main__":
    main()
