"""The output contract: a backend's values are compared in float64, so the kind of what it
returns is checked on its own. Each backend here returns the right numbers in the wrong form
(or writes to its input), and each fails with the stated message, never passes."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import bnconform

BROKEN = {
    "upcasts": "output differs after step 1 (forward) [expected: golden, float32]\n  dtype differs: expected float32, "
               "got float64",
    "returns_list": "step 1 (forward): forward() returned an output that is a list; expected a numpy.ndarray of a "
                    "float dtype",
    "returns_tensor": "step 1 (forward): forward() returned an output that is a torch.Tensor; "
                      "expected a numpy.ndarray of a float dtype",
    "modifies_input": "step 1 (forward): forward() modified its input (",
    "counter_array": "step 1 (forward): get('num_batches_tracked') is a ndarray (array(1)); expected an int",
    "returns_masked": "step 1 (forward): forward() returned an output that is a numpy.ma.MaskedArray; "
                      "expected a numpy.ndarray of a float dtype",
}
# Contract breaches that need a case with more steps: (case, the message's start).
LATER = {
    "writes_into_held_input": ("gradients/train_golden", "step 2 (backward): forward() modified its input "
                               "(written during backward()) ("),
    "state_in_float64": ("state/round_trip_golden", "step 2 (state_dict): state_dict()['weight'] has dtype float64; "
                         "expected float32"),
    "pops_state_keys": ("state/round_trip_golden", "step 6 (load_state_dict): load_state_dict() changed the keys of "
                        "the caller's dict (before ['weight', 'bias', 'running_mean', 'running_var', "
                        "'num_batches_tracked'], after ['weight', 'bias', 'running_mean', 'running_var'])"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_backend_breaking_the_output_contract_fails_with_the_reason(name: str, tmp_path: Path) -> None:
    proc, report = bnconform("--backend", f"tests.broken_backends:{name}", "--case", "conditions/train_tracked_golden",
                             out=tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:]
    (cell,) = report["results"]
    assert cell["outcome"] == "failed" and cell["message"].startswith(BROKEN[name]), cell["message"]
    assert cell["diagnosis"] == []  # no deviation switch explains the wrong kind of value


def test_the_input_check_counts_the_elements_written(tmp_path: Path) -> None:
    _, report = bnconform("--backend", "tests.broken_backends:modifies_input", "--case", "conditions/train_tracked_golden",
                          out=tmp_path)
    assert "elements changed); a BatchNorm must not write to the caller's array" in report["results"][0]["message"]


@pytest.mark.parametrize("name", list(LATER))
def test_a_breach_later_in_a_case_fails_with_the_reason(name: str, tmp_path: Path) -> None:
    case, message = LATER[name]
    proc, report = bnconform("--backend", f"tests.broken_backends:{name}", "--case", case, out=tmp_path)
    (cell,) = report["results"]
    assert proc.returncode == 1 and cell["outcome"] == "failed" and cell["message"].startswith(message), cell["message"]
