"""leaderboard.html as a browser shows it: the system's headless Chromium (Debian's `chromium`,
which .ci/run installs) renders the page, and the tests assert on the rendered DOM.

Without Chromium these tests fail, saying how to install it: a page nobody has rendered is not
known to work. Set TLBENCH_SKIP_BROWSER_TESTS=1 to skip them on a machine that cannot have one.
"""

import contextlib
import os
import sys

import pytest

from tlbench.errors import ConfigError

from test_report import GRID, record, report, write_all

SKIP_ENV = "TLBENCH_SKIP_BROWSER_TESTS"


@contextlib.contextmanager
def chromium_or_fail():
    """A headless Chromium; fails (or, with TLBENCH_SKIP_BROWSER_TESTS=1, skips) the test with
    the fix when there is none."""
    from tlbench.report.browser import chromium

    with contextlib.ExitStack() as stack:
        try:
            browser = stack.enter_context(chromium())
        except ConfigError as exc:
            if os.environ.get(SKIP_ENV) == "1":
                pytest.skip(f"{SKIP_ENV}=1: {exc}")
            pytest.fail(f"{exc} (or set {SKIP_ENV}=1 to skip the page tests)", pytrace=False)
        yield browser


@pytest.fixture
def needs_chromium():
    """Fail (or skip) with the fix when there is no browser."""
    with chromium_or_fail():
        pass


@pytest.fixture(scope="class")
def browser():
    """One Chromium for the tests of a class. Playwright's sync API runs one at a time in a
    thread, so `tlbench report --screenshot` (which starts its own) runs outside the class."""
    with chromium_or_fail() as started:
        yield started


@pytest.fixture
def page_of(browser, cli, tmp_path):
    """Write records, run `tlbench report`, open leaderboard.html; remember every request made."""
    opened = []

    def open_page(records):
        write_all(tmp_path, records)
        path = report(cli, tmp_path) / "leaderboard.html"
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.requests = []
        page.on("request", lambda request: page.requests.append(request.url))
        page.goto(path.resolve().as_uri())
        page.wait_for_load_state("load")
        opened.append(page)
        return page

    yield open_page
    for page in opened:
        page.close()


def column(page, table, index):
    return page.locator(f"#{table} tbody tr").evaluate_all(
        f"rows => rows.map(r => r.cells[{index}].textContent)")


SEEDS = (0, 1, 2)
GRID_RECORDS = [
    *[record("digits", "lite0", "linear_probe", s, 0.90 + s / 100) for s in SEEDS],
    *[record("digits", "lite0", "full_finetune", s, 0.95, train_s=50.0) for s in SEEDS],
    *[record("digits", "lite0", "scratch", s, 0.80, train_s=60.0, pretrained=False) for s in SEEDS],
    *[record("digits", "lite0", "explodes", s, status="failed", error="RuntimeError: boom") for s in SEEDS],
    *[record("faces", "lite0", "linear_probe", s, 1.0) for s in SEEDS],
    *[record("faces", "lite0", "scratch", s, 0.5, pretrained=False) for s in SEEDS],
]


class TestRenderedPage:
    """The page as Chromium renders it (one browser for the class)."""

    def test_has_every_row_and_sorts_by_clicking_a_column(self, page_of):
        page = page_of(GRID_RECORDS)
        assert page.locator("h1").inner_text() == GRID
        # per dataset, as published: best first, the failed cell kept, at the bottom
        assert column(page, "table-dataset-digits", 1) == ["full_finetune", "linear_probe", "scratch", "explodes"]
        assert column(page, "table-dataset-digits", 2) == ["0.950 ± 0.000", "0.910 ± 0.025", "0.800 ± 0.000", "-"]
        assert page.locator("#table-dataset-digits tr.best").inner_text().split("\t")[1] == "full_finetune"
        assert page.locator("#table-dataset-digits tr.problem").get_attribute("title") == "; ".join(
            f"seed {s}: RuntimeError: boom" for s in SEEDS)
        # the leading rows against the best: both separated from it on every seed
        assert column(page, "table-pairwise-digits", 1) == ["linear_probe", "scratch"]
        assert column(page, "table-pairwise-digits", 7) == ["no", "no"]
        # faces: the strategies that did not run there are rows too
        assert column(page, "table-dataset-faces", 10) == ["ok", "ok", "3 missing", "3 missing"]

        top1 = page.locator("#table-dataset-digits th", has_text="top-1")
        top1.locator("button").click()
        assert top1.get_attribute("aria-sort") == "ascending"
        assert column(page, "table-dataset-digits", 1) == ["scratch", "linear_probe", "full_finetune", "explodes"]
        top1.locator("button").click()
        assert top1.get_attribute("aria-sort") == "descending"
        assert column(page, "table-dataset-digits", 1) == ["full_finetune", "linear_probe", "scratch", "explodes"]
        page.locator("#table-dataset-digits th", has_text="strategy").locator("button").click()
        assert column(page, "table-dataset-digits", 1) == ["explodes", "full_finetune", "linear_probe", "scratch"]
        assert top1.get_attribute("aria-sort") is None  # one sorted column at a time
        # numbers sort as numbers, not as text: train s 10.0 < 50.0 < 60.0
        page.locator("#table-dataset-digits th", has_text="train s").locator("button").click()
        assert column(page, "table-dataset-digits", 5) == ["10.0", "50.0", "60.0", "-"]

        overall = page.locator("#table-overall tbody tr")
        assert overall.count() == 4
        page.locator("#table-overall th", has_text="mean top-1").locator("button").click()
        values = [v for v in column(page, "table-overall", 2) if v != "-"]
        assert values == sorted(values)
        assert page.locator("#table-transfer_gain tbody tr").count() == 6


    def test_every_row_tied_with_the_best_is_highlighted(self, page_of):
        page = page_of([*[record("digits", "lite0", "linear_probe", s, v) for s, v in zip(SEEDS, (0.90, 0.92, 0.94))],
                        *[record("digits", "lite0", "lp_ft", s, v) for s, v in zip(SEEDS, (0.89, 0.93, 0.92))],
                        *[record("digits", "lite0", "scratch", s, 0.5 + s / 100) for s in SEEDS]])
        best = page.locator("#table-dataset-digits tr.best")
        assert best.evaluate_all("rows => rows.map(r => r.cells[1].textContent)") == ["linear_probe", "lp_ft"]
        assert column(page, "table-dataset-digits", 4) == ["1", "1", "3"]  # the tied pair shares rank 1
        backgrounds = page.locator("#table-dataset-digits tbody tr").evaluate_all(
            "rows => rows.map(r => getComputedStyle(r.cells[2]).backgroundColor)")
        assert backgrounds[0] == backgrounds[1] != backgrounds[2]

    def test_loads_nothing_from_anywhere_and_shows_its_plots(self, page_of):
        page = page_of(GRID_RECORDS)
        own = page.url
        assert all(url == own or url.startswith("data:") for url in page.requests), page.requests
        sizes = page.locator("img").evaluate_all("imgs => imgs.map(i => [i.complete, i.naturalWidth])")
        assert len(sizes) == 2 and all(done and width == 1000 for done, width in sizes)
        # the page fits a laptop screen: nothing but the scrolling table wrappers overflows
        assert page.evaluate("document.documentElement.scrollWidth") <= 1200
        assert "2.14.1" in page.locator("#table-environment").inner_text()


def test_screenshot_of_the_rendered_page(needs_chromium, cli, tmp_path):
    from PIL import Image

    write_all(tmp_path, GRID_RECORDS)
    code, out, err = cli("report", "--results", tmp_path, "--screenshot")
    assert code == 0, err
    shot = tmp_path / GRID / "leaderboard.png"
    assert "leaderboard.png" in out
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.width == 1200 and image.height > 1500


@pytest.mark.parametrize("hide_playwright, missing", [
    (False, "Missing here: a Chromium (TLBENCH_CHROMIUM="),
    (True, "Missing here: Playwright and a Chromium (TLBENCH_CHROMIUM="),
])
def test_screenshot_without_a_browser_names_the_extra_and_chromium(cli, tmp_path, monkeypatch, hide_playwright,
                                                                   missing):
    monkeypatch.setenv("TLBENCH_CHROMIUM", str(tmp_path / "no-such-chromium"))
    if hide_playwright:
        monkeypatch.setitem(sys.modules, "playwright.sync_api", None)  # `import` now fails
    write_all(tmp_path, GRID_RECORDS)
    code, out, err = cli("report", "--results", tmp_path, "--screenshot")
    assert code == 2 and "Traceback" not in err
    for text in ("pip install 'tlbench[page]'", "apt-get install chromium", missing):
        assert err.count(text) == 1, err
