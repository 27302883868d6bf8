"""bnconform as a user gets it: the wheel built from this checkout, installed into a fresh
virtual environment, used from an empty directory outside the checkout.

Slow (a venv with torch in it, built once per test run and shared: tests/installed.py), and
what proves the package carries everything it needs: specs, framework manifests, the mutant
corpus, the C kernels, the pytest plugin.
"""
from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from bnconform.runners.backends.mutants import CAUSE, MUTANTS
from tests.helpers import ROOT
from tests.installed import user_env


@pytest.fixture(scope="module")
def user(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the fresh venv's bin directory, an empty working directory outside the checkout)."""
    work = tmp_path_factory.mktemp("empty-dir")
    assert ROOT not in work.parents
    return installed, work


def _run(user: tuple[Path, Path], *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    bin_dir, work = user
    return subprocess.run(list(args), cwd=work, capture_output=True, text=True, timeout=timeout, env=user_env(bin_dir))


def test_the_wheel_installs_one_import_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"bnconform", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    for needed in ("bnconform/specs/04-bessel.yaml", "bnconform/runners/backends/frameworks/manifests/flax.yaml",
                   "bnconform/runners/backends/mutants.py", "bnconform/runners/backends/c/bnc.c",
                   "bnconform/cases/test_conformance.py", "bnconform/py.typed"):
        assert needed in names, needed
    assert any(n.startswith("bnconform/runners/backends/_bnc") and n.endswith(".so") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[pytest11]\nbnconform = bnconform.runners.engine.plugin" in text


def test_imports_from_outside_the_checkout(user: tuple[Path, Path]) -> None:
    for module, works in (("bnconform", True), ("cases", False), ("runners", False)):
        proc = _run(user, "python", "-c", f"import {module}")
        assert (proc.returncode == 0) == works, (module, proc.stderr)
    api = _run(user, "python", "-c", "from bnconform import Backend, Capabilities, Conventions, KernelModule, "
                                     "kernel_capabilities, ModuleConfig, BackendUnavailable; print('ok')")
    assert api.stdout.strip() == "ok", api.stderr


def test_every_command_works_from_an_empty_directory(user: tuple[Path, Path]) -> None:
    run = _run(user, "bnconform", "run")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((user[1] / "reports" / "conformance.json").read_text())
    by_backend: dict[str, set[str]] = {}
    for r in report["results"]:
        by_backend.setdefault(r["backend"], set()).add(r["outcome"])
    # numpy and cffi skip the double-backward cases (not declared), with that reason
    assert by_backend == {"torch": {"passed"}, "numpy": {"passed", "skipped"}, "cffi": {"passed", "skipped"}}
    assert all("does not declare: double_backward" in r["message"] for r in report["results"] if r["outcome"] == "skipped")
    n_specs = len({r["spec"] for r in report["results"]})
    assert len(report["results"]) == 3 * n_specs >= 3 * 800
    assert report["metadata"]["git_commit"].startswith("unknown (installed package")

    check = _run(user, "bnconform", "check", "--backend", "numpy", "--out", "check")
    assert check.returncode == 0, check.stdout[-3000:]
    assert "# bnconform check: numpy" in check.stdout and (user[1] / "check" / "check.md").exists()

    # Every mutant killed, every known cause named: the shape-class ones on the shapes library's
    # families, the others on the families before it (as tests/test_mutants.py; the whole
    # default tier for all of them costs twice the time for the same score).
    shape_class = ["channel_tail", "channels_past_64", "large_plane_one_pass", "square_overflow", "half_backward_overflow"]
    others = [name for name in MUTANTS if name not in shape_class]
    for names, selection in ((others, ["--exclude", "shapes/*", "--exclude", "magnitudes/*"]),
                             (shape_class, ["--family", "shapes", "--family", "magnitudes"])):
        mutants = _run(user, "bnconform", "mutants", "--out", "mutants", "-n", "2", *selection,
                       *[a for name in names for a in ("--mutant", name)])
        assert mutants.returncode == 0, mutants.stdout[-3000:] + mutants.stderr[-3000:]
        known = sum(CAUSE[name] is not None for name in names)
        assert f"mutation score: killed {len(names)}/{len(names)}, correctly diagnosed {known}/{known}" in mutants.stdout

    bench = _run(user, "bnconform", "bench", "--shape", "4x8x4x4", "--max-time", "0.05", "--out", "bench")
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    assert (user[1] / "bench" / "timing.json").exists()

    same = _run(user, "bnconform", "compare", "reports/conformance.json", "reports/conformance.json")
    assert same.returncode == 0, same.stdout
    # check ran numpy only: torch's and cffi's cells disappeared, a regression unless allowed
    other = _run(user, "bnconform", "compare", "reports/conformance.json", "check/conformance.json")
    assert other.returncode == 1 and f"### Removed — regressions (--allow-removed accepts them) ({2 * n_specs})" in other.stdout
    allowed = _run(user, "bnconform", "compare", "reports/conformance.json", "check/conformance.json", "--allow-removed")
    assert allowed.returncode == 0 and "no regression" in allowed.stdout


def test_the_documented_user_session_runs_from_the_installed_package(user: tuple[Path, Path]) -> None:
    tests = user[1] / "proj" / "tests"
    tests.mkdir(parents=True)
    (tests / "test_batchnorm.py").write_text("from bnconform.testing import test_conformance  # noqa: F401\n")
    proc = _run(user, "python", "-m", "pytest", "proj/tests", "--bnconform-backend", "numpy", "--bnconform-family",
                "eps", "--junitxml", "proj/junit.xml", "-p", "no:cacheprovider")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (user[1] / "proj" / "junit.xml").read_text().count("<testcase ") == 29
