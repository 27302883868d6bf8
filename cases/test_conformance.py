"""Every conformance case on every selected backend (parametrised in runners/plugin.py)."""
from __future__ import annotations

import pytest

from runners.execute import run_case, tolerance_label


def test_conformance(conformance_cell, record_property) -> None:
    case, backend_name, backend = conformance_cell
    record_property("case", case.id)
    record_property("family", case.family)
    record_property("backend", backend_name)
    record_property("tolerance", tolerance_label(case))
    result = run_case(case, backend, backend_name)
    record_property("bnconform_outcome", result.outcome)
    record_property("bnconform_message", result.message)
    record_property("bnconform_diagnosis", list(result.diagnosis))
    if result.outcome == "skipped":
        pytest.skip(result.message)
    if result.outcome in ("failed", "error"):
        pytest.fail(f"{case.id} on {backend_name}: {result.outcome}\n{result.message}", pytrace=False)
