"""Regression reports: compare against the committed baseline, timing diffs, the HTML page."""
from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from bnconform.runners.reports.compare import compare_timing, markdown
from bnconform.runners.reports.html import page
from bnconform.runners.reports.results import RunReport
from tests.helpers import ROOT, bnconform

BASELINE = ROOT / "reports" / "baseline"


def compare(base: Path, new: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bnconform", "compare", str(base), str(new), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_baseline_is_committed_with_metadata() -> None:
    data = json.loads((BASELINE / "conformance.json").read_text())
    assert {b["name"] for b in data["backends"]} >= {"torch", "numpy", "cffi"}
    assert {"git_commit", "spec_digest", "packages", "cpu_model", "threads", "date"} <= set(data["metadata"])
    timing = json.loads((BASELINE / "timing.json").read_text())
    assert timing["bnconform"]["metadata"]["threads"] >= 1 and timing["benchmarks"]


def test_fresh_run_matches_the_baseline_and_a_broken_numpy_does_not(tmp_path: Path) -> None:
    proc, _ = bnconform("--backend", "torch", "--backend", "numpy", "--backend", "cffi", out=tmp_path / "fresh")
    assert proc.returncode == 0
    ok = compare(BASELINE / "conformance.json", tmp_path / "fresh" / "conformance.json", "--json", str(tmp_path / "d.json"))
    assert ok.returncode == 0, ok.stdout[-2000:]
    assert json.loads((tmp_path / "d.json").read_text())["regressions"] == 0

    proc, _ = bnconform("--backend", "torch", "--backend", "numpy=mutant:biased_running_var",
                        "--backend", "cffi", out=tmp_path / "broken")
    assert proc.returncode == 1
    bad = compare(BASELINE / "conformance.json", tmp_path / "broken" / "conformance.json", "--json", str(tmp_path / "b.json"))
    assert bad.returncode == 1 and "Newly failing" in bad.stdout
    diff = json.loads((tmp_path / "b.json").read_text())
    assert diff["regressions"] == 389
    assert all(r["backend"] == "numpy" and r["new_diagnosis"] == ["biased_running_var"] for r in diff["newly_failing"])


def test_comparing_different_kinds_is_a_usage_error() -> None:
    proc = compare(BASELINE / "conformance.json", BASELINE / "timing.json")
    assert proc.returncode == 2 and "cannot compare" in proc.stderr


def _timing(median: float, spread: float) -> dict:
    return {"benchmarks": [{"extra_info": {"backend": "cffi", "shape": "4x8x4x4", "phase": "eval_fwd"},
                            "stats": {"median": median, "min": median * (1 - spread / 2), "max": median * (1 + spread / 2)}}]}


def test_timing_regressions_against_threshold_with_noise() -> None:
    slower = compare_timing(_timing(1.0, 0.02), _timing(1.25, 0.02), threshold=0.10)
    assert slower["regressions"] == 1 and not slower["rows"][0]["within_noise"]
    jitter = compare_timing(_timing(1.0, 0.30), _timing(1.05, 0.30), threshold=0.10)
    assert jitter["regressions"] == 0 and jitter["rows"][0]["within_noise"]
    assert "REGRESSION" in markdown(slower) and "jitter" in markdown(jitter)


class _Rows(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows, self.in_matrix, self.tags = 0, False, set()

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "table" and attrs.get("id") == "matrix":
            self.in_matrix = True
        if self.in_matrix and tag == "tr" and "data-family" in attrs:
            self.rows += 1
        for key in ("src", "href"):
            assert not (attrs.get(key) or "").startswith("http"), "the page must be self-contained"

    def handle_endtag(self, tag):  # type: ignore[no-untyped-def]
        if tag == "table":
            self.in_matrix = False


def test_html_page_is_self_contained_with_one_row_per_case() -> None:
    report = RunReport.read(BASELINE / "conformance.json")
    timing = json.loads((BASELINE / "timing.json").read_text())
    parser = _Rows()
    parser.feed(page("t", conformance=report, timing=timing))
    assert parser.rows == len({r.spec for r in report.results})
    assert {"select", "svg", "script", "style"} <= parser.tags  # no failure in the baseline: no <details>
