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

from bnconform.runners.backends.mutants import CAUSE, MUTANTS, SHAPE_CLASS
from tests.helpers import FIRST_18, ROOT, default_cases
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
    for needed in ("bnconform/specs/04-bessel.yaml", "bnconform/specs/19-shapes.yaml", "bnconform/specs/20-magnitudes.yaml",
                   "bnconform/runners/backends/frameworks/manifests/flax.yaml",
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


def test_the_matrix_runs_from_an_empty_directory_and_compares(user: tuple[Path, Path]) -> None:
    """The README's first command, as a user runs it, on the built-in backends: the first eighteen
    families (the shapes library's large tensors add nothing to what an install can get wrong; its
    specs are in the wheel, and its cases run from it in the mutants test below)."""
    run = _run(user, "bnconform", "run", *FIRST_18)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((user[1] / "reports" / "conformance.json").read_text())
    by_backend: dict[str, set[str]] = {}
    for r in report["results"]:
        by_backend.setdefault(r["backend"], set()).add(r["outcome"])
    # numpy and cffi skip the double-backward cases (not declared), with that reason
    assert by_backend == {"torch": {"passed"}, "numpy": {"passed", "skipped"}, "cffi": {"passed", "skipped"}}
    assert all("does not declare: double_backward" in r["message"] for r in report["results"] if r["outcome"] == "skipped")
    n_specs = len({r["spec"] for r in report["results"]})
    assert len(report["results"]) == 3 * n_specs >= 3 * 869
    assert report["metadata"]["git_commit"].startswith("unknown (installed package")

    same = _run(user, "bnconform", "compare", "reports/conformance.json", "reports/conformance.json")
    assert same.returncode == 0, same.stdout
    # one family on numpy: the other cells disappeared, a regression unless allowed
    one = _run(user, "bnconform", "run", "--backend", "numpy", "--family", "bessel", "--out", "one")
    assert one.returncode == 0, one.stdout[-3000:]
    other = _run(user, "bnconform", "compare", "reports/conformance.json", "one/conformance.json")
    removed = f"### Removed — regressions (--allow-removed accepts them) ({3 * n_specs - 16})"
    assert other.returncode == 1 and removed in other.stdout
    allowed = _run(user, "bnconform", "compare", "reports/conformance.json", "one/conformance.json", "--allow-removed")
    assert allowed.returncode == 0 and "no regression" in allowed.stdout


def test_check_mutants_and_bench_run_from_an_empty_directory(user: tuple[Path, Path]) -> None:
    check = _run(user, "bnconform", "check", "--backend", "numpy", "--family", "bessel", "--out", "check")
    assert check.returncode == 0, check.stdout[-3000:]
    assert "# bnconform check: numpy" in check.stdout and (user[1] / "check" / "check.md").exists()

    # The installed corpus, one mutant of each class on the families that reach it (the whole
    # corpus's score on the whole default tier is tests/test_mutants.py's).
    mutants = _run(user, "bnconform", "mutants", "--out", "mutants", "--mutant", "biased_running_var",
                   "--mutant", SHAPE_CLASS[0], "--case", "bessel/*", "--case", "shapes/train*")
    assert mutants.returncode == 0, mutants.stdout[-3000:] + mutants.stderr[-3000:]
    assert "mutation score: killed 2/2, correctly diagnosed 2/2" in mutants.stdout
    assert CAUSE["biased_running_var"] and CAUSE[SHAPE_CLASS[0]] and set(MUTANTS) > set(SHAPE_CLASS)

    bench = _run(user, "bnconform", "bench", "--shape", "4x8x4x4", "--max-time", "0.05", "--out", "bench")
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    assert (user[1] / "bench" / "timing.json").exists()


def test_the_documented_user_session_runs_from_the_installed_package(user: tuple[Path, Path]) -> None:
    tests = user[1] / "proj" / "tests"
    tests.mkdir(parents=True)
    (tests / "test_batchnorm.py").write_text("from bnconform.testing import test_conformance  # noqa: F401\n")
    proc = _run(user, "python", "-m", "pytest", "proj/tests", "--bnconform-backend", "numpy", "--bnconform-family",
                "eps", "--junitxml", "proj/junit.xml", "-p", "no:cacheprovider")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (user[1] / "proj" / "junit.xml").read_text().count("<testcase ") == len(default_cases(["eps"])) >= 29


def test_without_torch_the_other_columns_run_and_torch_reads_skipped(installed_without_torch: Path,
                                                                    tmp_path: Path) -> None:
    """`pip install bnconform` without the [torch] extra: no torch in the venv, the numpy and C
    columns run from an empty directory, and the torch column is what an unavailable backend is."""
    user = (installed_without_torch, tmp_path)
    assert _run(user, "python", "-c", "import torch").returncode != 0  # the venv really has no torch
    named = _run(user, "bnconform", "run", "--backend", "numpy", "--backend", "cffi", "--out", "named")  # every default case
    assert named.returncode == 0, named.stdout[-3000:] + named.stderr[-3000:]
    outcomes = {r["outcome"] for r in json.loads((tmp_path / "named" / "conformance.json").read_text())["results"]}
    assert outcomes == {"passed", "skipped"}
    # The default columns: torch among them, skipped with the reason, the run still a pass.
    default = _run(user, "bnconform", "run", "--family", "bessel", "--out", "default")
    assert default.returncode == 0, default.stdout[-3000:] + default.stderr[-3000:]
    report = json.loads((tmp_path / "default" / "conformance.json").read_text())
    torch_cells = [r for r in report["results"] if r["backend"] == "torch"]
    assert torch_cells and all(r["outcome"] == "skipped" and "bnconform[torch]" in r["message"] for r in torch_cells)
    assert {r["outcome"] for r in report["results"] if r["backend"] != "torch"} == {"passed"}
    assert "backend torch did not run: unavailable here" in default.stdout
    # Named, torch must run: exit 2 with the reason, as any backend that cannot run here.
    named_torch = _run(user, "bnconform", "run", "--backend", "torch", "--family", "bessel", "--out", "torch")
    assert named_torch.returncode == 2 and "bnconform[torch]" in named_torch.stderr, named_torch.stderr
    for command in (["bench"], ["fuzz", "--backend", "numpy", "--budget", "1"]):
        refused = _run(user, "bnconform", *command, "--out", "refused")
        assert refused.returncode == 2 and "bnconform[torch]" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
