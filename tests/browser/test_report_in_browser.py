"""The HTML report in a real headless browser (Debian's chromium, driven by Playwright).

Runs where /usr/bin/chromium and the playwright package exist (`tox -e html` installs the
package; chromium comes from `apt-get install chromium`); skipped with that reason elsewhere.
Writes reports/html-report.png for review.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import ROOT, bnconform

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (tox -e html)")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (apt-get install chromium)")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def test_report_loads_filters_and_is_screenshotted(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "torch", "--backend", "numpy=mutant:biased_running_var",
                             "--html", out=tmp_path)
    assert proc.returncode == 1  # the mutant fails: the page must show failures and diagnoses
    cases = len({r["spec"] for r in report["results"]})
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((tmp_path / "conformance.html").as_uri())
        assert page.locator("#matrix tbody tr").count() == cases
        page.select_option("#family", "bessel")
        assert page.locator("#shown").inner_text() == "16"
        assert page.locator("#matrix tbody tr:visible").count() == 16
        page.select_option("#backend", "numpy")
        assert page.locator("#matrix th[data-backend='torch']").is_hidden()
        page.locator("#failures details:visible").first.click()
        assert "biased_running_var" in page.locator("#failures details:visible").first.inner_text()
        page.select_option("#family", "*")
        page.select_option("#backend", "*")
        shot = ROOT / "reports" / "html-report.png"
        page.screenshot(path=str(shot))
        browser.close()
    assert errors == []
    assert shot.stat().st_size > 10_000
