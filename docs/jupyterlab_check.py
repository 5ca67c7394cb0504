"""Run every notebook in a real JupyterLab, in headless Chromium, and check what a user sees there:
``python docs/jupyterlab_check.py [02 04 ...]``.

Not run in CI (it takes minutes; ``tests/test_notebooks.py`` runs the same notebooks headless there). JupyterLab is
not a project dependency: install it into the active environment first (``pip install jupyterlab``, or pass
``--install``). It also needs Debian's ``chromium`` and ``chromium-driver`` and selenium (the ``docs`` extra).

What it does: copies ``notebooks/*.ipynb`` to a temporary folder (the committed notebooks stay without outputs) and
starts JupyterLab on 127.0.0.1 with a random token, fresh settings (every cell attached to the page, so that all of
them are in the DOM; no news fetch) and a fresh workspace. The kernel inherits ``OMP_NUM_THREADS`` (``--threads``,
default 1) and ``HF_HUB_OFFLINE=1``; matplotlib keeps JupyterLab's own inline backend. For each notebook it opens it,
waits for its kernel to be idle, runs JupyterLab's "Run All" command (``notebook:run-all-cells``, through the app that
``--LabApp.expose_app_in_browser`` exposes as ``window.jupyterapp``) and waits until every code cell has run or one
has failed, with the kernel idle (every wait has a limit). Then it counts, in the page DOM, the rendered PNG images
(``img`` elements with ``data:image/png`` sources, loaded) in each cell's output area and compares them with the
cells that plot (``tests/test_notebooks.py``'s definition), reports errors from the cells' outputs, saves the
notebook, takes a screenshot scrolled to the first plot (``build/screenshots/jupyterlab/NAME.png``) and shuts the
kernel down. Exit status 1 when a notebook has an error, a cell that did not run, or a plotting cell without an image.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "docs"), str(ROOT / "tests")]
from browser_check import chromium, free_port, stop  # noqa: E402  (the docs site check's browser and port helpers)
from test_notebooks import plotting_cells  # noqa: E402  (what counts as a plotting cell, as the notebook tests say)

NOTEBOOKS = ROOT / "notebooks"
SETTINGS = {  # JupyterLab user settings for the check
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}

# the notebook panel that has the focus, once it is loaded: its kernel's status
KERNEL_STATUS = """
const app = window.jupyterapp;
const panel = app && app.shell.currentWidget;
if (!panel || !panel.content || !panel.sessionContext || !panel.context) return 'no notebook';
if (panel.context.path !== arguments[0] || !panel.context.isReady) return 'loading';
const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
return kernel ? kernel.status : 'no kernel';
"""
# per cell: null for markdown; for code its execution count, rendered PNG images in its outputs, errors
CELLS = """
const panel = window.jupyterapp.shell.currentWidget;
const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
const cells = panel.content.widgets.map(cell => {
  if (cell.model.type !== 'code') return null;
  const images = [...cell.node.querySelectorAll('.jp-OutputArea-output img')].filter(
    i => i.src.startsWith('data:image/png') && i.complete && i.naturalWidth > 0).length;
  const errors = cell.model.outputs.toJSON().filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue);
  return {count: cell.model.executionCount, images: images, errors: errors};
});
return {status: kernel ? kernel.status : 'none', cells: cells};
"""
RUN_ALL = "window.jupyterapp.commands.execute('notebook:run-all-cells'); return true;"
# async scripts: selenium passes a callback as the last argument
SAVE = """
const done = arguments[arguments.length - 1];
window.jupyterapp.commands.execute('docmanager:save').then(() => done('saved'), e => done('save failed: ' + e));
"""
SHUTDOWN = """
const done = arguments[arguments.length - 1];
window.jupyterapp.shell.currentWidget.sessionContext.shutdown().then(() => done('down'), e => done('failed: ' + e));
"""
SHOW_OUTPUT = """
const app = window.jupyterapp;
app.shell.collapseLeft();
const cell = app.shell.currentWidget.content.widgets[arguments[0]];
const output = cell && cell.node.querySelector('.jp-Cell-outputWrapper');
if (output) output.scrollIntoView({block: 'start'});
return Boolean(output);
"""


@dataclass
class Result:
    name: str
    code_cells: int = 0
    ran: int = 0
    plotting: list[int] = field(default_factory=list)
    images: dict[int, int] = field(default_factory=dict)  # cell index -> rendered PNG images
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    screenshot: Path | None = None

    @property
    def blank(self) -> list[int]:
        """Plotting cells that show no image."""
        return [k for k in self.plotting if not self.images.get(k)]

    @property
    def ok(self) -> bool:
        return not self.errors and self.ran == self.code_cells and not self.blank

    def line(self) -> str:
        shown = sum(self.images.get(k, 0) for k in self.plotting)
        text = (
            f"{self.name}: {self.ran}/{self.code_cells} code cells ran, {len(self.plotting)} plotting cells, "
            f"{shown} images in them, {sum(self.images.values())} in all, {len(self.errors)} errors, "
            f"{self.seconds:.0f} s"
        )
        if self.blank:
            text += f"; plotting cells without an image: {self.blank}"
        if self.errors:
            text += "; errors: " + " | ".join(self.errors)
        return text + ("" if self.ok else "  FAILED")


def http_status(port: int, path: str) -> int | None:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None


@contextlib.contextmanager
def jupyterlab(root: Path, threads: int, timeout: float = 120.0) -> Iterator[tuple[str, str]]:
    """JupyterLab serving ``root`` on 127.0.0.1 with a fresh token, settings and workspace; yields (base URL, token)."""
    port, token = free_port(), secrets.token_hex(16)
    state = root / ".lab-state"
    for name, values in SETTINGS.items():
        path = state / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    env.pop("MPLBACKEND", None)  # the kernel uses JupyterLab's inline backend, as a user's would
    log = (state / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={token}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            f"--LabApp.user_settings_dir={state / 'settings'}",
            f"--LabApp.workspaces_dir={state / 'workspaces'}",
            *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),  # containers run as root
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=root,
    )
    try:
        deadline = time.monotonic() + timeout
        while http_status(port, f"/api/status?token={token}") != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(Path(log.name).read_text(encoding="utf-8", errors="replace").splitlines()[-5:])
                raise SystemExit(
                    f"jupyterlab check: JupyterLab did not start within {timeout} s; its log ends:\n{tail}"
                )
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", token
    finally:
        stop(server, grace=20)
        log.close()


def wait_for(chrome: Any, condition: Any, timeout: float, what: str, poll: float = 1.0) -> Any:
    """``condition(chrome)`` until it is truthy (returned), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition(chrome)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout:.0f} s")
        time.sleep(poll)


def run_notebook(chrome: Any, base: str, token: str, path: Path, shots: Path, timeout: float) -> Result:
    """Open ``path`` (a copy inside JupyterLab's root), Run All, wait, count, screenshot, shut its kernel down."""
    import nbformat

    book = nbformat.read(path, as_version=4)
    result = Result(path.stem, code_cells=sum(c.cell_type == "code" for c in book.cells), plotting=plotting_cells(book))
    start = time.monotonic()
    chrome.get(f"{base}/lab/tree/{path.name}?reset&token={token}")  # reset: only this notebook open
    wait_for(chrome, lambda c: c.execute_script(KERNEL_STATUS, path.name) == "idle", 300, "kernel not idle")
    chrome.execute_script(RUN_ALL)

    def finished(c: Any) -> dict | None:
        state = c.execute_script(CELLS)
        code = [cell for cell in state["cells"] if cell is not None]
        done = all(cell["count"] is not None for cell in code) or any(cell["errors"] for cell in code)
        return state if state["status"] == "idle" and done else None

    wait_for(chrome, finished, timeout, "cells still running", poll=2.0)
    time.sleep(2)  # the last outputs' images load
    state = wait_for(chrome, finished, 60, "cells still running")
    result.seconds = time.monotonic() - start
    for k, cell in enumerate(state["cells"]):
        if cell is None:
            continue
        result.ran += cell["count"] is not None
        if cell["images"]:
            result.images[k] = cell["images"]
        result.errors += [f"cell {k}: {e}" for e in cell["errors"]]
    shown = [k for k in result.plotting if result.images.get(k)] or sorted(result.images) or [0]
    chrome.execute_script(SHOW_OUTPUT, shown[0])  # the first plot at the top of the screenshot
    time.sleep(1)
    result.screenshot = shots / f"{path.stem}.png"
    chrome.save_screenshot(str(result.screenshot))
    chrome.execute_async_script(SAVE)  # no unsaved-changes prompt when the next notebook is opened
    chrome.execute_async_script(SHUTDOWN)
    return result


def check(names: list[str], shots: Path, threads: int, timeout: float) -> list[Result]:
    notebooks = sorted(p for p in NOTEBOOKS.glob("*.ipynb") if not names or any(n in p.stem for n in names))
    if not notebooks:
        raise SystemExit(f"jupyterlab check: no notebook in {NOTEBOOKS} matches {names}")
    shots.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="sdkit-lab-") as tmp:
        root = Path(tmp)
        for p in notebooks:
            shutil.copy(p, root / p.name)
        with jupyterlab(root, threads) as (base, token), contextlib.closing(chromium()) as chrome:
            chrome.set_window_size(1280, 1400)
            chrome.set_script_timeout(120)
            for p in notebooks:
                try:
                    result = run_notebook(chrome, base, token, root / p.name, shots, timeout)
                except TimeoutError as e:
                    result = Result(p.stem, errors=[f"timed out: {e}"])
                    chrome.save_screenshot(str(shots / f"{p.stem}.png"))
                    result.screenshot = shots / f"{p.stem}.png"
                print("jupyterlab check:", result.line(), flush=True)
                results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="parts of notebook names (default: all), e.g. 02 04")
    parser.add_argument("--screenshots", type=Path, default=ROOT / "build" / "screenshots" / "jupyterlab")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the kernels (default 1)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed per notebook's run (default 900)")
    parser.add_argument("--install", action="store_true", help="pip install jupyterlab when it is missing")
    args = parser.parse_args(argv)
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        if not args.install:
            raise SystemExit("jupyterlab check: needs JupyterLab: pip install jupyterlab (or pass --install)") from None
        subprocess.run([sys.executable, "-m", "pip", "install", "jupyterlab"], check=True)
    start = time.monotonic()
    results = check(args.notebooks, args.screenshots, args.threads, args.timeout)
    failed = [r.name for r in results if not r.ok]
    summary = f"{len(results) - len(failed)}/{len(results)} notebooks passed in {time.monotonic() - start:.0f} s"
    print(f"jupyterlab check: {summary}; screenshots in {args.screenshots}" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
