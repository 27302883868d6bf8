"""bnconform inside someone else's pytest: a throwaway project, its own tests, and the one line
docs/ci.md tells a user to add. Run from outside this checkout, in fresh processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

BACKEND = '''
from bnconform import KernelModule, kernel_capabilities
from bnconform.runners.backends.numpy_backend import NumpyKernel


class MyBackend:
    name = "mykernel"
    capabilities = kernel_capabilities(backward=True)

    def version(self):
        return "mykernel 0.1"

    def create(self, config):
        return KernelModule(config, NumpyKernel(threads=1))


backend = MyBackend()
'''


def _project(root: Path) -> Path:
    (root / "mypkg").mkdir(parents=True)
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "bn.py").write_text(BACKEND)
    tests = root / "tests"
    tests.mkdir()
    (tests / "test_own.py").write_text("def test_their_own_code():\n    assert 1 + 1 == 2\n")
    (tests / "test_batchnorm.py").write_text("from bnconform.testing import test_conformance  # noqa: F401\n")
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    return root


def _pytest(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=project,
                          capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


def test_cells_run_in_the_users_own_pytest_with_one_junit_testcase_per_cell(tmp_path: Path) -> None:
    project = _project(tmp_path / "proj")
    proc = _pytest(project, "--bnconform-backend", "mypkg.bn:backend", "--bnconform-backend", "torch",
                   "--bnconform-family", "bessel", "--junitxml", "junit.xml", "-n", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cases = ET.parse(project / "junit.xml").getroot().iter("testcase")
    names = [(c.get("classname"), c.get("name")) for c in cases]
    cells = [n for n in names if n[1].startswith("test_conformance[")]
    assert len(cells) == 16 * 2 and len(set(cells)) == len(cells)
    assert ("tests.test_batchnorm", "test_conformance[bessel/nc_golden[mypkg.bn:backend]]") in cells
    assert ("tests.test_own", "test_their_own_code") in names  # their own tests ran too
    report = (project / "reports" / "conformance.json").read_text()
    assert '"backend": "mypkg.bn:backend"' in report and "bnconform conformance" in proc.stdout


def test_the_plugin_is_inert_in_a_session_that_does_not_ask_for_it(tmp_path: Path) -> None:
    project = _project(tmp_path / "proj")
    proc = _pytest(project, "tests/test_own.py", "-v")
    assert proc.returncode == 0, proc.stdout
    said = [line for line in proc.stdout.splitlines() if not line.startswith("plugins:")]  # pytest lists it there
    assert not any("bnconform" in line for line in said) and "1 passed" in proc.stdout
    assert not (project / "reports").exists()


def test_with_plugin_autoloading_off_it_is_asked_in_with_p(tmp_path: Path) -> None:
    project = _project(tmp_path / "proj")
    env = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = _pytest(project, "tests/test_batchnorm.py", "-p", "bnconform", "--bnconform-backend", "numpy",
                   "--bnconform-case", "bessel/nc_golden", env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout


def test_a_failing_backend_fails_the_users_session_and_names_the_cause(tmp_path: Path) -> None:
    project = _project(tmp_path / "proj")
    proc = _pytest(project, "tests/test_batchnorm.py", "--bnconform-backend", "mutant:biased_running_var",
                   "--bnconform-case", "bessel/nc_golden")
    assert proc.returncode == 1
    assert "likely cause: running_var is updated with the biased batch variance" in proc.stdout


def test_a_selection_that_matches_nothing_is_an_error_naming_the_filter(tmp_path: Path) -> None:
    project = _project(tmp_path / "proj")
    proc = _pytest(project, "tests/test_batchnorm.py", "--bnconform-family", "nosuch")
    assert proc.returncode != 0
    assert "bnconform: --family 'nosuch' matches no family" in proc.stdout


@pytest.mark.parametrize(("backend", "code"), [("numpy", 0), ("mutant:biased_running_var", 1)], ids=["passes", "fails"])
def test_cells_spread_over_hosts_with_tx_still_make_one_complete_report(backend: str, code: int, tmp_path: Path) -> None:
    """pytest-xdist's `--tx` (docs/ci.md): here two execnet gateways on this machine, `popen` in
    place of `ssh=host`; the session's controller still collects every cell into one report."""
    from bnconform.runners.engine.cells import selected_cases
    from bnconform.runners.engine.options import Settings

    project = _project(tmp_path / "proj")
    proc = _pytest(project, "tests/test_batchnorm.py", "-v", "-d", "--tx", f"2*popen//python={sys.executable}",
                   "--bnconform-family", "bessel", "--bnconform-backend", backend)
    assert proc.returncode == code, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[gw0]" in proc.stdout and "[gw1]" in proc.stdout  # both gateways ran cells
    report = json.loads((project / "reports" / "conformance.json").read_text())
    expected = {c.id for c in selected_cases(Settings(family=["bessel"]))}
    assert sorted(r["spec"] for r in report["results"]) == sorted(expected) and len(expected) == 16
    outcomes = {r["outcome"] for r in report["results"]}
    assert outcomes == {"passed"} if code == 0 else ("failed" in outcomes and outcomes <= {"passed", "failed"})
