"""Mutation testing: every deliberately broken backend is killed, and its bug is diagnosed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnconform.cases.loader import BUILTIN_SPECS, load_cases
from bnconform.runners.backends.mutants import CAUSE, MUTANTS
from bnconform.runners.engine.execute import run_case
from bnconform.runners.reports.mutants import score
from bnconform.runners.reports.results import CaseResult
from tests.helpers import ROOT

CASES = load_cases([BUILTIN_SPECS])


def test_corpus_is_large_enough() -> None:
    assert len(MUTANTS) >= 20 and sum(c is not None for c in CAUSE.values()) >= 20


@pytest.mark.parametrize("name", list(MUTANTS))
def test_mutant_is_killed_and_diagnosed(name: str) -> None:
    results = []
    for case in CASES:  # in this process: the unit under test is the diagnosis, not the isolation
        with np.errstate(all="ignore"):  # broken arithmetic is the point here
            o = run_case(case, MUTANTS[name], name)
        results.append(CaseResult(case.id, case.family, name, o.outcome, o.message, diagnosis=list(o.diagnosis)))
    result = score(name, CAUSE[name], results)
    assert result.killed, f"{name} survived every case"
    if CAUSE[name] is not None:
        assert result.diagnosed, f"{name}: expected diagnosis {CAUSE[name]}, most named {result.top_diagnoses}"


def test_mutants_command_prints_and_writes_the_score(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bnconform", "mutants", "--mutant", "reset_noop", "--mutant", "grad_bias_missing",
         "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mutation score: killed 2/2, correctly diagnosed 1/1" in proc.stdout
    md = (tmp_path / "mutants.md").read_text()
    assert "| reset_noop" in md and "killed" in md
