"""Every literal golden agrees with the oracle, so a wrong golden fails `make test`, not torch.

Goldens are derived by hand; the oracle is the same formulas, computed. Each built-in case with
a literal expectation (a number, None, state_dict keys or an expected error) is replayed on the
oracle alone (cases/goldens.py) and every literal is compared within the case's tolerance.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from bnconform.cases.goldens import golden_disagreements, has_goldens
from bnconform.cases.loader import BUILTIN_SPECS, SpecError, load_cases, load_file
from bnconform.cases.model import Case
from tests.helpers import write_spec

CASES = load_cases([BUILTIN_SPECS])
WITH_GOLDENS = [c for c in CASES if has_goldens(c)]


def test_every_family_has_goldens_to_check() -> None:
    assert {c.family for c in WITH_GOLDENS} == {c.family for c in CASES}
    assert len(WITH_GOLDENS) >= 100


# Ids with parentheses: a node id ending in `[family/spec[grid]]` reads as a conformance cell.
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id.replace("[", "(").replace("]", ")")) for c in WITH_GOLDENS])
def test_golden_agrees_with_oracle(case: Case) -> None:
    problems = golden_disagreements(case)
    assert not problems, "\n".join(problems)


SPEC = """
family: mine
title: goldens to get wrong
defaults: {dim: 1, num_features: 2}
specs:
  - id: ema_golden
    description: one training step on G = [[1, 2], [3, 6]]
    steps:
      - forward: {input: [[1, 2], [3, 6]]}
        # 0.1*[2, 4]; 0.9 + 0.1*[2, 8]
        expect: {running_mean: [0.2, 0.4], running_var: [1.1, 1.7], num_batches_tracked: 1}
      - eval
      - forward: {input: [[1, 2], [3, 6]]}
        # (x - [0.2, 0.4]) / sqrt([1.1, 1.7] + 1e-5)
        expect: {output: [[0.7627666, 1.2271404], [2.6696831, 4.2949913]]}
      - check:
        expect: {state_dict_keys: [weight, bias, running_mean, running_var, num_batches_tracked], weight: [1, 1]}
  - id: error_golden
    description: one value per channel in training
    steps:
      - forward: {input: [[1, 2]]}
        expect: {error: {type: ValueError, match: 'Expected more than 1 value'}}
"""


def cases_of(tmp_path: Path, text: str) -> dict[str, Case]:
    return {c.spec_id: c for c in load_file(write_spec(tmp_path, "mine.yaml", text))}


def test_right_goldens_pass(tmp_path: Path) -> None:
    cases = cases_of(tmp_path, SPEC)
    assert golden_disagreements(cases["ema_golden"]) == []
    assert golden_disagreements(cases["error_golden"]) == []


@pytest.mark.parametrize(("old", "new", "spec_id", "says"), [
    pytest.param("running_var: [1.1, 1.7]", "running_var: [1.1, 1.8]", "ema_golden",
                 "step 1 (forward): running_var: golden [1.1, 1.8] vs oracle [1.1, 1.7]", id="value"),
    pytest.param("[2.6696831, 4.2949913]", "[2.6696831, 4.3949913]", "ema_golden",
                 "step 3 (forward): output: golden", id="output_in_eval"),
    pytest.param("num_batches_tracked: 1}", "num_batches_tracked: 2}", "ema_golden",
                 "num_batches_tracked: golden 2 vs oracle 1", id="counter"),
    pytest.param("weight: [1, 1]}", "weight: null}", "ema_golden", "weight: golden None vs oracle [1, 1]", id="none"),
    pytest.param("running_mean, running_var, num_batches_tracked]", "running_mean, running_var]", "ema_golden",
                 "state_dict_keys: golden", id="state_dict_keys"),
    pytest.param("type: ValueError", "type: RuntimeError", "error_golden",
                 "golden RuntimeError, but the oracle raises ValueError", id="error_type"),
    pytest.param("input: [[1, 2]]}", "input: [[1, 2], [3, 4]]}", "error_golden",
                 "golden ValueError, but the oracle raises nothing", id="no_error"),
])
def test_a_wrong_golden_is_reported(tmp_path: Path, old: str, new: str, spec_id: str, says: str) -> None:
    assert old in SPEC
    case = cases_of(tmp_path, SPEC.replace(old, new))[spec_id]
    problems = golden_disagreements(case)
    assert len(problems) == 1 and says in problems[0], problems
    assert problems[0].startswith(f"mine/{spec_id}: step ")


def test_a_golden_of_the_wrong_length_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"steps\[0\]\.expect\.running_var: golden has shape \(3,\)"):
        cases_of(tmp_path, SPEC.replace("running_var: [1.1, 1.7]", "running_var: [1.1, 1.7, 1.0]"))


def test_cases_without_literals_are_not_replayed() -> None:
    plain = next(c for c in CASES if not has_goldens(c))
    assert golden_disagreements(plain) == []
