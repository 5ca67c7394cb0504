"""Build the docs site: ``python docs/build.py`` runs ``mkdocs build --strict`` (``python docs/build.py serve`` for
a live preview); the site lands in ``site/``. This file is also the MkDocs hooks module (``hooks:`` in
``mkdocs.yml``), so plain ``mkdocs build`` does the same. It adds, without writing into ``docs/``:

- the home page: ``README.md``, with its image paths made relative to ``docs/``;
- the notebooks, with their outputs: the executed copies that ``tests/test_notebooks.py`` saves in
  ``build/executed/notebooks/``. A notebook whose copy is missing or stale (its cells' sources differ from
  ``notebooks/``) is executed first, by running its test, so only notebooks that pass their assertions are shown
  (delete ``build/executed/`` to run them all again after a library change);
- the API reference: one page per module of ``sdkit``, rendered from the docstrings by mkdocstrings. After the
  build, every public name (``__all__`` where a module has one, else the classes, functions and assignments it
  defines whose names do not start with ``_``) must have its entry in its module's page, or the build fails.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = ROOT / "build" / "executed"  # tests/test_notebooks.py writes notebooks/NAME.ipynb under it
NOTEBOOK_TEST = "tests/test_notebooks.py::test_notebook_runs"
SOURCE_SHOWN = {"sdkit.recipes"}  # recipes are meant to be copied into a cell: show their code


# --- what the site holds ---------------------------------------------------------------------------------------


def module_names() -> list[str]:
    """Every module of the sdkit package, ``sdkit`` first, the rest sorted."""
    import sdkit

    return ["sdkit", *sorted(m.name for m in pkgutil.walk_packages(sdkit.__path__, "sdkit."))]


def is_package(name: str) -> bool:
    return hasattr(importlib.import_module(name), "__path__")


def api_page(name: str) -> str:
    """The page of a module: ``sdkit`` -> ``api/index.md``, ``sdkit.kit`` -> ``api/kit.md``, the package
    ``sdkit.samplers`` -> ``api/samplers/index.md``, ``sdkit.samplers.euler`` -> ``api/samplers/euler.md``."""
    parts = name.split(".")[1:]
    return "/".join(["api", *parts, "index.md"] if is_package(name) else ["api", *parts[:-1], parts[-1] + ".md"])


def api_markdown(name: str) -> str:
    lines = [f"::: {name}", *(["    options:", "      show_source: true"] if name in SOURCE_SHOWN else [])]
    for path in shadowed(name).values():
        lines += ["", f"::: {path}", "    options:", "      heading_level: 2", "      show_root_full_path: false"]
    return "\n".join(lines) + "\n"


def shadowed(name: str) -> dict[str, str]:
    """A package's public names that are also names of its submodules (``sdkit.samplers.euler`` is the function
    from ``sdkit/samplers/euler.py``), each with the path where it is defined. Griffe takes such a name for the
    submodule, so the package's page adds the object itself: name -> dotted path of its definition."""
    module = importlib.import_module(name)
    submodules = {m.name for m in pkgutil.iter_modules(getattr(module, "__path__", []))}
    objects = {n: getattr(module, n) for n in public_names(name) if n in submodules}
    return {n: f"{obj.__module__}.{obj.__qualname__}" for n, obj in objects.items() if not inspect.ismodule(obj)}


def public_names(name: str) -> list[str]:
    """The module's public names as Python sees them (the oracle for the API pages, found independently of
    mkdocstrings): ``__all__``, else the classes and functions whose ``__module__`` is this module and the names
    assigned at its top level, without a leading ``_``."""
    module = importlib.import_module(name)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    defined = {
        attr
        for attr, obj in vars(module).items()
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == name
    }
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.Assign):
            defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined.add(node.target.id)
    return sorted(n for n in defined if not n.startswith("_"))


def notebook_names() -> list[str]:
    return sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def is_current(name: str) -> bool:
    """Whether ``build/executed/notebooks/name`` exists and was executed from the notebook as it is now."""
    import nbformat

    copy = EXECUTED / "notebooks" / name
    if not copy.exists():
        return False
    sources = [[c.cell_type, c.source] for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells]
    return sources == [[c.cell_type, c.source] for c in nbformat.read(copy, as_version=4).cells]


def execute_stale_notebooks() -> None:
    """Run the notebook test of each notebook without a current executed copy (it writes the copy)."""
    stale = [n for n in notebook_names() if not is_current(n)]
    if not stale:
        return
    print(f"docs: executing {len(stale)} notebook(s) through their tests: {', '.join(stale)}", flush=True)
    ids = [f"{NOTEBOOK_TEST}[{Path(n).stem}]" for n in stale]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ids], cwd=ROOT)
    if done.returncode != 0:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"the notebook tests failed (pytest exit {done.returncode}); see their output above")


def nav() -> list[Any]:
    """Home, the guide, the notebooks, then the API reference: ``sdkit``, its modules, and a section per
    package (its own page first, then its modules and subpackages)."""
    api: list[Any] = []
    sections: dict[str, list[Any]] = {"sdkit": api}  # module_names() is sorted: a package precedes its modules
    for name in module_names():
        entry = {name: api_page(name)}
        if name == "sdkit":
            api.append(entry)
        elif is_package(name):
            sections[name] = [entry]
            sections[name.rpartition(".")[0]].append({name: sections[name]})
        else:
            sections[name.rpartition(".")[0]].append(entry)
    return [
        {"Home": "index.md"},
        {"Guide": "guide.md"},
        {"Notebooks": [f"notebooks/{n}" for n in notebook_names()]},
        {"API reference": api},
    ]


def home_markdown() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8").replace("](docs/images/", "](images/")


# --- MkDocs hooks ----------------------------------------------------------------------------------------------


def on_config(config: Any) -> Any:
    execute_stale_notebooks()
    config.nav = nav()
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    files.append(File.generated(config, "index.md", content=home_markdown()))
    for name in notebook_names():  # a real file, not File.generated: mkdocs-jupyter wraps it and reads src_dir
        files.append(File(f"notebooks/{name}", str(EXECUTED), config.site_dir, config.use_directory_urls))
    for name in module_names():
        files.append(File.generated(config, api_page(name), content=api_markdown(name)))
    return files


on_files.mkdocs_priority = 100  # type: ignore[attr-defined]  # before mkdocs-jupyter's on_files wraps the notebooks


def on_post_build(config: Any) -> None:
    """Fail the build when a public name has no entry (an element with its dotted path as id) in its page."""
    from mkdocs.exceptions import PluginError

    site = Path(config.site_dir)
    missing, entries = [], 0
    for name in module_names():
        page = site / api_page(name).removesuffix(".md").removesuffix("index")
        html = (page / "index.html" if config.use_directory_urls else page.with_suffix(".html")).read_text("utf-8")
        ids = set(re.findall(r'\bid="(sdkit[\w.]*)"', html))
        entries += len(ids)
        defined_at = shadowed(name)
        missing += [f"{name}.{n}" for n in public_names(name) if not {f"{name}.{n}", defined_at.get(n)} & ids]
    if missing:
        raise PluginError(f"API reference: {len(missing)} public name(s) without an entry: {', '.join(missing)}")
    print(f"docs: API reference complete: {len(module_names())} modules, {entries} entries", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args and args[0] in ("build", "serve") else "build"
    rest = args[1:] if args and args[0] in ("build", "serve") else args
    strict = ["--strict"] if command == "build" else []
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner about its successor
    return subprocess.run([sys.executable, "-m", "mkdocs", command, *strict, *rest], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
