"""Attribute binding, measured: does each colour word's cross-attention map peak on its own object?

    python -m sdkit.models.shapes.binding                 # the shipped model, seeds 0-4, the prompt and its swap

For "a red circle on the left and a blue square on the right", a model that binds words to each other draws a red
circle and a blue square, and puts "red"'s attention on the circle and "blue"'s on the square; with the colours
swapped the maps swap too. ``binding`` generates one image with attention capture, finds the objects with the
world's evaluator, and for each colour word reports whether its object was drawn and whether the word's map (DAAM,
over ``layers``) peaks on it: its mean over the object's pixels is higher than over the other object's pixels and
than over the background. A seed passes when both objects are
drawn as asked and both colour words peak on their own objects.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PROMPT = "a red circle on the left and a blue square on the right"
SWAPPED = "a blue circle on the left and a red square on the right"
LAYERS = ("down_blocks.1",)  # where the embedded model places words (notebook 11)


@dataclass
class WordBinding:
    word: str
    drawn: bool  # an object of this colour is in the image
    on_own_object: bool  # the word's map is higher on its object than on the other's and on the background


@dataclass
class Binding:
    prompt: str
    seed: int
    prompt_right: bool  # the evaluator: every object drawn as the prompt asks
    words: list[WordBinding]
    generation: Any
    maps: Any

    @property
    def passed(self) -> bool:
        return self.prompt_right and all(w.drawn and w.on_own_object for w in self.words)

    def row(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "seed": self.seed, "prompt_right": self.prompt_right, "passed": self.passed,
                **{w.word: {"drawn": w.drawn, "on_own_object": w.on_own_object} for w in self.words}}  # fmt: skip


def binding(
    kit: Any, prompt: str, colours: Sequence[str], *, seed: int, layers: Sequence[str] | None = LAYERS, **options: Any
) -> Binding:
    """Generate ``prompt`` with ``seed`` under attention capture and judge each of ``colours`` (words of the prompt)."""
    import torch

    from sdkit.attention import capture_attention
    from sdkit.models.shapes import evaluate
    from sdkit.viz.attention import word_attention

    with capture_attention(kit) as maps:
        generation = kit.generate(prompt, seed=seed, **options)
    _, objects = evaluate.components(evaluate.to_tensor(generation.images))[0]
    words = []
    for colour in colours:
        own = next((o for o in objects if o.color == colour), None)  # the largest object of that colour
        others = [o for o in objects if o is not own and o.color in colours]
        if own is None:
            words.append(WordBinding(colour, drawn=False, on_own_object=False))
            continue
        heat = word_attention(maps, colour, layers=list(layers) if layers else None)[0]
        regions = [evaluate.mask_at(o.mask, heat.shape) for o in (own, *others)]
        background = ~torch.stack(regions).any(0)
        means = [float(heat[m].mean()) for m in (*regions, background)]
        words.append(WordBinding(colour, True, means[0] > max(means[1:])))
    right = bool(evaluate.evaluate(generation.images, [prompt])["all"])
    return Binding(prompt, seed, right, words, generation, maps)


def binding_story(kit: Any, seeds: Sequence[int] = range(5), **options: Any) -> list[Binding]:
    """``PROMPT`` and ``SWAPPED`` for each seed: the measurement notebook 11 shows."""
    return [
        binding(kit, prompt, colours, seed=seed, **options)
        for seed in seeds
        for prompt, colours in ((PROMPT, ("red", "blue")), (SWAPPED, ("blue", "red")))
    ]


def main(argv: list[str] | None = None) -> None:
    import sdkit

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    results = binding_story(sdkit.load(args.model), seeds=range(args.seeds))
    for b in results:
        print(json.dumps(b.row()))
    seeds_passing = sum(all(b.passed for b in results if b.seed == s) for s in range(args.seeds))
    print(f"# seeds where both prompts bind: {seeds_passing} of {args.seeds}")


if __name__ == "__main__":
    main()
