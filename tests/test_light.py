"""What bnconform costs where it is not used, and what a run loads that it does not need.

The pytest plugin is registered in every pytest session of an environment with bnconform in
it: until a collected test asks for a cell it may import only what declaring its options needs.
A run's controller never imports torch (its workers do, where a torch column runs), and a
selection of families validates only those families' spec files. Checked by what the processes
imported, never by timing (benchmarks/startup.py measures the time).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, write_spec

# What the plugin may load in a session without cells: its entry module, the option table and
# the light modules those import (bnconform's package, the tier names of cases/shapes.py, the
# result model for the progress modes). None of the engine, the specs, the backends, nor their
# packages.
HEAVY = ("torch", "numpy", "yaml", "pydantic", "ml_dtypes", "cffi", "rich", "hypothesis", "tabulate",
         "bnconform.cases.loader", "bnconform.cases.schema", "bnconform.cases.oracle",
         "bnconform.runners.backends", "bnconform.runners.engine.cells",
         "bnconform.runners.engine.collector", "bnconform.runners.engine.isolation")

LOADED = """
import sys, json
def pytest_sessionfinish(session):
    heavy = {heavy!r}
    found = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))
    print("LOADED=" + json.dumps(found))
"""


def _session(tmp_path: Path, test_text: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(LOADED.format(heavy=HEAVY), encoding="utf-8")
    (tmp_path / "test_mine.py").write_text(test_text, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p", "no:randomly",
                           *args, str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=600)


def _loaded(proc: subprocess.CompletedProcess[str]) -> list[str]:
    found = re.search(r"LOADED=(\[.*?\])", proc.stdout)
    assert found is not None, proc.stdout[-2000:]
    return list(json.loads(found.group(1)))


def test_a_session_without_cells_loads_nothing_of_the_engine(tmp_path: Path) -> None:
    proc = _session(tmp_path, "def test_plain():\n    assert 1 + 1 == 2\n")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "bnconform" in subprocess.run([sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True,
                                         cwd=tmp_path, timeout=300).stdout  # the plugin is there: its options are
    assert _loaded(proc) == [], "an inert bnconform plugin imported these"
    assert "bnconform conformance" not in proc.stdout and not (tmp_path / "reports").exists()


def test_a_session_with_cells_loads_the_engine_and_writes_the_report(tmp_path: Path) -> None:
    """The control for the test above: the same hook sees the engine once a test asks for cells."""
    out = tmp_path / "out"
    proc = _session(tmp_path, "from bnconform.testing import test_conformance  # noqa: F401\n",
                    "--bnconform-backend", "numpy", "--bnconform-case", "bessel/nc_golden", "--bnconform-out", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert {"numpy", "yaml", "bnconform.runners.engine.cells"} <= set(_loaded(proc))
    assert (out / "conformance.json").exists()


def test_collect_only_lists_the_cells_and_writes_no_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _session(tmp_path, "from bnconform.testing import test_conformance  # noqa: F401\n", "--collect-only",
                    "--bnconform-backend", "numpy", "--bnconform-family", "bessel", "--bnconform-out", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("test_conformance[bessel/") == 16, proc.stdout[-2000:]
    assert not out.exists()  # nothing ran: no report that reads every cell "not run"


CONTROLLER = """
import sys
from bnconform.runners.cli import main
code = main(sys.argv[1:])
print("TORCH_IN_CONTROLLER=" + str("torch" in sys.modules))
sys.exit(code)
"""


def test_the_controller_never_imports_torch(tmp_path: Path) -> None:
    """Not for numpy, and not for the torch column either: its worker imports torch, the
    controller (oracle, reports, metadata) needs none of it."""
    for backend in ("numpy", "torch"):
        proc = subprocess.run([sys.executable, "-c", CONTROLLER, "run", "--backend", backend, "--case", "bessel/nc_golden",
                               "--out", str(tmp_path / backend), "--progress", "off"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "TORCH_IN_CONTROLLER=False" in proc.stdout, backend
        report = json.loads((tmp_path / backend / "conformance.json").read_text())
        assert [r["outcome"] for r in report["results"]] == ["passed"]
        assert report["metadata"]["threads"] >= 1


BROKEN_OTHER_FAMILY = """
family: other
title: a family the selection below does not name, with a spec the schema refuses
specs:
  - id: wrong
    description: a step that is no step
    steps: [{action: fly}]
"""


def test_only_the_selected_families_are_validated(tmp_path: Path) -> None:
    """--family (or --case with a family part) validates that family's files only; the broken
    file of another family is refused as soon as a selection reaches it."""
    specs = tmp_path / "specs"
    write_spec(specs, "other.yaml", BROKEN_OTHER_FAMILY)
    base = [sys.executable, "-m", "bnconform", "run", "--backend", "numpy", "--specs", str(specs), "--progress", "off"]
    for selection in (["--family", "bessel"], ["--case", "bessel/nc_golden"]):
        proc = subprocess.run(base + selection + ["--out", str(tmp_path / "ok")], cwd=ROOT, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for selection in ([], ["--family", "other"], ["--case", "*/wrong"]):
        proc = subprocess.run(base + selection + ["--out", str(tmp_path / "no")], cwd=ROOT, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 2, (selection, proc.stdout[-2000:])
        assert "other.yaml" in proc.stderr and "'wrong'" in proc.stderr, proc.stderr
    typo = subprocess.run(base + ["--family", "bessle", "--out", str(tmp_path / "no")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert typo.returncode == 2 and "families: " in typo.stderr and "other" in typo.stderr, typo.stderr
