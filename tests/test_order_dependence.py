"""Reproduce lines that reproduce: a failure that depends on the cells its worker ran before.

`tests.broken_backends:order_dependent` keeps global state: once its process has built a
BatchNorm3d, its 1-d modules are off by 1e-3. Each run drives `bnconform run` in a fresh process
on a tiny private spec, so it takes seconds: the failure after the 3-d case is marked
order-dependent with that case as its prefix (bisected out of the irrelevant ones), and the
reproduce line it prints fails when run, while the case alone passes.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable, Sequence

import pytest

from bnconform.runners.engine.order import ALONE_TOO, investigate, trial_bound
from tests.helpers import bnconform, write_spec

BACKEND = "tests.broken_backends:order_dependent"
SPEC = """
family: orderdep
title: cases whose verdict on tests.broken_backends:order_dependent depends on what ran before
defaults: {num_features: 2}
specs:
  - id: before_a
    description: a 2-d forward, irrelevant to the 1-d case
    config: {dim: 2}
    steps:
      - forward: {input: {random: {seed: 1, shape: [2, 2, 2, 2]}}}
        expect: {output: oracle}
  - id: culprit_3d
    description: builds a BatchNorm3d, after which the backend's 1-d modules are off
    config: {dim: 3}
    steps:
      - forward: {input: {random: {seed: 2, shape: [2, 2, 2, 2, 2]}}}
        expect: {output: oracle}
  - id: between_b
    description: irrelevant
    config: {dim: 2}
    steps:
      - forward: {input: {random: {seed: 3, shape: [2, 2, 2, 2]}}}
        expect: {output: oracle}
  - id: between_c
    description: irrelevant
    config: {dim: 2}
    steps:
      - forward: {input: {random: {seed: 4, shape: [2, 2, 3, 3]}}}
        expect: {output: oracle}
  - id: victim_1d
    description: passes alone, fails after culprit_3d in the same worker
    config: {dim: 1}
    steps:
      - forward: {input: {random: {seed: 5, shape: [4, 2]}}}
        expect: {output: oracle}
  - id: plain_d
    description: irrelevant
    config: {dim: 2}
    steps:
      - forward: {input: {random: {seed: 6, shape: [2, 2, 2, 2]}}}
        expect: {output: oracle}
  - id: own_bug
    description: 3 channels, which the backend gets wrong whatever ran before
    config: {dim: 2, num_features: 3}
    steps:
      - forward: {input: {random: {seed: 7, shape: [2, 3, 2, 2]}}}
        expect: {output: oracle}
"""
VICTIM, CULPRIT = "orderdep/victim_1d", "orderdep/culprit_3d"


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    write_spec(tmp_path / "specs", "orderdep.yaml", SPEC)
    return tmp_path / "specs"


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each forward of the test backend appends "PID DIM CHANNELS" here."""
    path = tmp_path / "forwards.log"
    monkeypatch.setenv("BNCONFORM_TEST_ORDER_LOG", str(path))
    return path


def _cells(report: dict | None) -> dict[str, dict]:
    assert report is not None
    return {r["spec"]: r for r in report["results"]}


def _forwards(log: Path) -> list[tuple[str, int, int]]:
    lines = log.read_text().split("\n") if log.exists() else []
    return [(pid, int(dim), int(c)) for pid, dim, c in (line.split() for line in lines if line)]


def test_a_failure_after_a_culprit_is_marked_bisected_and_its_reproduce_line_fails(specs: Path, tmp_path: Path,
                                                                                    log: Path) -> None:
    proc, report = bnconform("--backend", BACKEND, "--specs", str(specs), "--family", "orderdep", out=tmp_path / "run")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = _cells(report)
    victim = cells[VICTIM]
    assert victim["outcome"] == "failed"  # the gate tells the truth: it failed in this run
    assert victim["order_dependent"] == [CULPRIT]  # bisected out of before_a, between_b, between_c
    first = victim["message"].splitlines()[0]
    assert first == ("order-dependent: passes alone in a fresh worker; fails after 1 earlier cell in the same "
                     f"worker: {CULPRIT}")
    assert "bisected from the 4 cells that ran before it in that worker" in victim["message"]
    repro = next(line for line in victim["message"].splitlines() if line.startswith("reproduce: "))
    assert f"--keep-order --case {CULPRIT} --case {VICTIM}" in repro
    assert repro in proc.stdout  # printed with its cause
    assert "(order-dependent)" in (tmp_path / "run" / "conformance.md").read_text()
    # A failure of its own (it fails alone too) is not order-dependent, and is left as it was.
    own = cells["orderdep/own_bug"]
    assert own["outcome"] == "failed" and own["order_dependent"] == []
    assert not own["message"].startswith("order-dependent") and "--keep-order" not in own["message"]
    assert {r["outcome"] for s, r in cells.items() if s not in (VICTIM, "orderdep/own_bug")} == {"passed"}

    args = shlex.split(repro.removeprefix("reproduce: "))
    assert args[:2] == ["bnconform", "run"]
    proc, report = bnconform(*args[2:], out=tmp_path / "repro")
    assert proc.returncode == 1, proc.stdout[-3000:]  # the reproduce line reproduces
    assert [r["spec"] for r in report["results"]] == [CULPRIT, VICTIM]  # type: ignore[index]
    assert _cells(report)[VICTIM]["order_dependent"] == [CULPRIT]
    proc, report = bnconform("--backend", BACKEND, "--specs", str(specs), "--case", VICTIM, out=tmp_path / "alone")
    assert proc.returncode == 0, proc.stdout[-3000:]  # ... where the case alone passes


def test_fresh_worker_runs_each_case_alone(specs: Path, tmp_path: Path, log: Path) -> None:
    for name in (BACKEND, "all"):
        log.unlink(missing_ok=True)
        proc, report = bnconform("--backend", BACKEND, "--specs", str(specs), "--family", "orderdep", "--exclude",
                                 "orderdep/own_bug", "--fresh-worker", name, out=tmp_path / "out")
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert {r["outcome"] for r in _cells(report).values()} == {"passed"}
        pids = [pid for pid, _, _ in _forwards(log)]
        assert len(pids) == 6 and len(set(pids)) == 6  # one worker per case, each case once


def test_no_rerun_alone_leaves_the_failure_as_it_ran(specs: Path, tmp_path: Path, log: Path) -> None:
    proc, report = bnconform("--backend", BACKEND, "--specs", str(specs), "--case", CULPRIT, "--case", VICTIM,
                             "--no-rerun-alone", out=tmp_path / "out")
    assert proc.returncode == 1
    victim = _cells(report)[VICTIM]
    assert victim["outcome"] == "failed" and victim["order_dependent"] == []
    assert victim["message"].splitlines()[-1].endswith(f"--case {VICTIM}")
    assert len(_forwards(log)) == 2 and len({pid for pid, _, _ in _forwards(log)}) == 1  # one worker, no rerun


def test_a_failure_in_the_first_cell_of_a_worker_is_not_rerun(specs: Path, tmp_path: Path, log: Path) -> None:
    """--keep-order puts own_bug first; nothing ran before it, so it runs once and stays as it is."""
    proc, report = bnconform("--backend", BACKEND, "--specs", str(specs), "--keep-order", "--case", "orderdep/own_bug",
                             "--case", "orderdep/plain_d", out=tmp_path / "out")
    assert proc.returncode == 1
    assert [r["spec"] for r in report["results"]] == ["orderdep/own_bug", "orderdep/plain_d"]  # type: ignore[index]
    assert _cells(report)["orderdep/own_bug"]["order_dependent"] == []
    assert [c for _, _, c in _forwards(log)] == [3, 2]  # no rerun, no restart


def test_keep_order_runs_the_cases_in_the_order_given(specs: Path, tmp_path: Path) -> None:
    proc, report = bnconform("--backend", BACKEND, "--specs", str(specs), "--keep-order", "--case", VICTIM,
                             "--case", "orderdep/*", out=tmp_path / "out")
    assert proc.returncode == 1, proc.stdout[-3000:]  # own_bug fails
    assert [r["spec"] for r in report["results"]][:3] == [VICTIM, "orderdep/before_a", CULPRIT]  # type: ignore[index]
    assert _cells(report)[VICTIM]["outcome"] == "passed"  # before the 3-d case, it passes


def test_a_flaky_failure_that_no_prefix_reproduces_says_so(specs: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BNCONFORM_TEST_FLAKY", str(tmp_path / "flaked"))
    proc, report = bnconform("--backend", "tests.broken_backends:flaky_once", "--specs", str(specs),
                             "--case", "orderdep/before_a", "--case", VICTIM, out=tmp_path / "out")
    assert proc.returncode == 1
    victim = _cells(report)[VICTIM]
    assert victim["outcome"] == "failed" and victim["order_dependent"] == ["orderdep/before_a"]
    assert "could not reproduce with any prefix (flaky?)" in victim["message"].splitlines()[0]
    assert f"--case {VICTIM}" in victim["message"] and "--keep-order" not in victim["message"]


def test_keep_order_with_workers_is_a_usage_error(specs: Path, tmp_path: Path) -> None:
    proc, report = bnconform("--backend", BACKEND, "--specs", str(specs), "--keep-order", "-n", "2",
                             out=tmp_path / "out")
    assert proc.returncode == 2 and report is None
    assert len(proc.stderr.strip().splitlines()) == 1 and "--keep-order" in proc.stderr and "-n" in proc.stderr


def test_fresh_worker_naming_no_column_is_a_usage_error(specs: Path, tmp_path: Path) -> None:
    proc, report = bnconform("--backend", BACKEND, "--specs", str(specs), "--fresh-worker", "numpi",
                             out=tmp_path / "out")
    assert proc.returncode == 2 and report is None
    assert proc.stderr.strip() == (f"bnconform: --fresh-worker 'numpi' names no backend column of this run "
                                   f"(columns: {BACKEND}; or 'all')")


# The search itself, on a fake trial (`fails(prefix)`): which prefixes make the case fail.
def _search(history: list[str], fails_after: Callable[[tuple[str, ...]], bool],
            bound: int | None = None) -> tuple[tuple[str, ...], int, bool] | None:
    calls: list[tuple[str, ...]] = []

    def fails(prefix: Sequence[str]) -> bool:
        calls.append(tuple(prefix))
        return fails_after(tuple(prefix))

    found = investigate(history, fails, bound)
    assert len(calls) <= (bound or trial_bound(len(history)))
    return None if found is None else (found.culprits, found.trials, found.bound_hit)


def test_search_finds_the_culprit_among_many() -> None:
    history = [f"c{i}" for i in range(100)]
    found = _search(history, lambda p: "c17" in p)
    assert found is not None and found[0] == ("c17",) and not found[2]
    assert found[1] <= 1 + 7 + 1  # alone, a binary search over 100, and c17 alone


def test_search_keeps_every_cell_that_is_needed() -> None:
    found = _search([f"c{i}" for i in range(6)], lambda p: "c1" in p and "c4" in p)
    assert found is not None and found[0] == ("c1", "c4")


def test_search_says_none_when_it_fails_alone_and_flaky_when_nothing_reproduces() -> None:
    assert _search(["a", "b"], lambda p: True) is None
    assert _search(["a", "b"], lambda p: False) == ((), 3, False)  # alone, a tail, the whole history


def test_search_says_when_its_bound_stopped_it() -> None:
    history = [f"c{i}" for i in range(8)]
    found = _search(history, lambda p: {"c0", "c3"} <= set(p), bound=6)
    assert found == (tuple(history), 6, True)  # alone, 3 tails, the whole history, c0 alone: stopped


def test_after_a_failure_of_its_own_later_cells_go_on_in_the_columns_worker(specs: Path, tmp_path: Path,
                                                                            log: Path) -> None:
    """own_bug is rerun alone in a second worker of the column; the column's own worker, with the
    3-d case it ran, goes on, so the victim after it still fails there (order-dependent), as it
    would in one process of the user's: a compiler column keeps its warm cache the same way."""
    proc, report = bnconform("--backend", BACKEND, "--specs", str(specs), "--keep-order", "--case", CULPRIT,
                             "--case", "orderdep/own_bug", "--case", VICTIM, out=tmp_path / "out")
    assert proc.returncode == 1, proc.stdout[-3000:]
    cells = _cells(report)
    assert cells["orderdep/own_bug"]["message"].splitlines()[-1] == ALONE_TOO
    assert cells[VICTIM]["order_dependent"] == [CULPRIT]
    forwards = _forwards(log)
    assert forwards[0][1] == 3 and forwards[1][2] == 3  # the culprit, then own_bug, in the column's worker
    assert forwards[2][2] == 3 and forwards[2][0] != forwards[0][0]  # own_bug alone, in another worker
    assert forwards[3][1] == 1 and forwards[3][0] == forwards[0][0]  # the victim, back in the column's worker


def test_a_manifest_entry_for_an_order_dependent_failure(specs: Path, tmp_path: Path, log: Path) -> None:
    """`order_dependent: true` excuses the victim after its culprit (xfailed) and reads passed, not
    xpassed, where the culprit did not run before it; it does not excuse a failure of its own."""
    known = tmp_path / "known.yaml"
    known.write_text(f'expected:\n  - case: "{VICTIM}"\n    order_dependent: true\n    message: "output differs"\n'
                     '    reason: "off after a 3-d module in the same process"\n'
                     '  - case: "orderdep/own_bug"\n    order_dependent: true\n    message: "output differs"\n'
                     '    reason: "wrongly claimed to be order-dependent"\n')
    common = ("--backend", BACKEND, "--specs", str(specs), "--manifest", str(known), "--strict")
    proc, report = bnconform(*common, "--keep-order", "--case", CULPRIT, "--case", VICTIM, out=tmp_path / "after")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert _cells(report)[VICTIM]["outcome"] == "xfailed"
    proc, report = bnconform(*common, "--case", VICTIM, out=tmp_path / "alone")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert _cells(report)[VICTIM]["outcome"] == "passed"
    proc, report = bnconform(*common, "--case", "orderdep/own_bug", out=tmp_path / "own")
    own = _cells(report)["orderdep/own_bug"]
    assert proc.returncode == 1 and own["outcome"] == "failed", own
    assert "not the failure the manifest expects here" in own["message"] and "order-dependent" in own["message"]
