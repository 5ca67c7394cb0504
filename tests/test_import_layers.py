"""Imports point down only (DESIGN.md principle 10): no import cycle among sdkit's modules, function-level imports
included; every import goes to the same layer or one below (contract and math, file formats, components,
recipes, Kit, loading, front ends); and ``Kit`` stays a short composition.

The graph is read from the source with ``ast``, not by importing: every ``import x`` / ``from x import y`` at any
depth (module level, inside functions, under ``TYPE_CHECKING``), relative imports resolved against the importing
module, and ``from sdkit.pkg import name`` counted as an edge to ``sdkit.pkg.name`` when that is a module (the
import runs it), otherwise to ``sdkit.pkg``. Only sdkit-internal edges are kept; the implicit import of a parent
package's ``__init__`` is not an edge (every module would otherwise depend on the ``sdkit`` facade).
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "sdkit"


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module under ``root`` by dotted name; a package is named by its ``__init__.py``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The sdkit modules that ``name`` (at ``path``) imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()

    def owning_module(dotted: str) -> str | None:
        # ``import sdkit.a.b`` names a module; a dotted name that overshoots (``sdkit.a.function``) falls back to
        # its longest prefix that is one.
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in modules else base)
    resolved = {owning_module(target) for target in targets if target == "sdkit" or target.startswith("sdkit.")}
    return {target for target in resolved if target is not None and target != name}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None: depth-first search with white/grey/black colouring."""
    colour = dict.fromkeys(graph, 0)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt, 0) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if colour.get(nxt, 0) == 0 and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(graph):
        if colour[node] == 0 and (cycle := visit(node)) is not None:
            return cycle
    return None


# Layers from the bottom up (DESIGN.md principle 10); a module may import its own layer and those below. Modules not
# listed are front ends (the sdkit facade, cli, demo, sweep, lockstep, viz.widgets, distributed, models.shapes
# commands, testing), which may import anything and which nothing listed may import.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "contract and math",
        (
            "sdkit.types", "sdkit.latents", "sdkit.noise", "sdkit.limits", "sdkit.names", "sdkit.families",
            "sdkit.quiet", "sdkit.image", "sdkit.denoisers", "sdkit.schedules", "sdkit.samplers", "sdkit.samplers.*",
            "sdkit.guidance", "sdkit.strength", "sdkit.unet", "sdkit.vae", "sdkit.previews", "sdkit.attention",
            "sdkit.trace", "sdkit.text", "sdkit.text.*", "sdkit.viz", "sdkit.viz.figure", "sdkit.viz.schedules",
            "sdkit.viz.steps", "sdkit.viz.latents", "sdkit.viz.grid", "sdkit.viz.attention", "sdkit.viz.embeddings",
            "sdkit.brownian",
        ),
    ),
    ("file formats", ("sdkit.errors", "sdkit.image_files", "sdkit.model_files")),
    (
        "components and conditioners",
        ("sdkit.conditioners", "sdkit.conditioners.*", "sdkit.hires", "sdkit.micro_conditioning", "sdkit.metadata"),
    ),
    ("recipes (no I/O, no Kit)", ("sdkit.recipes", "sdkit.refiner")),
    (
        "Kit",
        ("sdkit.request", "sdkit.conditioning", "sdkit.generation", "sdkit.finite", "sdkit.speed", "sdkit.kit"),
    ),
    ("loading, and what takes whole kits", ("sdkit.single_file", "sdkit.loading", "sdkit.sdxl")),
]  # fmt: skip
FRONT_ENDS = "front ends"


def layer_of(module: str) -> tuple[int, str]:
    for rank, (name, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, pattern) for pattern in patterns):
            return rank, name
    return len(LAYERS), FRONT_ENDS


def test_sdkit_imports_have_no_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_point_down_the_layers() -> None:
    graph = import_graph()
    upward = [
        f"{a} ({layer_of(a)[1]}) imports {b} ({layer_of(b)[1]})"
        for a, targets in sorted(graph.items())
        for b in sorted(targets)
        if layer_of(b)[0] > layer_of(a)[0]
    ]
    assert not upward, "imports that point up:\n" + "\n".join(upward)
    listed = [pattern for _, patterns in LAYERS for pattern in patterns if "*" not in pattern]
    assert sorted(set(listed) - set(graph)) == [], "LAYERS names modules that do not exist"


def test_graph_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The reader itself, on a package written for it: relative, absolute, submodule-by-from, TYPE_CHECKING and
    function-level imports are edges; imports of other packages are not; a cycle is found and printed in order."""
    package = tmp_path / "sdkit"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .leaf import VALUE\nfrom . import leaf\n")
    (package / "sub" / "leaf.py").write_text("import torch\nVALUE = 1\n")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom sdkit import b\nif TYPE_CHECKING:\n    import sdkit.c as c\n"
    )
    (package / "b.py").write_text("def f():\n    from .sub.leaf import VALUE\n    import sdkit.c\n    return VALUE\n")
    (package / "c.py").write_text("from sdkit.sub import leaf\nfrom sdkit.sub import VALUE\n")
    graph = import_graph(package)
    assert graph == {
        "sdkit": set(),
        "sdkit.a": {"sdkit.b", "sdkit.c"},
        "sdkit.b": {"sdkit.sub.leaf", "sdkit.c"},
        "sdkit.c": {"sdkit.sub.leaf", "sdkit.sub"},
        "sdkit.sub": {"sdkit.sub.leaf"},
        "sdkit.sub.leaf": set(),
    }
    assert find_cycle(graph) is None
    (package / "sub" / "leaf.py").write_text("def g():\n    from ..a import b\n")  # sdkit.a, whose name b is no module
    cycle = find_cycle(import_graph(package))
    assert cycle == ["sdkit.a", "sdkit.b", "sdkit.c", "sdkit.sub", "sdkit.sub.leaf", "sdkit.a"]
    assert all(nxt in import_graph(package)[node] for node, nxt in zip(cycle, cycle[1:], strict=False))


def test_kit_is_short() -> None:
    lines = len((ROOT / "kit.py").read_text().splitlines())
    assert lines < 300, f"sdkit/kit.py has {lines} lines; Kit should stay a short composition (< 300)"
