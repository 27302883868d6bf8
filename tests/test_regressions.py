"""Regression reports: compare against the committed baseline, timing diffs, the HTML page."""
from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bnconform.runners.reports.compare import compare_timing, markdown
from bnconform.runners.reports.html import page
from bnconform.runners.reports.results import RunReport
from tests.helpers import FIRST_18, ROOT, bnconform

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
    """Over the first 18 families (`make check-baseline` compares the whole default tier)."""
    proc, _ = bnconform("--backend", "torch", "--backend", "numpy", "--backend", "cffi", *FIRST_18, out=tmp_path / "fresh")
    assert proc.returncode == 0
    ok = compare(BASELINE / "conformance.json", tmp_path / "fresh" / "conformance.json", "--json", str(tmp_path / "d.json"),
                 "--allow-removed")
    assert ok.returncode == 0, ok.stdout[-2000:]
    assert json.loads((tmp_path / "d.json").read_text())["regressions"] == 0

    proc, _ = bnconform("--backend", "torch", "--backend", "numpy=mutant:biased_running_var",
                        "--backend", "cffi", *FIRST_18, out=tmp_path / "broken")
    assert proc.returncode == 1
    bad = compare(BASELINE / "conformance.json", tmp_path / "broken" / "conformance.json", "--json", str(tmp_path / "b.json"),
                  "--allow-removed")
    assert bad.returncode == 1 and "Newly failing" in bad.stdout
    diff = json.loads((tmp_path / "b.json").read_text())
    assert diff["regressions"] == 389
    assert all(r["backend"] == "numpy" and r["new_diagnosis"] == ["biased_running_var"] for r in diff["newly_failing"])


def test_comparing_different_kinds_is_a_usage_error() -> None:
    proc = compare(BASELINE / "conformance.json", BASELINE / "timing.json")
    assert proc.returncode == 2 and "cannot compare" in proc.stderr


def _timing(rounds: list[float], busy: bool = False) -> dict:
    stats = {"median": sorted(rounds)[len(rounds) // 2], "data": rounds}
    return {"benchmarks": [{"extra_info": {"backend": "cffi", "shape": "4x8x4x4", "phase": "eval_fwd", "mode": "kernel"},
                            "stats": stats}],
            "bnconform": {"metadata": {"machine": {"busy": busy}}}}


def test_timing_regressions_need_the_interval_above_the_threshold() -> None:
    steady = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 1.01]
    slower = compare_timing(_timing(steady), _timing([1.25 * t for t in steady]), threshold=0.10)
    assert slower["regressions"] == 1 and slower["rows"][0]["interval"][0] > 1.10
    # a 5% slowdown that the interval is sure of is below the threshold: no regression
    slight = compare_timing(_timing(steady), _timing([1.05 * t for t in steady]), threshold=0.10)
    assert slight["regressions"] == 0 and not slight["rows"][0]["no_clear_change"]
    # without a threshold (the default) a slowdown the interval is sure of is a regression
    assert compare_timing(_timing(steady), _timing([1.05 * t for t in steady]), threshold=0.0)["regressions"] == 1
    # a median 30% slower on rounds that swing by 2x: the interval spans 1.0, no clear change
    noisy = [1.0, 2.0, 0.9, 1.9, 1.0, 2.1, 0.95, 1.3]
    unclear = compare_timing(_timing(noisy), _timing([0.8, 2.4, 1.5, 1.2, 2.6, 1.0, 1.4, 1.1]), threshold=0.10)
    assert unclear["regressions"] == 0 and unclear["rows"][0]["no_clear_change"]
    assert "REGRESSION" in markdown(slower) and "no clear change" in markdown(unclear)
    busy = compare_timing(_timing(steady), _timing(steady, busy=True), threshold=0.10)
    assert "machine was busy during the new run" in markdown(busy)


def test_a_timing_report_without_its_rounds_is_refused_by_name() -> None:
    old = {"benchmarks": [{"extra_info": {"backend": "cffi", "shape": "4x8x4x4", "phase": "eval_fwd"},
                           "stats": {"median": 1.0, "min": 1.0, "max": 1.0}}]}
    with pytest.raises(ValueError, match="without its rounds"):
        compare_timing(old, _timing([1.0] * 5), threshold=0.10)


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
