"""Every conformance case on every selected backend (parametrised in runners/plugin.py)."""
from __future__ import annotations

import pytest

from runners import manifest
from runners.execute import run_case, tolerance_label
from runners.plugin import MANIFEST_KEY


def test_conformance(conformance_cell, record_property, request) -> None:
    case, backend_name, backend = conformance_cell
    record_property("case", case.id)
    record_property("family", case.family)
    record_property("backend", backend_name)
    record_property("tolerance", tolerance_label(case))
    result = run_case(case, backend, backend_name)
    record_property("bnconform_diagnosis", list(result.diagnosis))
    expected = manifest.find(request.config.stash[MANIFEST_KEY], case.id, backend_name)
    if expected is not None and result.outcome in ("failed", "error"):
        record_property("bnconform_outcome", "xfailed")
        record_property("bnconform_message", f"expected deviation: {expected.describe()}\n{result.message}")
        pytest.xfail(f"expected deviation ({expected.source.name}): {expected.describe()}")
    if expected is not None and result.outcome == "passed":
        record_property("bnconform_outcome", "xpassed")
        record_property("bnconform_message", f"passes despite the manifest entry: {expected.describe()}")
        if request.config.getoption("strict_manifest"):
            pytest.fail(f"XPASS(strict) {case.id} on {backend_name}: {expected.source} expects a failure "
                        f"({expected.describe()})", pytrace=False)
        return
    record_property("bnconform_outcome", result.outcome)
    record_property("bnconform_message", result.message)
    if result.outcome == "skipped":
        pytest.skip(result.message)
    if result.outcome == "deviates":  # visible as such in the reports, never as a pass
        pytest.xfail(result.message)
    if result.outcome in ("failed", "error"):
        pytest.fail(f"{case.id} on {backend_name}: {result.outcome}\n{result.message}", pytrace=False)
