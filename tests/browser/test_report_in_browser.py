"""The HTML report in a real headless browser (Debian's chromium, driven by Playwright).

Runs where /usr/bin/chromium and the playwright package exist (`tox -e html` installs the
package; chromium comes from `apt-get install chromium`); skipped with that reason elsewhere.
Writes reports/html-report.png and reports/html-report-failures.png (the page filtered to
failures) for review.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.helpers import ROOT, bnconform

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (tox -e html)")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (apt-get install chromium)")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """torch beside the biased-variance mutant (column biased): failures with a diagnosis."""
    out = tmp_path_factory.mktemp("html")
    proc, report = bnconform("--backend", "torch", "--backend", "biased=mutant:biased_running_var", "--html", out=out)
    assert proc.returncode == 1 and report is not None  # the mutant fails: the page must show failures and diagnoses
    return out / "conformance.html", report


@pytest.fixture
def page(run: tuple[Path, dict[str, Any]]) -> Iterator[Any]:
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto(run[0].as_uri())
        yield tab
        browser.close()
    assert errors == []


def test_report_loads_filters_and_is_screenshotted(page: Any, run: tuple[Path, dict[str, Any]]) -> None:
    cases = len({r["spec"] for r in run[1]["results"]})
    assert page.locator("#matrix tbody tr").count() == cases
    page.select_option("#family", "bessel")
    assert page.locator("#shown").inner_text() == "16"
    assert page.locator("#matrix tbody tr:visible").count() == 16
    page.select_option("#backend", "biased")
    assert page.locator("#matrix th[data-backend='torch']").is_hidden()
    page.locator("#details details:visible").first.click()
    assert "biased_running_var" in page.locator("#details details:visible").first.inner_text()
    page.select_option("#family", "*")
    page.select_option("#backend", "*")
    shot = ROOT / "reports" / "html-report.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000


def test_outcome_filter_shows_only_failing_rows(page: Any, run: tuple[Path, dict[str, Any]]) -> None:
    failing = {r["spec"] for r in run[1]["results"] if r["outcome"] == "failed"}
    assert 0 < len(failing) < page.locator("#matrix tbody tr").count()
    page.select_option("#outcome", "failed")
    visible = page.locator("#matrix tbody tr:visible")
    assert {visible.nth(i).get_attribute("data-case") for i in range(visible.count())} == failing
    assert page.locator("#shown").inner_text() == str(len(failing))
    assert page.locator("#details details:visible").count() == len(failing)  # one backend fails: one cell a case
    assert page.locator("#details details:visible[data-outcome='failed']").count() == len(failing)
    shot = ROOT / "reports" / "html-report-failures.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    page.select_option("#outcome", "passed")
    assert page.locator("#matrix tbody tr:visible").count() == len({r["spec"] for r in run[1]["results"]
                                                                   if r["outcome"] == "passed"})


def test_search_narrows_rows_by_case_id_and_by_message_text(page: Any) -> None:
    page.fill("#search", "momentum/cumulative_average")
    assert page.locator("#matrix tbody tr:visible").count() == 6
    page.fill("#search", "nothing matches this")
    assert page.locator("#matrix tbody tr:visible").count() == 0
    assert page.locator("#shown").inner_text() == "0"
    page.fill("#search", "num_batches_tracked differs")  # message text only: no case id says it
    rows = page.locator("#matrix tbody tr:visible").count()
    all_rows = page.locator("#matrix tbody tr").count()
    failing_on_counter = page.locator("#details details[data-outcome='failed']", has_text="num_batches_tracked differs")
    assert rows == failing_on_counter.count() < all_rows
    page.fill("#search", "")
    assert page.locator("#matrix tbody tr:visible").count() == all_rows


def test_a_cell_link_opens_its_details(page: Any) -> None:
    cell = page.locator("#matrix tr[data-case='bessel/nc_golden'] td[data-backend='biased'] a")
    cell.click()
    target = page.locator("#details details:target")
    assert target.count() == 1 and target.evaluate("d => d.open") is True
    assert target.is_visible() and target.get_attribute("data-outcome") == "failed"
    text = target.inner_text()
    assert "bessel/nc_golden on biased: failed" in text and "biased_running_var" in text
    assert "running_var differs after step 1 (forward)" in text  # the message itself
    passed = page.locator("#matrix tr[data-case='bessel/nc_golden'] td[data-backend='torch'] a")
    passed.click()  # a passed cell's details are hidden until asked for
    target = page.locator("#details details:target")
    assert target.is_visible() and target.get_attribute("data-outcome") == "passed" and target.evaluate("d => d.open")


def test_each_backend_shows_its_conventions_and_reasons(tmp_path: Path) -> None:
    """A backend with declared conventions (torch's pre-1.6 toggling) and a manifest of expected failures."""
    manifest = tmp_path / "known.yaml"
    manifest.write_text('backend: biased\nexpected:\n  - case: "bessel/*"\n    diagnosis: biased_running_var\n'
                        '    reason: "we divide by n, on purpose"\n')
    proc, _ = bnconform("--backend", "legacy=bnconform.runners.backends.mutants:declared_legacy",
                        "--backend", "biased=mutant:biased_running_var", "--family", "bessel", "--family", "toggling",
                        "--manifest", str(manifest), "--html", out=tmp_path / "out")
    assert proc.returncode == 1, proc.stdout[-2000:]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        tab = browser.new_page()
        tab.goto((tmp_path / "out" / "conformance.html").as_uri())
        legacy = tab.locator("#backends tr[data-name='legacy']").inner_text()
        biased = tab.locator("#backends tr[data-name='biased']").inner_text()
        browser.close()
    assert "toggling=legacy" in legacy and "deviates" in legacy
    assert "xfailed (16): we divide by n, on purpose" in biased


def test_timing_page_draws_the_sweep_charts(tmp_path: Path) -> None:
    """`bnconform bench --sweep --html`: the ratio chart and the cost curves render as drawn SVG."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "bnconform", "bench", "--shape", "4x8x4x4", "--sweep", "--max-time",
                           "0.02", "--html", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto((tmp_path / "timing.html").as_uri())
        sweep = tab.locator("#sweep-chart svg")
        box = sweep.bounding_box()
        # three phases x (time, GB/s, threads) panels: matplotlib draws each as an axes group
        panels = tab.locator("#sweep-chart svg g[id^='axes_']").count()
        lines = tab.locator("#sweep-chart svg g[id^='line2d_'] path").count()
        ratio = tab.locator("#timing-chart svg").bounding_box()
        shot = ROOT / "reports" / "timing-sweep.png"
        tab.locator("#sweep-chart").screenshot(path=str(shot))
        browser.close()
    assert errors == []
    assert box is not None and box["width"] > 600 and box["height"] > 600
    assert ratio is not None and ratio["height"] > 200
    assert panels == 9 and lines > 50  # curves per backend, the roofline, the gridlines and ticks
    assert shot.stat().st_size > 20_000
