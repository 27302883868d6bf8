"""The gate cannot go green by accident: each way a run could check nothing, or blame the wrong
thing, is a usage error (exit 2) with one line saying what is wrong, before any case runs.

Each test is one row of what a new user tried: the command, its exit code, its message.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, bnconform

ONE = ("--case", "bessel/nc_golden")


def _one_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize(("args", "message"), [
    (("--family", "nosuch"), "bnconform: --family 'nosuch' matches no family (families: conditions, toggling, "),
    (("--case", "nosuch/*"), "bnconform: --case 'nosuch/*' matches no case"),
    (("--family", "momentum", "--family", "momentun"), "bnconform: --family 'momentun' matches no family"),
    (("--case", "bessel/*", "--case", "besel/*"), "bnconform: --case 'besel/*' matches no case"),
    (("--exclude", "momentum/nosuch"), "bnconform: --exclude 'momentum/nosuch' matches no case (a spec with a grid"),
    (("--backend", "t[1]=numpy"), "bnconform: column name 't[1]': may not be empty or contain brackets or whitespace"),
    (("--family", "bessel", "--exclude", "bessel/*"), "no case matches the selection (family 'bessel'; exclude 'bessel/*')"),
])
def test_a_selection_that_matches_nothing_is_exit_2_naming_the_filter(args: tuple[str, ...], message: str,
                                                                       tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "numpy", *args, out=tmp_path)
    assert proc.returncode == 2 and message in _one_line(proc)
    assert report is None


def test_an_empty_specs_directory_is_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "myspecs"
    empty.mkdir()
    proc, _ = bnconform("--backend", "numpy", "--specs", str(empty), out=tmp_path / "out")
    assert proc.returncode == 2
    assert f"--specs {empty}: no spec files (*.yaml, *.yml) in that directory" in _one_line(proc)


@pytest.mark.parametrize("strict", [(), ("--strict",)])
def test_a_requested_backend_that_is_unavailable_is_exit_2_with_its_reason(strict: tuple[str, ...], tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "torch-cuda", "--backend", "numpy", *ONE, *strict, out=tmp_path)
    assert proc.returncode == 2 and report is None
    assert _one_line(proc) == ("bnconform: backend torch-cuda is unavailable: CUDA is not available on this machine "
                               "(--allow-unavailable runs without it, its cells skipped)")


def test_allow_unavailable_runs_with_its_cells_skipped_and_says_so(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "torch-cuda", "--backend", "numpy", *ONE, "--allow-unavailable", "--strict",
                             out=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert {r["backend"]: r["outcome"] for r in report["results"]} == {"torch-cuda": "skipped", "numpy": "passed"}
    skipped = next(r for r in report["results"] if r["backend"] == "torch-cuda")
    assert skipped["message"] == "torch-cuda unavailable: CUDA is not available on this machine"
    assert ("warning: backend torch-cuda did not run: unavailable here (CUDA is not available on this machine); "
            "its 1 cells are skipped") in proc.stdout


def test_a_backend_that_fails_to_import_is_unavailable(tmp_path: Path) -> None:
    proc, _ = bnconform("--backend", "nosuchpkg.bn:backend", *ONE, out=tmp_path)
    assert proc.returncode == 2
    assert ("backend nosuchpkg.bn:backend is unavailable: could not be loaded: ModuleNotFoundError: "
            "No module named 'nosuchpkg'") in _one_line(proc)


@pytest.mark.parametrize(("name", "message"), [
    ("malformed_capabilities", "capabilities must be a bnconform.Capabilities, got str 'everything'"),
    ("unknown_feature", "capabilities name what bnconform does not know: backwards"),
    ("creates_nothing", "create() returned None instead of a module"),
    ("bad_conventions", "conventions.momentum must be one of 'torch', 'decay', got 'keras'"),
])
def test_a_backend_that_breaks_the_protocol_is_refused_before_any_case_runs(name: str, message: str,
                                                                           tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "torch", "--backend", f"tests.broken_backends:{name}", *ONE, out=tmp_path)
    line = _one_line(proc)
    assert proc.returncode == 2 and report is None
    assert line.startswith(f"bnconform: backend tests.broken_backends:{name} breaks the backend protocol: ") and message in line


def test_a_column_name_taken_twice_is_refused(tmp_path: Path) -> None:
    proc, _ = bnconform("--backend", "torch", "--backend", "torch=numpy", *ONE, out=tmp_path)
    assert proc.returncode == 2
    assert "backend torch#2: column name 'torch' is already taken by --backend torch" in _one_line(proc)


def test_the_same_refusal_in_a_users_own_pytest_session(tmp_path: Path) -> None:
    (tmp_path / "test_bn.py").write_text("from bnconform.testing import test_conformance  # noqa: F401\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", str(tmp_path / "test_bn.py"), "-p", "no:cacheprovider",
                           "--bnconform-backend", "tests.broken_backends:creates_nothing", "--bnconform-case", ONE[1],
                           "--bnconform-out", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert "create() returned None instead of a module" in proc.stdout and "1 error" in proc.stdout


def test_a_backend_that_ran_none_of_its_cells_has_no_verdict(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "torch-module:torch.nn:BatchNorm1d", "--case", "bessel/nchw_golden", out=tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert report["unchecked"] and "-> NO VERDICT (nothing checked)" in proc.stdout
    assert ("error: backend torch-module:torch.nn:BatchNorm1d ran none of its 1 selected cells "
            "(e.g. torch-module:torch.nn:BatchNorm1d does not declare: dim=2); nothing of it was checked") in proc.stdout


def _report(path: Path, cells: dict[tuple[str, str], str]) -> Path:
    results = [{"spec": case, "family": case.split("/")[0], "backend": backend, "outcome": outcome}
               for (case, backend), outcome in cells.items()]
    path.write_text(json.dumps({"suite_version": "x", "backends": [], "results": results}), encoding="utf-8")
    return path


def _compare(base: Path, new: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bnconform", "compare", str(base), str(new), *extra],
                          capture_output=True, text=True, timeout=120)


def test_compare_counts_cells_that_disappeared_or_stopped_running(tmp_path: Path) -> None:
    base = _report(tmp_path / "base.json", {("bessel/a", "numpy"): "passed", ("bessel/b", "numpy"): "passed",
                                            ("bessel/c", "numpy"): "deviates"})
    empty = _report(tmp_path / "empty.json", {})
    gone = _compare(base, empty)
    assert gone.returncode == 1 and "**3 regression(s)**" in gone.stdout
    assert "### Removed — regressions (--allow-removed accepts them) (3)" in gone.stdout
    skipped = _report(tmp_path / "skipped.json", {("bessel/a", "numpy"): "skipped", ("bessel/b", "numpy"): "passed",
                                                  ("bessel/c", "numpy"): "skipped"})
    lost = _compare(base, skipped)
    assert lost.returncode == 1 and "### Ran before, skipped now — regressions (--allow-removed accepts them) (2)" in lost.stdout
    for new in (empty, skipped):
        allowed = _compare(base, new, "--allow-removed")
        assert allowed.returncode == 0 and "no regression" in allowed.stdout
    assert _compare(base, base).returncode == 0


def test_not_a_backend_breaks_the_protocol_even_with_allow_unavailable(tmp_path: Path) -> None:
    proc, _ = bnconform("--backend", "tests.broken_backends:not_a_backend", *ONE, "--allow-unavailable", out=tmp_path)
    assert proc.returncode == 2
    assert ("backend tests.broken_backends:not_a_backend breaks the backend protocol: tests.broken_backends:not_a_backend "
            "is not a backend") in _one_line(proc)


def test_a_torch_module_whose_package_is_missing_is_unavailable(tmp_path: Path) -> None:
    proc, _ = bnconform("--backend", "torch-module:nosuchpkg.bn:factory", *ONE, out=tmp_path)
    assert proc.returncode == 2
    assert ("backend torch-module:nosuchpkg.bn:factory is unavailable: cannot load nosuchpkg.bn:factory: "
            "ModuleNotFoundError: No module named 'nosuchpkg'") in _one_line(proc)


def test_the_defaults_are_what_can_run_here_but_a_named_backend_must_run() -> None:
    """`bnconform run` with no --backend runs the built-ins that can run here: one without its C
    extension is skipped with the reason; named, it is refused."""
    from bnconform.runners.backends import columns
    from bnconform.runners.engine.cells import BackendProblem, preflight
    from bnconform.runners.engine.options import Settings

    cuda = columns(["torch-cuda"])
    preflight(Settings(), cuda).close()
    with pytest.raises(BackendProblem, match="backend torch-cuda is unavailable"):
        preflight(Settings(backend=["torch-cuda"]), cuda)


def test_a_run_in_which_every_cell_was_skipped_has_no_verdict(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "torch-cuda", *ONE, "--allow-unavailable", out=tmp_path)
    assert proc.returncode == 2 and report["unchecked"]
    assert "error: every one of the 1 selected cells was skipped: the run checked nothing" in proc.stdout
