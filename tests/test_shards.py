"""`--shard I/N` and `bnconform merge`: a run split across machines and put back together reads
as the one run it stands for (the same cells, outcomes, order and exit code), and every way the
parts could fail to add up to that run is a one-line refusal, exit 2, naming what is wrong.

Each run is `bnconform` in a fresh process, as a CI job runs it; the runs several tests read
are made once per module.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, bnconform, write_spec

SELECTION = ("--family", "bessel", "--family", "momentum", "--backend", "numpy", "--backend", "cffi")
MUTANT = "mutant:biased_running_var"
EXTRA_SPEC = """
family: private
title: a spec only one shard's machine has
defaults: {dim: 1, num_features: 2}
specs:
  - id: first_step_golden
    description: one training step
    steps:
      - forward: {input: [[1, 2], [3, 6]]}
        expect: {running_mean: [0.2, 0.4], running_var: [1.1, 1.7]}
"""

Cells = set[tuple[str, str, str]]


def cells(report: dict[str, Any]) -> Cells:
    return {(r["spec"], r["backend"], r["outcome"]) for r in report["results"]}


def merge(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bnconform", "merge", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def edited(source: Path, target: Path, change: Any) -> Path:
    """A copy of a conformance.json with `change(data)` applied."""
    data = json.loads(source.read_text())
    change(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data))
    return target


class Runs:
    """The unsharded run of SELECTION and its two shards, each with its exit code and report."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.CompletedProcess[str]] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        for name, shard in (("whole", ()), ("shard1", ("--shard", "1/2")), ("shard2", ("--shard", "2/2"))):
            proc, report = bnconform(*SELECTION, *shard, out=root / name)
            assert report is not None, proc.stdout[-2000:] + proc.stderr[-2000:]
            self.procs[name], self.reports[name] = proc, report

    def json(self, name: str) -> Path:
        return self.root / name / "conformance.json"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory.mktemp("shards"))


def test_the_shards_split_the_selection_in_balance_and_by_case(runs: Runs) -> None:
    whole = [r["spec"] for r in runs.reports["whole"]["results"]]
    order = list(dict.fromkeys(whole))
    parts = [list(dict.fromkeys(r["spec"] for r in runs.reports[s]["results"])) for s in ("shard1", "shard2")]
    assert parts == [order[0::2], order[1::2]]  # case k of the selection to shard (k mod 2)+1
    assert abs(len(parts[0]) - len(parts[1])) <= 1 and not set(parts[0]) & set(parts[1])
    for shard in ("shard1", "shard2"):  # every column of a case in the same shard
        report = runs.reports[shard]
        assert {(r["spec"], r["backend"]) for r in report["results"]} == {
            (c, b) for c in {r["spec"] for r in report["results"]} for b in ("numpy", "cffi")}
        assert report["metadata"]["shard"] == shard[-1] + "/2"
        assert report["metadata"]["selection"] == {"family": ["bessel", "momentum"], "case": [], "exclude": [],
                                                   "tier": "default", "keep_order": False}
    assert runs.reports["whole"]["metadata"]["shard"] is None


def test_the_merged_shards_are_the_unsharded_run(runs: Runs, tmp_path: Path) -> None:
    proc = merge(str(runs.json("shard2")), str(runs.json("shard1")), "--out", str(tmp_path / "m"), "--html",
                 "--junit", str(tmp_path / "m" / "junit.xml"))
    assert proc.returncode == runs.procs["whole"].returncode == 0, proc.stdout + proc.stderr
    merged = json.loads((tmp_path / "m" / "conformance.json").read_text())
    whole = runs.reports["whole"]
    assert cells(merged) == cells(whole) and len(merged["results"]) == len(whole["results"]) > 40
    assert [(r["spec"], r["backend"]) for r in merged["results"]] == [(r["spec"], r["backend"]) for r in whole["results"]]
    assert merged["summary"] == whole["summary"]
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"conformance.json", "conformance.md", "conformance.html",
                                                           "junit.xml"}
    assert "-> OK" in proc.stdout and "wrote " in proc.stdout
    meta = merged["metadata"]
    assert meta["merged_from"] == [str(runs.json("shard2")), str(runs.json("shard1"))]
    assert sorted(run["shard"] for run in meta["columns"]["numpy"]) == ["1/2", "2/2"]
    assert {run["file"] for run in meta["columns"]["cffi"]} == {str(runs.json("shard1")), str(runs.json("shard2"))}
    assert meta["spec_digest"] == whole["metadata"]["spec_digest"] and meta["shard"] is None
    assert "Merged by `bnconform merge` from 2 reports" in (tmp_path / "m" / "conformance.md").read_text()


def test_compare_and_the_html_page_take_the_merged_report(runs: Runs, tmp_path: Path) -> None:
    assert merge(str(runs.json("shard1")), str(runs.json("shard2")), "--out", str(tmp_path / "m")).returncode == 0
    merged = tmp_path / "m" / "conformance.json"
    same = subprocess.run([sys.executable, "-m", "bnconform", "compare", str(runs.json("whole")), str(merged),
                           "--json", str(tmp_path / "diff.json"), "--html", str(tmp_path / "diff.html")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert same.returncode == 0, same.stdout + same.stderr
    diff = json.loads((tmp_path / "diff.json").read_text())
    assert diff["regressions"] == 0 and not diff["added"] and not diff["removed"] and not diff["spec_set_changed"]
    assert "bessel/nc_golden" in (tmp_path / "diff.html").read_text()
    # ... and a merge of one shard's worth of cells would be a regression against the whole run
    broken = edited(merged, tmp_path / "broken.json", lambda d: d["results"].pop(0))
    lost = subprocess.run([sys.executable, "-m", "bnconform", "compare", str(runs.json("whole")), str(broken)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert lost.returncode == 1


def test_a_failing_backend_merged_is_exit_1_and_its_reproduce_line_reproduces(tmp_path: Path) -> None:
    codes, paths = [], []
    for shard in ("1/2", "2/2"):
        proc, report = bnconform("--backend", MUTANT, "--family", "bessel", "--shard", shard, out=tmp_path / shard[0])
        assert report is not None, proc.stderr
        codes.append(proc.returncode)
        paths.append(str(tmp_path / shard[0] / "conformance.json"))
    assert codes == [1, 1]
    proc = merge(*paths, "--out", str(tmp_path / "m"))
    assert proc.returncode == 1 and "-> FAILED" in proc.stdout, proc.stdout + proc.stderr
    merged = json.loads((tmp_path / "m" / "conformance.json").read_text())
    failed = {r["spec"]: r for r in merged["results"] if r["outcome"] == "failed"}
    assert len(merged["results"]) == 16 and {"bessel/nc_golden", "bessel/ncl_golden"} <= set(failed)
    repro = next(line for line in failed["bessel/ncl_golden"]["message"].splitlines() if line.startswith("reproduce: "))
    assert repro == f"reproduce: bnconform run --backend {MUTANT} --case bessel/ncl_golden"  # no shard in it
    again = subprocess.run([sys.executable, "-m", *shlex.split(repro.removeprefix("reproduce: ")),
                            "--out", str(tmp_path / "again")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "bessel/ncl_golden" in again.stdout


def test_the_same_cell_twice_with_the_same_outcome_is_kept_once(runs: Runs, tmp_path: Path) -> None:
    proc = merge(str(runs.json("whole")), str(runs.json("shard1")), str(runs.json("shard2")),
                 "--out", str(tmp_path / "m"))
    assert proc.returncode == 0, proc.stderr
    merged = json.loads((tmp_path / "m" / "conformance.json").read_text())
    assert len(merged["results"]) == len(runs.reports["whole"]["results"]) and cells(merged) == cells(runs.reports["whole"])


def _flip_first(data: dict[str, Any]) -> None:
    data["results"][0]["outcome"] = "failed"


def test_merge_refuses_a_cell_with_two_outcomes(runs: Runs, tmp_path: Path) -> None:
    changed = edited(runs.json("whole"), tmp_path / "other" / "conformance.json", _flip_first)
    first = runs.reports["whole"]["results"][0]
    proc = merge(str(runs.json("whole")), str(changed), "--out", str(tmp_path / "m"))
    assert one_line(proc) == (f"bnconform: cell {first['spec']} on {first['backend']} reads passed in "
                              f"{runs.json('whole')} but failed in {changed}")
    assert not (tmp_path / "m").exists()  # refused before anything was written


def test_merge_refuses_a_different_spec_set(runs: Runs, tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    write_spec(specs, "private.yaml", EXTRA_SPEC)
    proc, report = bnconform(*SELECTION, "--shard", "2/2", "--specs", str(specs), out=tmp_path / "shard2")
    assert proc.returncode == 0 and report is not None, proc.stderr
    assert cells(report) == cells(runs.reports["shard2"])  # the same cells: only the spec set differs
    line = one_line(merge(str(runs.json("shard1")), str(tmp_path / "shard2" / "conformance.json"), "--out",
                          str(tmp_path / "m")))
    assert "differ in spec set (metadata.spec_digest)" in line and str(runs.json("shard1")) in line


def test_merge_refuses_different_suite_versions(runs: Runs, tmp_path: Path) -> None:
    older = edited(runs.json("shard2"), tmp_path / "old.json", lambda d: d.update(suite_version="0.1.0"))
    line = one_line(merge(str(runs.json("shard1")), str(older), "--out", str(tmp_path / "m")))
    assert "differ in bnconform version" in line and "0.1.0" in line


def test_merge_refuses_a_missing_shard_and_a_shard_given_twice(runs: Runs, tmp_path: Path) -> None:
    line = one_line(merge(str(runs.json("shard1")), "--out", str(tmp_path / "m")))
    assert line.startswith("bnconform: shard 2/2 of --family bessel --family momentum on numpy, cffi is missing")
    copied = edited(runs.json("shard1"), tmp_path / "again.json", lambda d: None)
    line = one_line(merge(str(runs.json("shard1")), str(copied), str(runs.json("shard2")), "--out", str(tmp_path / "m")))
    assert line == (f"bnconform: shard 1/2 of --family bessel --family momentum on numpy, cffi is given twice: "
                    f"{runs.json('shard1')} and {copied}")


def test_merge_refuses_shards_of_different_selections(runs: Runs, tmp_path: Path) -> None:
    other = edited(runs.json("shard2"), tmp_path / "other.json",
                   lambda d: d["metadata"]["selection"].update(family=["bessel"]))
    line = one_line(merge(str(runs.json("shard1")), str(other), "--out", str(tmp_path / "m")))
    assert "is missing" in line


@pytest.mark.parametrize("content", ["not json {", json.dumps({"benchmarks": []}), json.dumps([1, 2])],
                         ids=["not-json", "timing", "list"])
def test_merge_refuses_what_is_not_a_conformance_report(content: str, runs: Runs, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    line = one_line(merge(str(runs.json("whole")), str(bad), "--out", str(tmp_path / "m")))
    assert line.startswith(f"bnconform: {bad}: not a bnconform conformance report")
    assert str(tmp_path / "nosuch.json") in one_line(merge(str(tmp_path / "nosuch.json"), "--out", str(tmp_path / "m")))


def test_a_merged_report_of_an_interrupted_shard_has_no_verdict(runs: Runs, tmp_path: Path) -> None:
    stopped = edited(runs.json("shard2"), tmp_path / "stopped.json", lambda d: d.update(interrupted=True))
    proc = merge(str(runs.json("shard1")), str(stopped), "--out", str(tmp_path / "m"))
    assert proc.returncode == 2 and "INTERRUPTED" in proc.stdout


def test_a_merged_report_in_which_a_backend_was_only_skipped_has_no_verdict(runs: Runs, tmp_path: Path) -> None:
    def skip_cffi(data: dict[str, Any]) -> None:
        for r in data["results"]:
            if r["backend"] == "cffi":
                r["outcome"] = "skipped"

    one = edited(runs.json("shard1"), tmp_path / "1.json", skip_cffi)
    two = edited(runs.json("shard2"), tmp_path / "2.json", skip_cffi)
    proc = merge(str(one), str(two), "--out", str(tmp_path / "m"))
    assert proc.returncode == 2 and "error: backend cffi ran none of its" in proc.stdout, proc.stdout


def test_merged_columns_from_other_machines_keep_their_metadata(runs: Runs, tmp_path: Path) -> None:
    """A GPU runner's column beside the CPU columns: its own machine, packages and file."""
    def gpu(data: dict[str, Any]) -> None:
        data["backends"] = [dict(data["backends"][0], name="torch-cuda")]
        data["results"] = [dict(r, backend="torch-cuda") for r in data["results"] if r["backend"] == "numpy"]
        data["metadata"].update(cpu_model="the GPU runner's CPU", os="Linux-gpu")

    cuda = edited(runs.json("whole"), tmp_path / "gpu" / "conformance.json", gpu)
    proc = merge(str(runs.json("whole")), str(cuda), "--out", str(tmp_path / "m"))
    assert proc.returncode == 0, proc.stderr
    merged = json.loads((tmp_path / "m" / "conformance.json").read_text())
    assert [b["name"] for b in merged["backends"]] == ["numpy", "cffi", "torch-cuda"]
    assert merged["metadata"]["columns"]["torch-cuda"][0]["cpu_model"] == "the GPU runner's CPU"
    assert merged["metadata"]["columns"]["numpy"][0]["file"] == str(runs.json("whole"))
    assert merged["metadata"]["cpu_model"] == "mixed: see metadata.columns"
    assert len(merged["results"]) == len(runs.reports["whole"]["results"]) * 3 // 2
    # a merged report merges again: its columns keep the runs they came from
    again = merge(str(tmp_path / "m" / "conformance.json"), "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    twice = json.loads((tmp_path / "again" / "conformance.json").read_text())
    assert twice["metadata"]["columns"] == merged["metadata"]["columns"] and cells(twice) == cells(merged)


@pytest.mark.parametrize("value", ["0/2", "3/2", "a/b", "1/0", "2", "-1/2", "1/2/3", ""])
def test_a_malformed_shard_is_one_line_exit_2(value: str, tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "numpy", "--family", "bessel", f"--shard={value}", out=tmp_path)
    assert one_line(proc) == f"bnconform: --shard {value}: must be I/N, shard I of N, with 1 <= I <= N (e.g. 1/2)"
    assert report is None


def test_a_shard_the_selection_leaves_empty_is_exit_2_and_a_filter_typo_is_still_its_own(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "numpy", "--case", "bessel/nc_golden", "--shard", "2/2", out=tmp_path)
    assert one_line(proc) == ("bnconform: --shard 2/2: shard 2 of 2 has no case: the selection has only 1 case "
                              "(at most 1 shard)") and report is None
    proc, _ = bnconform("--backend", "numpy", "--case", "besel/*", "--shard", "1/2", out=tmp_path)
    assert one_line(proc).startswith("bnconform: --case 'besel/*' matches no case")


def test_the_pytest_option_shards_a_users_session(tmp_path: Path) -> None:
    """--bnconform-shard, as every engine option, is a pytest option too."""
    (tmp_path / "test_bn.py").write_text("from bnconform.testing import test_conformance  # noqa: F401\n")
    parts = []
    for shard in ("1/2", "2/2"):
        proc = subprocess.run([sys.executable, "-m", "pytest", "test_bn.py", "-p", "no:cacheprovider", "-q",
                               "--bnconform-family", "bessel", "--bnconform-backend", "numpy", "--bnconform-shard", shard,
                               "--bnconform-out", f"out{shard[0]}"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        report = json.loads((tmp_path / f"out{shard[0]}" / "conformance.json").read_text())
        assert report["metadata"]["shard"] == shard
        parts.append(cells(report))
    assert len(parts[0]) == len(parts[1]) == 8 and not parts[0] & parts[1]
    assert ("bessel/nc_golden", "numpy", "passed") in parts[0] and ("bessel/ncl_golden", "numpy", "passed") in parts[1]
