"""Build the docs by hand (not in CI): ``python docs/build.py [--no-execute]``.

- every notebook in ``notebooks/`` is executed (headless, nbclient) and rendered with its outputs to
  ``docs/notebooks/<name>.html`` with nbconvert, or to ``<name>.md`` when nbconvert is not installed;
- ``docs/api.md``: an API reference from the docstrings of sdkit's public modules.

Generated files are not committed (``docs/notebooks/`` and ``docs/api.md`` are build outputs).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def execute(path: Path, timeout: int = 600):  # -> nbformat.NotebookNode
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    return book


def render(book, out_stem: Path) -> Path:
    """HTML with nbconvert when available, else markdown with the text outputs (images are left out)."""
    try:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_notebook_node(book)
        out = out_stem.with_suffix(".html")
    except ImportError:
        parts = []
        for cell in book.cells:
            if cell.cell_type == "markdown":
                parts.append(cell.source)
                continue
            parts.append(f"```python\n{cell.source}\n```")
            for o in cell.get("outputs", []):
                text = o.get("text") or o.get("data", {}).get("text/plain")
                if text:
                    parts.append("```\n" + (text if isinstance(text, str) else "".join(text)).rstrip() + "\n```")
        body = "\n\n".join(parts) + "\n"
        out = out_stem.with_suffix(".md")
    out.write_text(body, encoding="utf-8")
    return out


def _first_paragraph(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.split("\n\n")[0].replace("\n", " ")


def api_reference() -> str:
    """Markdown: per module, its docstring, then its public classes and functions with signatures."""
    import sdkit

    lines = ["# sdkit API reference", "", "Generated from docstrings by `docs/build.py`.", ""]
    names = sorted(m.name for m in pkgutil.walk_packages(sdkit.__path__, "sdkit.") if ".models.shapes." not in m.name)
    for name in ["sdkit", *names]:
        try:
            module = importlib.import_module(name)
        except Exception as e:  # optional dependencies: say so and continue
            lines += [f"## `{name}`", "", f"*(not importable here: {type(e).__name__}: {e})*", ""]
            continue
        lines += [f"## `{name}`", "", inspect.getdoc(module) or "", ""]
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                try:
                    sig = str(inspect.signature(obj))
                except (TypeError, ValueError):
                    sig = "(...)"
                kind = "class" if inspect.isclass(obj) else "def"
                lines += [f"- **`{kind} {attr}{sig}`**  ", f"  {_first_paragraph(obj)}"]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-execute", action="store_true", help="render notebooks as they are (no outputs)")
    parser.add_argument("--api-only", action="store_true", help="only write docs/api.md")
    args = parser.parse_args(argv)
    (DOCS / "api.md").write_text(api_reference(), encoding="utf-8")
    print("wrote", DOCS / "api.md")
    if args.api_only:
        return 0
    out_dir = DOCS / "notebooks"
    out_dir.mkdir(exist_ok=True)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        if args.no_execute:
            import nbformat

            book = nbformat.read(path, as_version=4)
        else:
            book = execute(path)
        print("wrote", render(book, out_dir / path.stem))
    return 0


if __name__ == "__main__":
    sys.exit(main())
