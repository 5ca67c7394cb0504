"""Open the built docs site in headless Chromium and check what a reader sees: ``python docs/browser_check.py``
after ``python docs/build.py``. Needs Debian's ``chromium`` and ``chromium-driver`` and selenium (the ``docs``
extra). It serves ``site/`` over http://127.0.0.1 on a free port (stopped at the end) and checks, in the page DOM:

- the home page: the README's title, and each of its pictures loaded (``naturalWidth > 0``);
- every notebook page: one loaded image per image output of its executed copy (``build/executed/notebooks/``);
- the API reference: ``Kit.generate``'s entry shows each parameter of its signature and its docstring.

Screenshots of the home page, notebook 02 at its first output image and ``Kit.generate`` go to
``build/screenshots/``. Every wait has a limit, so a stuck page fails the check instead of hanging it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import inspect
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = ROOT / "build" / "executed" / "notebooks"
SCREENSHOT_NOTEBOOK = "02_forward_diffusion_and_schedules"
LOADED_IMAGES = (
    "return [...document.querySelectorAll('article img')].filter(i => i.complete && i.naturalWidth > 0).length"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(site: Path, timeout: float = 20.0) -> Iterator[str]:
    """``python -m http.server`` on 127.0.0.1 serving ``site``; yields its base URL."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(site)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"browser check: the HTTP server on port {port} did not start within {timeout} s")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server, grace=5)


def stop(server: subprocess.Popen, grace: float) -> None:
    """Terminate a server we started, and kill it if it is still there after ``grace`` seconds."""
    server.terminate()
    try:
        server.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=grace)


def chromium() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        raise SystemExit("browser check: needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser  # with both paths given, selenium downloads nothing
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    chrome.set_page_load_timeout(60)
    chrome.set_script_timeout(30)
    return chrome


def open_page(chrome: Any, url: str, images: int = 0, timeout: float = 30.0) -> int:
    """Load ``url`` and wait until the article shows at least ``images`` loaded images; returns how many it does."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    chrome.get(url)
    try:
        WebDriverWait(chrome, timeout).until(lambda c: c.execute_script(LOADED_IMAGES) >= images)
    except TimeoutException:
        pass  # the caller's assertion says what is missing
    return chrome.execute_script(LOADED_IMAGES)


def image_outputs(notebook: Path) -> int:
    import nbformat

    book = nbformat.read(notebook, as_version=4)
    outputs = [o for c in book.cells for o in c.get("outputs", [])]
    return sum(any(k.startswith("image/") for k in o.get("data", {})) for o in outputs)


def plain(text: str) -> str:
    """Docstring text as a browser shows it: inline-code backticks gone, whitespace collapsed."""
    return " ".join(text.replace("``", "").replace("`", "").split())


def check(site: Path, shots: Path) -> list[str]:
    """Run the checks; returns one line per check."""
    from selenium.webdriver.common.by import By

    from sdkit.kit import Kit

    shots.mkdir(parents=True, exist_ok=True)
    report: list[str] = []
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    pictures = len(re.findall(r"!\[[^\]]*\]\([^)]+\)", readme))
    with serve(site) as base, contextlib.closing(chromium()) as chrome:
        # home page: the README
        loaded = open_page(chrome, f"{base}/", pictures)
        heading = chrome.find_element(By.CSS_SELECTOR, "article h1").text
        assert heading.startswith("sdkit"), f"home page: first heading {heading!r}, expected the README's 'sdkit'"
        assert loaded == pictures > 0, f"home page: {loaded} of the README's {pictures} pictures loaded"
        chrome.save_screenshot(str(shots / "index.png"))
        report.append(f"home page: title {heading!r}, {loaded}/{pictures} README pictures loaded")

        # notebooks: every image output of the executed copy is on the page, loaded
        for notebook in sorted(EXECUTED.glob("*.ipynb")):
            expected = image_outputs(notebook)
            loaded = open_page(chrome, f"{base}/notebooks/{notebook.stem}/", expected)
            assert expected > 0 and loaded == expected, f"{notebook.stem}: {loaded} of {expected} output images loaded"
            cells = len(chrome.find_elements(By.CSS_SELECTOR, "article .jp-Cell"))
            report.append(f"notebook {notebook.stem}: {loaded}/{expected} output images loaded, {cells} cells")
            if notebook.stem == SCREENSHOT_NOTEBOOK:
                first = chrome.find_element(By.CSS_SELECTOR, "article .jp-OutputArea img")
                chrome.execute_script("arguments[0].scrollIntoView({block: 'center'})", first)
                chrome.save_screenshot(str(shots / f"notebook_{notebook.stem}.png"))
        assert report[1:], f"no executed notebooks in {EXECUTED}: run tests/test_notebooks.py or docs/build.py"

        # API reference: Kit.generate with its parameters and docstring
        open_page(chrome, f"{base}/api/kit/#sdkit.kit.Kit.generate")
        entry = chrome.find_element(By.ID, "sdkit.kit.Kit.generate").find_element(By.XPATH, "./ancestor::div[1]")
        text = " ".join(entry.text.split())
        params = [p for p in inspect.signature(Kit.generate).parameters if p != "self"]
        absent = [p for p in params if not re.search(rf"\b{p}\b", text)]
        assert not absent, f"Kit.generate entry lacks parameters {absent}"
        first_line = plain((inspect.getdoc(Kit.generate) or "").split("\n\n")[0])
        assert first_line and first_line in text, f"Kit.generate entry lacks its docstring: {first_line[:60]!r}..."
        chrome.execute_script("window.scrollBy(0, -80)")  # the heading out from under the sticky header
        chrome.save_screenshot(str(shots / "api_kit_generate.png"))
        report.append(f"API: Kit.generate shows its {len(params)} parameters and its docstring")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=ROOT / "site", help="the built site (default: site/)")
    parser.add_argument("--screenshots", type=Path, default=ROOT / "build" / "screenshots")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").exists():
        raise SystemExit(f"browser check: no built site in {args.site}: run python docs/build.py first")
    start = time.monotonic()
    for line in check(args.site, args.screenshots):
        print("browser check:", line)
    print(f"browser check: passed in {time.monotonic() - start:.1f} s; screenshots in {args.screenshots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
