"""`bnconform run` end to end, in fresh processes: exit codes, reports, selection, xdist."""
from __future__ import annotations

from pathlib import Path

from tests.helpers import FIRST_18, bnconform, write_spec

BAD_SPEC = """
family: private
title: a backend author's own spec
specs:
  - id: oops
    description: d
    steps:
      - forward: {input: [[1, 2], [3, 6]]}
        expect: {running_mena: oracle}
"""

PRIVATE_SPEC = """
family: private
title: a backend author's own spec
defaults: {dim: 1, num_features: 2}
specs:
  - id: first_step_golden
    description: one training step on G
    steps:
      - forward: {input: [[1, 2], [3, 6]]}
        # 0.1*[2, 4]; 0.9 + 0.1*[2, 8]
        expect: {running_mean: [0.2, 0.4], running_var: [1.1, 1.7]}
"""


def outcomes(report: dict, backend: str) -> dict[str, str]:
    return {r["spec"]: r["outcome"] for r in report["results"] if r["backend"] == backend}


def test_reference_backends_pass_and_reports_are_written(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "torch", "--backend", "numpy", "--family", "bessel", out=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report is not None and {b["name"] for b in report["backends"]} == {"torch", "numpy"}
    first = report["results"][0]
    assert {"spec", "family", "backend", "outcome", "message", "tolerance"} <= set(first)
    assert set(outcomes(report, "torch").values()) == {"passed"} == set(outcomes(report, "numpy").values())
    md = (tmp_path / "conformance.md").read_text()
    assert "| family" in md and "## bessel\n\nAll 16 cases pass on every backend." in md  # passing cases: counted
    assert "bnconform:" in proc.stdout and "-> OK" in proc.stdout


def test_biased_running_var_fails_the_bessel_family(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "mutant:biased_running_var", *FIRST_18, out=tmp_path)
    assert proc.returncode == 1
    results = outcomes(report, "mutant:biased_running_var")
    failed = {k for k, v in results.items() if v == "failed"}
    assert {"bessel/nc_golden", "bessel/ncl_golden", "bessel/nchw_golden", "bessel/ncdhw_golden"} <= failed
    assert all(results[k] == "failed" for k in results if k.startswith("bessel/") and "[" in k)
    md = (tmp_path / "conformance.md").read_text()
    assert "### 1. `biased_running_var`: " in md and md.count("running_var differs") == 1  # one cause, one example
    assert "| `bessel/nc_golden` " in md  # a failing case is listed in its family's table


def test_one_pass_variance_fails_the_stability_family(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "mutant:one_pass_variance", "--family", "stability", out=tmp_path)
    assert proc.returncode == 1
    results = outcomes(report, "mutant:one_pass_variance")
    assert results["stability/offset_1e4_golden"] == "failed"
    assert all(results[f"stability/offset_1e4[dim={d}]"] == "failed" for d in (1, 2, 3))


def test_malformed_spec_is_a_usage_error_naming_file_and_key(tmp_path: Path) -> None:
    write_spec(tmp_path / "specs", "private.yaml", BAD_SPEC)
    proc, _ = bnconform("--specs", str(tmp_path / "specs"), out=tmp_path / "out")
    assert proc.returncode == 2
    assert "private.yaml" in proc.stderr and "spec 'oops'" in proc.stderr and "running_mena" in proc.stderr


def test_unknown_backend_is_a_usage_error(tmp_path: Path) -> None:
    proc, _ = bnconform("--backend", "nosuch", out=tmp_path)
    assert proc.returncode == 2 and "unknown backend 'nosuch'" in proc.stderr


def test_a_backend_that_does_not_import_costs_only_its_own_cells_when_allowed(tmp_path: Path) -> None:
    """Without --allow-unavailable the run refuses it (exit 2, tests/test_gate.py)."""
    proc, report = bnconform("--backend", "numpy", "--backend", "tests.no_such_module:x", "--family", "eps",
                             "--allow-unavailable", out=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert set(outcomes(report, "numpy").values()) == {"passed"}
    broken = [r for r in report["results"] if r["backend"] == "tests.no_such_module:x"]
    assert broken and all(r["outcome"] == "skipped" and "could not be loaded: ModuleNotFoundError" in r["message"]
                          for r in broken)


def test_include_and_exclude_patterns(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "numpy", "--case", "bessel/*", "--exclude", "bessel/*_golden", out=tmp_path)
    assert proc.returncode == 0
    ids = set(outcomes(report, "numpy"))
    assert ids and all(i.startswith("bessel/") and "_golden" not in i for i in ids)


def test_private_specs_and_case_selection(tmp_path: Path) -> None:
    write_spec(tmp_path / "specs", "private.yaml", PRIVATE_SPEC)
    proc, report = bnconform("--backend", "numpy", "--specs", str(tmp_path / "specs"),
                             "--case", "private/*", out=tmp_path / "out")
    assert proc.returncode == 0, proc.stdout
    assert outcomes(report, "numpy") == {"private/first_step_golden": "passed"}


def test_xdist_workers_still_collect_every_result(tmp_path: Path) -> None:
    serial_proc, serial = bnconform("--backend", "numpy", "--family", "momentum", out=tmp_path / "serial")
    proc, parallel = bnconform("--backend", "numpy", "--family", "momentum", "-n", "2", out=tmp_path / "xdist")
    assert proc.returncode == 0 == serial_proc.returncode, proc.stdout
    assert outcomes(parallel, "numpy") == outcomes(serial, "numpy") and len(outcomes(serial, "numpy")) > 20


def test_a_shard_is_the_same_cells_under_xdist_workers(tmp_path: Path) -> None:
    """Every pytest-xdist worker selects the cases again: each must arrive at the same shard."""
    shard = ("--backend", "numpy", "--family", "momentum", "--shard", "2/3")
    serial_proc, serial = bnconform(*shard, out=tmp_path / "serial")
    proc, parallel = bnconform(*shard, "-n", "2", out=tmp_path / "xdist")
    assert proc.returncode == 0 == serial_proc.returncode, proc.stdout
    assert outcomes(parallel, "numpy") == outcomes(serial, "numpy") and len(outcomes(serial, "numpy")) > 5
    assert parallel["metadata"]["shard"] == "2/3"
