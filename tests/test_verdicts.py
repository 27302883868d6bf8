"""Verdicts point at the right culprit: the exception type is the contract (its words come
second), a diagnosis names only switches that change what was observed, and a golden that the
reference oracle contradicts too is the spec's error, not the backend's."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import bnconform, write_spec


def _cells(report: dict, backend: str) -> dict[str, dict]:
    return {r["spec"]: r for r in report["results"] if r["backend"] == backend}


def test_right_type_other_words_is_its_own_verdict_and_can_be_declared(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "own=tests.broken_backends:own_words",
                             "--backend", "declared=tests.broken_backends:own_words_declared",
                             "--family", "errors", out=tmp_path)
    assert proc.returncode == 1
    own, declared = _cells(report, "own"), _cells(report, "declared")
    cell = own["errors/one_value_training_golden"]
    assert cell["outcome"] == "failed" and cell["diagnosis"] == []
    assert cell["message"].startswith("step 1 (forward) raises ValueError as expected; message differs: "
                                      "expected /Expected more than 1 value per channel when training/, got 'bad input'")
    assert "likely cause" not in cell["message"] and "diagnosis: none (the exception type is torch's" in cell["message"]
    assert declared["errors/one_value_training_golden"]["outcome"] == "deviates"
    assert declared["errors/one_value_training_golden"]["message"].startswith(
        "deviates (declared): own error messages: step 1 (forward) raises ValueError as expected")
    # the same cells, one way or the other; nothing else differs between the two
    assert {k for k, r in own.items() if r["outcome"] == "failed"} == {k for k, r in declared.items()
                                                                      if r["outcome"] == "deviates"}
    assert all(not r["diagnosis"] for r in own.values())


def test_own_words_and_a_declared_deviation_in_one_cell_deviate_by_both(tmp_path: Path) -> None:
    """A refused 0-D input (own words) followed by a check of the counter the backend declares it
    lacks: the declared profile explains the cell, so it deviates, naming both."""
    proc, report = bnconform("--backend", "nc=tests.broken_backends:own_words_no_counter",
                             "--case", "modes/rank0_into_2d_golden[training=True]", out=tmp_path)
    cell = _cells(report, "nc")["modes/rank0_into_2d_golden[training=True]"]
    assert proc.returncode == 0, cell["message"]
    assert cell["outcome"] == "deviates"
    assert "(no_counter)" in cell["message"] and "own error messages: step 1 (forward) raises ValueError" in cell["message"]
    assert cell["diagnosis"] == ["no_counter"]


REFUSED_THEN_TRAINED = """
family: mine
title: an error step, then a training update
specs:
  - id: refused_then_trained
    description: one value per channel is refused; then a batch of four updates running_var
    config: {dim: 1, num_features: 2}
    steps:
      - forward: {input: [[1, 2]]}
        expect: {error: {type: ValueError, match: 'Expected more than 1 value per channel'}}
      - forward: {input: [[1, 2], [3, 6], [0, 1], [2, 5]]}
        expect: oracle
"""


def test_a_manifest_diagnosis_holds_on_a_cell_whose_error_is_in_the_backends_own_words(tmp_path: Path) -> None:
    """The manifest names the bug (biased running variance); the cell's error step is answered
    in the backend's own (declared) words: the entry excuses the cell, nothing else is wrong."""
    specs = tmp_path / "specs"
    write_spec(specs, "mine.yaml", REFUSED_THEN_TRAINED)
    manifest = write_spec(tmp_path, "known.yaml",
                          "expected:\n  - case: '*'\n    diagnosis: biased_running_var\n    reason: biased on purpose\n")
    proc, report = bnconform("--backend", "b=tests.broken_backends:own_words_biased", "--specs", str(specs),
                             "--family", "mine", "--manifest", str(manifest), "--strict", out=tmp_path / "out")
    cell = _cells(report, "b")["mine/refused_then_trained"]
    assert cell["outcome"] == "xfailed", cell["message"]
    assert proc.returncode == 0


def test_a_wrong_exception_type_fails_without_bogus_causes(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "w=tests.broken_backends:wrong_error_type", "--family", "errors", out=tmp_path)
    assert proc.returncode == 1
    failed = [r for r in report["results"] if r["outcome"] == "failed"]
    assert failed and all(r["diagnosis"] == [] for r in failed)
    cell = _cells(report, "w")["errors/one_value_training_golden"]
    assert cell["message"].startswith("wrong exception at step 1 (forward): expected ValueError matching "
                                      "/Expected more than 1 value per channel when training/, got RuntimeError: ")


WRONG_GOLDEN = """
family: mine
title: a golden with a slip
specs:
  - id: slipped
    description: running_mean = 0.9*0 + 0.1*mean = [0.2, 0.4], written as [0.3, 0.4]
    config: {dim: 1, num_features: 2}
    steps:
      - forward: {input: [[1, 2], [3, 6]]}
        expect:
          running_mean: [0.3, 0.4]
"""


def test_a_golden_the_oracle_contradicts_is_a_spec_error_not_the_backends(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    write_spec(specs, "mine.yaml", WRONG_GOLDEN)
    proc, report = bnconform("--backend", "torch", "--backend", "numpy", "--specs", str(specs), "--family", "mine",
                             out=tmp_path / "out")
    assert proc.returncode == 1
    for cell in report["results"]:
        assert cell["outcome"] == "error" and cell["diagnosis"] == []
        assert cell["message"].startswith("spec error? running_mean differs after step 1 (forward) [expected: golden")
        assert f"the reference oracle contradicts this golden value too: check its derivation in {specs / 'mine.yaml'}" \
            in cell["message"]


def test_a_reference_that_cannot_run_a_step_is_not_blamed_on_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever breaks on the reference side (here: an oracle that cannot compute) is the spec's or
    the harness's problem, never read as the backend's failure."""
    from bnconform.cases.loader import BUILTIN_SPECS, load_cases
    from bnconform.cases.oracle import Oracle
    from bnconform.runners.backends import resolve
    from bnconform.runners.engine.execute import run_case

    def broken(self: Oracle, x: object) -> object:
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(Oracle, "forward", broken)
    case = next(c for c in load_cases([BUILTIN_SPECS]) if c.id == "bessel/nc_golden")
    result = run_case(case, resolve("numpy"), "numpy")
    assert result.outcome == "error" and not result.diagnosis
    assert result.message.startswith(f"spec error in {case.source} (bessel/nc_golden): the reference cannot run "
                                     "step 1 (forward): ZeroDivisionError: float division by zero")
