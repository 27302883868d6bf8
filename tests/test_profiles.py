"""Convention profiles: a backend is driven in its own conventions and judged by its declaration."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from bnconform.cases.loader import BUILTIN_SPECS, load_cases
from bnconform.runners.backends import mutants
from bnconform.runners.backends.numpy_backend import NumpyBackend, NumpyKernel
from bnconform.runners.backends.protocol import PROFILES, Conventions
from bnconform.runners.engine.execute import run_case
from tests.helpers import SHAPE_FAMILIES, bnconform

CASES = load_cases([BUILTIN_SPECS])


# The 870 cases of the families before the shapes library (whose ~950 add nothing to a profile)
FIRST_18 = [c for c in CASES if c.family not in SHAPE_FAMILIES]


def _outcomes(backend, family=None) -> Counter:  # type: ignore[no-untyped-def]
    return Counter(run_case(c, backend).outcome for c in FIRST_18 if family is None or c.family == family)


def test_decay_convention_backend_is_driven_with_one_minus_m() -> None:
    class DecayNumpy(NumpyBackend):  # momentum means the weight of the old value
        conventions = Conventions(momentum="decay")

    assert _outcomes(DecayNumpy(NumpyKernel(threads=1)), "momentum") == Counter(passed=36)
    assert _outcomes(DecayNumpy(NumpyKernel(threads=1)), "toggling")["passed"] == 25  # set momentum converted too


def test_declared_deviation_reads_deviates_not_passed_or_failed() -> None:
    class BiasedByDesign(NumpyBackend):
        conventions = Conventions(running_var="biased")

    backend = BiasedByDesign(mutants._BiasedRunningVar(threads=1))
    counts = _outcomes(backend)
    # every case whose running_var the biased update changes deviates (389 of them), the rest pass
    # (870 cases in the first 18 families); the 56 double-backward cases are skipped (numpy does
    # not declare it)
    assert counts["failed"] == 0 and counts["deviates"] == 389 and counts["passed"] == 870 - 56 - 389
    result = run_case(next(c for c in CASES if c.id == "bessel/nc_golden"), backend)
    assert result.outcome == "deviates" and result.message.startswith("deviates (declared): running_var is updated")


def test_undeclared_behaviour_still_fails() -> None:
    class ClaimsLegacy(NumpyBackend):  # declares legacy toggling, but its variance is biased
        conventions = PROFILES["torch-legacy"]

    assert _outcomes(ClaimsLegacy(mutants._BiasedRunningVar(threads=1)), "bessel") == Counter(failed=16)


def test_torch_legacy_profile_in_the_matrix(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "bnconform.runners.backends.mutants:declared_legacy", "--family", "toggling",
                             out=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    outcomes = Counter(r["outcome"] for r in report["results"])
    assert outcomes["deviates"] >= 5 and outcomes["failed"] == 0
    assert "deviates (declared)" in (tmp_path / "conformance.md").read_text()
