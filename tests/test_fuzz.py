"""`bnconform fuzz`: finds mutants, writes a spec, a script and a diagnosis that reproduce them,
replays its database, passes a correct backend, refuses bad requests in one line; and the
strategies only make specs that load and that the oracle agrees with."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from bnconform.runners.backends import resolve
from bnconform.runners.engine.execute import run_case
from bnconform.runners.fuzz.artifacts import OracleBackend
from bnconform.runners.fuzz.scenario import Unusable, prepare
from bnconform.runners.fuzz.strategies import Offer, fit_values, scenarios
from tests.helpers import ROOT

NUMPY = Offer(frozenset(resolve("numpy").capabilities.provides()))


def fuzz(*args: str, out: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """`bnconform fuzz ...` in a fresh process from the repository root, progress off."""
    return subprocess.run([sys.executable, "-m", "bnconform", "fuzz", "--out", str(out), "--progress", "off", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def run(*args: str, out: Path) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([sys.executable, "-m", "bnconform", "run", "--out", str(out), "--progress", "off", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    return proc, json.loads((out / "conformance.json").read_text())


def written(proc: subprocess.CompletedProcess) -> dict[str, Path]:
    """The files a failing run printed, by suffix."""
    return {Path(p).suffix: Path(p) for p in re.findall(r"^wrote (.+)$", proc.stdout, flags=re.M)}


@pytest.fixture(scope="module")
def biased(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("fuzz-biased")
    return fuzz("--backend", "mutant:biased_running_var", "--budget", "20", "--seed", "1", out=out), out


def test_a_mutant_is_found_and_its_files_reproduce_it(biased: tuple[subprocess.CompletedProcess, Path],
                                                      tmp_path: Path) -> None:
    proc, out = biased
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "verified: it fails on mutant:biased_running_var and passes on torch and on the oracle" in proc.stdout
    files = written(proc)
    assert set(files) == {".yaml", ".py", ".npz", ".txt"} and all(p.parent == out for p in files.values())
    spec = files[".yaml"].read_text()
    assert spec.startswith("# bnconform fuzz found this scenario on mutant:biased_running_var") and "seed 1" in spec
    assert "family: fuzz" in spec and "{random: {seed:" in spec  # a seeded source, not the values
    diagnosis = files[".txt"].read_text()
    assert "running_var differs" in diagnosis and "biased_running_var" in diagnosis and "likely cause" in diagnosis
    case = f"fuzz/{files['.yaml'].stem}"
    failing, report = run("--backend", "mutant:biased_running_var", "--specs", str(out), "--family", "fuzz",
                          out=tmp_path / "mutant")
    assert failing.returncode == 1 and [r["spec"] for r in report["results"]] == [case]
    passing, report = run("--backend", "torch", "--backend", "numpy", "--specs", str(out), "--family", "fuzz",
                          out=tmp_path / "reference")
    assert passing.returncode == 0, passing.stdout
    assert {r["outcome"] for r in report["results"]} == {"passed"}
    script = [sys.executable, str(files[".py"])]
    against_mutant = subprocess.run(script, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert against_mutant.returncode == 1 and "running_var" in against_mutant.stdout, against_mutant.stdout
    against_numpy = subprocess.run(script + ["--backend", "numpy"], cwd=tmp_path, capture_output=True, text=True,
                                   timeout=120)
    assert against_numpy.returncode == 0, against_numpy.stdout + against_numpy.stderr


def test_the_database_replays_a_failure_first(biased: tuple[subprocess.CompletedProcess, Path]) -> None:
    proc, out = biased
    assert any((out / "hypothesis").rglob("*")), "no example kept in the database"
    again = fuzz("--backend", "mutant:biased_running_var", "--budget", "20", "--seed", "2", out=out)
    assert again.returncode == 1 and "found after 1 scenarios" in again.stdout, again.stdout
    assert written(again)[".yaml"] == written(proc)[".yaml"]  # the same scenario, the same file


def test_another_mutant_needs_a_sequence_of_steps(tmp_path: Path) -> None:
    proc = fuzz("--backend", "mutant:reset_noop", "--budget", "40", "--seed", "3", out=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    spec = written(proc)[".yaml"].read_text()
    assert "reset_" in spec and "forward" in spec and "verified:" in proc.stdout


def test_a_correct_backend_passes_within_the_budget(tmp_path: Path) -> None:
    proc = fuzz("--backend", "numpy", "--budget", "10", "--seed", "4", out=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = re.search(r"numpy passed (\d+) scenarios \((\d+) steps\) in .*, ([\d.]+) scenarios/s; seed 4", proc.stdout)
    assert found and int(found[1]) > 5 and int(found[2]) >= int(found[1]), proc.stdout
    assert "warning" not in proc.stderr, proc.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--backend", "nosuch"], "unknown backend 'nosuch'"),
    (["--backend", "numpy", "--budget", "0"], "--budget 0: must be a positive number of seconds"),
    (["--backend", "numpy", "--budget", "soon"], "--budget soon: must be a positive number of seconds"),
    (["--backend", "numpy", "--seed", "-1"], "--seed -1: must be a non-negative integer"),
    (["--backend", "numpy", "--backend", "torch"], "fuzz takes exactly one --backend"),
])
def test_usage_errors_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    proc = fuzz(*args, out=tmp_path / "out")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("bnconform: ") and message in lines[0], lines


def test_an_out_that_cannot_be_written_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = fuzz("--backend", "numpy", out=blocker)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "not a directory" in proc.stderr


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(scenarios(NUMPY))
def test_generated_specs_load_and_the_oracle_agrees_with_itself(raw: dict) -> None:
    """Every drawn scenario loads (schema, grid, load-time checks) and, run with the oracle as the
    backend, passes: no spec error, no error expectation the reference does not raise."""
    try:
        prepared = prepare(raw, NUMPY)
    except Unusable:
        return
    assert prepared.case.id == "fuzz/scenario" and prepared.case.steps
    outcome = run_case(prepared.case, OracleBackend(), "oracle")
    assert outcome.outcome == "passed", outcome.message


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_non_contiguous_data_keeps_its_squares_in_float32_range(layout: str) -> None:
    """torch's channels_last and strided kernels give a finite variance where the contiguous one
    (and the oracle) overflows: fuzzed data in those layouts stays below that, for every drawn
    magnitude and the most values per channel the shapes strategy gives (a torch run once found a
    strided 1e22 spread drawn from the raw-squares corner at 1e25)."""
    float32_max, values = 3.4028234663852886e38, 70000
    for kind in ("plain", "scaled", "offset", "overflow", "raw_squares", "half_sums", "constant", "underflow",
                 "uniform", "arange"):
        for magnitude in range(6):
            for spread_index in range(3):
                for sign in (1.0, -1.0):
                    source = fit_values((kind, magnitude, spread_index, sign), "float32", layout)
                    spread = source.get("scale", 1.0)
                    assert values * spread**2 < float32_max, (kind, magnitude, spread_index, source)
