"""--junit FILE: one testcase per cell, and a declared deviation told apart from an expected failure."""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from bnconform.runners.reports.junit import junit_xml
from bnconform.runners.reports.results import BackendInfo, CaseResult, RunReport
from tests.helpers import bnconform, default_cases

MESSAGES = {
    "passed": "",
    "failed": "running_var differs after step 1 (forward)\n  max abs error 1",
    "error": "worker crashed: signal 11 (SIGSEGV) during step 1 (forward)",
    "skipped": "needs float64, which the backend does not declare",
    "deviates": "deviates (declared): momentum is the weight of the old value",
    "xfailed": "expected deviation: we divide by n (https://example.org/1)\nrunning_var differs after step 1 (forward)",
    "xpassed": "passes despite the manifest entry: we divide by n",
}


def _report(strict: bool) -> RunReport:
    results = [CaseResult(spec=f"fam/{o}_golden", family="fam", backend="mine", outcome=o, message=m, duration=0.25,
                          diagnosis=["biased_running_var"] if o in ("failed", "xfailed") else [])
               for o, m in MESSAGES.items()]
    return RunReport(suite_version="t", backends=[BackendInfo("mine", "1.0", [], conventions="momentum=decay")],
                     results=results, strict=strict, metadata={"git_commit": "abc", "date": "2026-01-01"})


def _cases(root: ET.Element) -> dict[str, ET.Element]:
    return {c.attrib["name"].split("/")[1].split("_golden")[0]: c for c in root.iter("testcase")}


def test_each_outcome_as_junit_shows_it() -> None:
    root = junit_xml(_report(strict=False)).getroot()
    cases = _cases(root)
    assert set(cases) == set(MESSAGES)
    assert cases["failed"].attrib == {"classname": "fam", "name": "fam/failed_golden [mine]", "time": "0.250000"}
    assert list(cases["passed"]) == [cases["passed"].find("properties")]
    failure = cases["failed"].find("failure")
    assert failure is not None and failure.attrib["message"] == "running_var differs after step 1 (forward)"
    assert failure.text == MESSAGES["failed"]
    error = cases["error"].find("error")
    assert error is not None and error.attrib["type"] == "bnconform.error"
    kinds = {o: cases[o].find("skipped") for o in ("skipped", "deviates", "xfailed")}
    assert {o: (s.attrib["type"], s.attrib["message"]) for o, s in kinds.items() if s is not None} == {
        "skipped": ("bnconform.skipped", MESSAGES["skipped"]),
        "deviates": ("bnconform.deviates", "declared deviation: momentum is the weight of the old value"),
        "xfailed": ("bnconform.xfailed", "expected failure: we divide by n (https://example.org/1)"),
    }
    assert cases["xpassed"].find("failure") is None and cases["xpassed"].find("system-out") is not None
    props = {p.attrib["name"]: p.attrib["value"] for p in cases["xfailed"].iter("property")}
    assert props["bnconform.outcome"] == "xfailed" and props["bnconform.diagnosis"] == "biased_running_var"
    assert root.attrib["tests"] == "7" and root.attrib["failures"] == "1" and root.attrib["skipped"] == "3"
    suite = root.find("testsuite")
    assert suite is not None and suite.attrib["name"] == "bnconform [mine]"
    suite_props = {p.attrib["name"]: p.attrib["value"] for p in suite.find("properties") or []}
    assert suite_props["backend.conventions"] == "momentum=decay" and suite_props["git_commit"] == "abc"


def test_xpassed_fails_under_strict() -> None:
    xpassed = _cases(junit_xml(_report(strict=True)).getroot())["xpassed"].find("failure")
    assert xpassed is not None and xpassed.attrib["type"] == "bnconform.xpassed"


def test_run_writes_junit_with_one_testcase_per_cell(tmp_path: Path) -> None:
    junit = tmp_path / "ci" / "cells.xml"
    junit.parent.mkdir()
    junit.write_text("stale")  # an older file is replaced before any case runs
    proc, report = bnconform("--backend", "torch", "--backend", "biased=mutant:biased_running_var", "--family", "bessel",
                             "--junit", str(junit), out=tmp_path / "out")
    assert proc.returncode == 1 and report is not None
    root = ET.parse(junit).getroot()
    cells = {(c.attrib["classname"], c.attrib["name"]) for c in root.iter("testcase")}
    assert cells == {(r["family"], f"{r['spec']} [{r['backend']}]") for r in report["results"]} and len(cells) == 32
    assert root.attrib["failures"] == "16" and f"wrote {junit}" in proc.stdout


def test_junit_into_a_directory_is_a_usage_error_before_any_case(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "torch", "--family", "bessel", "--junit", str(tmp_path), out=tmp_path / "out")
    assert proc.returncode == 2 and report is None
    assert proc.stderr.strip() == f"bnconform: --junit {tmp_path}: is a directory"  # one line, before pytest starts


def test_the_pytest_option_writes_it_in_a_users_session(tmp_path: Path) -> None:
    (tmp_path / "test_bn.py").write_text("from bnconform.testing import test_conformance  # noqa: F401\n")
    junit = tmp_path / "bn.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path / "test_bn.py"), "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), "--bnconform-backend", "numpy", "--bnconform-family", "eps",
                           "--bnconform-junit", str(junit), "--bnconform-out", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert len(list(ET.parse(junit).getroot().iter("testcase"))) == len(default_cases(["eps"])) >= 29  # a cell each
