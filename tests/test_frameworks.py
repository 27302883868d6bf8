"""Framework adapters: skipped with the reason when missing; judged by their profile when present."""
from __future__ import annotations

import pytest

from bnconform.cases.loader import BUILTIN_SPECS, load_cases
from bnconform.runners.backends import FRAMEWORKS, resolve, unavailable_reason
from bnconform.runners.backends.frameworks import MANIFESTS
from bnconform.runners.engine.execute import run_case
from bnconform.runners.engine.manifest import load

CASES = {c.id: c for c in load_cases([BUILTIN_SPECS])}
# bessel/nc_golden: the biased-variance frameworks deviate by declaration, tinygrad matches torch.
EXPECTED = {"onnxruntime": "deviates", "keras": "deviates", "flax": "deviates", "tinygrad": "passed"}


@pytest.mark.parametrize("name", sorted(FRAMEWORKS))
def test_adapter_is_skipped_with_reason_or_judged_by_its_profile(name: str) -> None:
    backend = resolve(name)
    result = run_case(CASES["bessel/nc_golden"], backend, name)
    reason = unavailable_reason(backend)
    if reason:
        assert result.outcome == "skipped" and "pip install" in result.message
    else:
        assert result.outcome == EXPECTED[name], result.message


@pytest.mark.parametrize("name", sorted(FRAMEWORKS))
def test_adapter_declares_conventions_and_ships_a_valid_manifest(name: str) -> None:
    backend = resolve(name)
    assert backend.conventions.describe()
    entries = load([backend.manifest])
    assert entries and all(e.reason and e.backend == name for e in entries)


def test_one_pass_variance_is_found_in_flax() -> None:
    backend = resolve("flax")
    if unavailable_reason(backend):
        pytest.skip("flax is not installed here (tox -e flax runs this)")
    result = run_case(CASES["stability/offset_1e4_golden"], backend, "flax")
    assert result.outcome == "failed" and "one_pass_variance" in result.diagnosis


def test_tinygrad_names_its_device() -> None:
    """DEV=PYTHON where there is no clang (tinygrad 0.14 refuses PYTHON=1); the version says which."""
    backend = resolve("tinygrad")
    reason = unavailable_reason(backend)
    if reason:
        pytest.skip(f"tinygrad is not installed here (tox -e tinygrad runs this): {reason}")
    info = backend.version()
    assert "device CPU" in info or "device PYTHON" in info or "DEV set by the caller" in info, info
    assert backend.manifest.endswith("tinygrad-python.yaml" if "device PYTHON" in info else "tinygrad.yaml")


def test_tinygrad_python_device_manifest_is_the_cpu_one_but_its_device_finding() -> None:
    """The two tinygrad manifests say the same, but the CPU device's float32 summation finding."""
    cpu = load([MANIFESTS / "tinygrad.yaml"])
    python = load([MANIFESTS / "tinygrad-python.yaml"])
    key = lambda e: (e.backend, e.case, e.reason, e.diagnosis, e.message, e.outcome, e.link)
    assert [key(e) for e in python] == [key(e) for e in cpu if e.case != "stability/offset_1e4[*"]
    assert len(python) == len(cpu) - 1
