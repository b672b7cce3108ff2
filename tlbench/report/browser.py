"""The leaderboard page in a real headless browser: the system's Chromium driven by Playwright
(no browser download), for `tlbench report --screenshot` and the page tests."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from tlbench.errors import ConfigError

BROWSER_ENV = "TLBENCH_CHROMIUM"  # a Chromium or Chrome executable, when it is not on PATH
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
VIEWPORT = {"width": 1200, "height": 900}


def find_chromium() -> Optional[str]:
    """The Chromium to use: $TLBENCH_CHROMIUM, else the first of BROWSER_NAMES on PATH."""
    given = os.environ.get(BROWSER_ENV)
    if given:
        return shutil.which(given) or (given if os.path.isfile(given) else None)
    return next((path for path in map(shutil.which, BROWSER_NAMES) if path), None)


NEEDS = ("Rendering the page needs the page extra (pip install 'tlbench[page]': Playwright, which "
         "drives the system's browser and downloads none) and a Chromium (Debian/Ubuntu: apt-get "
         f"install chromium, or set {BROWSER_ENV} to a Chromium or Chrome executable)")


def missing_parts() -> list[str]:
    """What rendering the page lacks here: Playwright, a Chromium, or both."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("Playwright")
    if find_chromium() is None:
        given = os.environ.get(BROWSER_ENV)
        missing.append(f"a Chromium ({f'{BROWSER_ENV}={given!r} is not an executable' if given else 'none on PATH'})")
    return missing


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Playwright browser running the system Chromium; ConfigError when it cannot
    start one, naming both parts and which are missing (one install, not two errors in turn)."""
    missing = missing_parts()
    if missing:
        raise ConfigError(f"{NEEDS}. Missing here: {' and '.join(missing)}.")
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    executable = find_chromium()

    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, headless=True)
        except PlaywrightError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"Chromium {executable} did not start ({first}). Check that it runs "
                              f"(`{executable} --headless --version`) or set {BROWSER_ENV}.") from None
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page_path: Path, png_path: Path) -> Path:
    """A full-page PNG of a leaderboard page as Chromium renders it at 1200 px wide."""
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
        page.goto(Path(page_path).resolve().as_uri())
        page.screenshot(path=str(png_path), full_page=True, animations="disabled")
    return png_path
