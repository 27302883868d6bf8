"""Getting a backend in: entry points, torch-module adapter, check, manifests."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import FIRST_18, ROOT, bnconform, write_spec

EXAMPLE = ROOT / "examples" / "plugin-backend"


def outcomes(report: dict, backend: str) -> dict[str, str]:
    return {r["spec"]: r["outcome"] for r in report["results"] if r["backend"] == backend}


def test_example_plugin_installs_and_runs_from_its_entry_point(tmp_path: Path) -> None:
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps", str(EXAMPLE)],
        capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    proc, report = bnconform("--backend", "example-numpy", "--family", "bessel", "--family", "momentum", out=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    results = outcomes(report, "example-numpy")
    assert len(results) > 40 and set(results.values()) == {"passed"}


def test_torch_module_adapter_runs_each_dimension(tmp_path: Path) -> None:
    names = [f"torch-module:torch.nn:BatchNorm{d}d" for d in (1, 2, 3)]
    proc, report = bnconform(*[a for n in names for a in ("--backend", n)], *FIRST_18, out=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    per_case: dict[str, set[str]] = {}
    for r in report["results"]:
        per_case.setdefault(r["spec"], set()).add(r["outcome"])
    # passes on its own dimension only; a lazy case (which a factory with num_features cannot build) skips on all three
    lazy = {r["spec"] for r in report["results"] if "does not declare: lazy" in r["message"]}
    assert lazy and all(per_case[spec] == {"skipped"} for spec in lazy)
    assert all(v == {"passed", "skipped"} for spec, v in per_case.items() if spec not in lazy)
    skip = next(r for r in report["results"] if r["outcome"] == "skipped" and r["spec"] not in lazy)
    assert "does not declare: dim=" in skip["message"]


def test_sync_batchnorm_through_the_adapter_skips_shards_with_the_reason_and_shows_its_differences(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "torch-module:torch.nn:SyncBatchNorm", "--family", "shards",
                             "--family", "toggling", "--family", "errors", out=tmp_path)
    assert proc.returncode == 1 and report is not None, proc.stdout[-2000:]
    results = {r["spec"]: r for r in report["results"]}
    shards = [r for spec, r in results.items() if spec.startswith("shards/")]
    # one process on CPU cannot synchronise: skipped with why, never passed by plain BatchNorm
    assert shards and all(r["outcome"] == "skipped" and "does not declare: shards; shards: nn.SyncBatchNorm "
                          "synchronises shards across processes" in r["message"] for r in shards)
    # torch 2.13's SyncBatchNorm checks only "at least 2D" and asserts a counter after a flip on
    rank = {spec: r for spec, r in results.items() if spec.startswith("errors/wrong_rank[")}
    assert len(rank) == 6 and all(r["outcome"] == "failed" and "nothing was raised" in r["message"] for r in rank.values())
    flip = results["toggling/flip_tracking_on_golden"]
    assert flip["outcome"] == "failed" and "AssertionError: num_batches_tracked must not be None" in flip["message"]
    failed = {spec for spec, r in results.items() if r["outcome"] == "failed"}
    assert failed == set(rank) | {"toggling/flip_tracking_on_golden", "errors/rank_one_input_golden"} | {
        f"toggling/flip_on_untracked[dim={d},training=True]" for d in (1, 2, 3)}
    assert all(r["outcome"] == "passed" for spec, r in results.items() if spec not in failed and not spec.startswith("shards/"))


def test_check_gives_a_verdict_per_family_with_the_first_failure() -> None:
    proc = subprocess.run([sys.executable, "-m", "bnconform", "check", "--backend", "mutant:reset_noop"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    out = proc.stdout
    assert "| state" in out and "FAIL (4 of 24 run failed)" in out and "| bessel" in out and "pass (16 of 16)" in out
    assert "## state: first failure" in out and "likely cause: reset_running_stats() does nothing" in out
    assert "reproduce: bnconform run --backend mutant:reset_noop --case state/" in out
    assert "capabilities: backward, channels_last, dim=1" in out


MANIFEST = """
backend: "mutant:reset_noop"
expected:
  - case: "state/reset_*"
    diagnosis: reset_noop
    reason: "reset is not implemented yet"
    link: https://example.org/issues/1
  - case: "state/round_trip_golden"
    message: "differs after step"
    reason: "needs reset"
  - case: "nothing/matches"
    outcome: error
    reason: "stale entry"
"""


def test_manifest_xfails_and_warns_on_stale_entries(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "manifest.yaml", MANIFEST)
    proc, report = bnconform("--backend", "mutant:reset_noop", "--family", "state", "--manifest", str(path),
                             out=tmp_path / "out")
    assert proc.returncode == 0, proc.stdout[-2000:]
    results = outcomes(report, "mutant:reset_noop")
    assert results["state/reset_running_stats_golden"] == "xfailed" and results["state/round_trip_golden"] == "xfailed"
    assert "failed" not in results.values()
    assert "'nothing/matches'" in proc.stdout and "matches no selected case" in proc.stdout


def test_xpassed_entry_fails_the_gate_only_under_strict(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "manifest.yaml",
                      "expected:\n  - case: bessel/nc_golden\n    diagnosis: biased_running_var\n    reason: thought broken\n")
    args = ("--backend", "numpy", "--case", "bessel/nc_golden", "--manifest", str(path))
    lenient, report = bnconform(*args, out=tmp_path / "a")
    assert lenient.returncode == 0 and outcomes(report, "numpy") == {"bessel/nc_golden": "xpassed"}
    strict, _ = bnconform(*args, "--strict", out=tmp_path / "b")
    assert strict.returncode == 1 and "[1] 1 cell (numpy): passes despite the manifest entry: thought broken" in strict.stdout


def test_malformed_manifest_names_file_and_key(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "bad.yaml", "expected:\n  - case: x\n")
    proc, _ = bnconform("--backend", "numpy", "--manifest", str(path), out=tmp_path / "out")
    assert proc.returncode == 2 and "bad.yaml" in proc.stderr and "expected.0.reason" in proc.stderr


def test_manifest_entry_must_say_what_it_expects(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "vague.yaml", "expected:\n  - case: x\n    reason: known\n")
    proc, _ = bnconform("--backend", "numpy", "--manifest", str(path), out=tmp_path / "out")
    assert proc.returncode == 2 and "vague.yaml" in proc.stderr
    assert "an entry says what it expects: `diagnosis: NAME`, `message: PATTERN` or `outcome: error`" in proc.stderr
    path = write_spec(tmp_path, "typo.yaml", "expected:\n  - case: x\n    reason: known\n    diagnosis: biased_var\n")
    proc, _ = bnconform("--backend", "numpy", "--manifest", str(path), out=tmp_path / "out")
    assert proc.returncode == 2 and "typo.yaml: expected.0.diagnosis" in proc.stderr
    assert "unknown diagnosis 'biased_var'" in proc.stderr
    for name, text, says in (
        ("any.yaml", "expected:\n  - case: x\n    reason: known\n    outcome: failed\n", "expected.0.outcome"),
        ("empty.yaml", "expected:\n  - case: x\n    reason: known\n    message: ''\n", "expected.0.message"),
        ("twice.yaml", "expected:\n  - case: x\n    reason: known\n    reason: other\n    outcome: error\n",
         "duplicate key 'reason'"),
    ):
        path = write_spec(tmp_path, name, text)
        proc, _ = bnconform("--backend", "numpy", "--manifest", str(path), out=tmp_path / "out")
        assert proc.returncode == 2 and name in proc.stderr and says in proc.stderr, proc.stderr


def test_manifest_excuses_its_declared_bug_but_not_a_second_one(tmp_path: Path) -> None:
    """A backend with the biased running variance (declared in the manifest) and eps outside the
    square root (not declared): the first is xfailed, the second still fails, in the same cases."""
    path = write_spec(tmp_path, "known.yaml",
                      "expected:\n  - case: '*'\n    diagnosis: biased_running_var\n    reason: biased on purpose\n")
    proc, report = bnconform("--backend", "two=tests.broken_backends:two_bugs", "--backend", "one=mutant:biased_running_var",
                             "--family", "conditions", "--family", "eps", "--manifest", str(path), out=tmp_path / "out")
    assert proc.returncode == 1, proc.stdout[-2000:]
    one, two = outcomes(report, "one"), outcomes(report, "two")
    # The declared bug alone is excused where it shows; where a case cannot show it, the cell
    # simply passed (an entry for a diagnosis is about the cases that would show that deviation).
    assert set(one.values()) == {"passed", "xfailed"}
    failed = [r for r in report["results"] if r["backend"] == "two" and r["outcome"] == "failed"]
    assert len(failed) > 20 and any(r["diagnosis"] == ["eps_outside_sqrt"] for r in failed)
    assert all("not the failure the manifest expects here: diagnosis biased_running_var" in r["message"] for r in failed)
    assert "xfailed" in two.values()  # where only the declared bug shows, it is still excused


def test_a_list_of_diagnoses_excuses_two_bugs_only_together(tmp_path: Path) -> None:
    """The same two bugs named in one entry, both switched on together: every cell that shows
    either is excused (the case passes with both), so --strict passes; a list naming a bug the
    backend does not have, or an unknown one, is no excuse / a usage error."""
    both = write_spec(tmp_path, "both.yaml", "expected:\n  - case: '*'\n"
                      "    diagnosis: [biased_running_var, eps_outside_sqrt]\n    reason: two bugs we know\n")
    proc, report = bnconform("--backend", "two=tests.broken_backends:two_bugs", "--family", "conditions",
                             "--family", "eps", "--manifest", str(both), "--strict", out=tmp_path / "out")
    assert proc.returncode == 0, proc.stdout[-2000:]
    two = outcomes(report, "two")
    assert set(two.values()) == {"passed", "xfailed"} and sum(o == "xfailed" for o in two.values()) > 20
    wrong = write_spec(tmp_path, "wrong.yaml", "expected:\n  - case: '*'\n"
                       "    diagnosis: [biased_running_var, eps_omitted]\n    reason: not these\n")
    proc, report = bnconform("--backend", "two=tests.broken_backends:two_bugs", "--family", "eps",
                             "--manifest", str(wrong), out=tmp_path / "out2")
    assert proc.returncode == 1
    failed = [r for r in report["results"] if r["outcome"] == "failed"]
    assert failed and all("diagnosis biased_running_var + eps_omitted (wrong.yaml)" in r["message"] for r in failed)
    for text, says in (("[biased_running_var, biased_var]", "unknown diagnosis 'biased_var'"),
                       ("[]", "a list of diagnoses names each deviation once, and at least one"),
                       ("[eps_omitted, eps_omitted]", "a list of diagnoses names each deviation once")):
        bad = write_spec(tmp_path, "bad.yaml", f"expected:\n  - case: x\n    reason: r\n    diagnosis: {text}\n")
        proc, _ = bnconform("--backend", "numpy", "--manifest", str(bad), out=tmp_path / "out3")
        assert proc.returncode == 2 and "bad.yaml: expected.0.diagnosis" in proc.stderr and says in proc.stderr, proc.stderr


def test_check_and_run_apply_a_shipped_manifest_alike(tmp_path: Path) -> None:
    """The same backend, shipping a manifest of its one bug: run and check give one verdict."""
    args = ("--backend", "tests.broken_backends:ships_manifest", "--family", "bessel", "--family", "conditions", "--strict")
    run, report = bnconform(*args, out=tmp_path / "run")
    check = subprocess.run([sys.executable, "-m", "bnconform", "check", *args, "--out", str(tmp_path / "check")],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and check.returncode == 0, check.stdout[-2000:]
    assert set(outcomes(report, "tests.broken_backends:ships_manifest").values()) == {"passed", "xfailed"}
    assert "| bessel     |      16 | pass (0 of 16, 16 xfailed) |" in check.stdout
    assert "| conditions |      29 | pass (22 of 29, 7 xfailed) |" in check.stdout


@pytest.mark.parametrize(("entry", "outcome"), [
    ("message: 'no 3-d kernel'", "error"),  # names the words, but not that it expects an error cell
    ("diagnosis: biased_running_var", "error"),
    ("outcome: error\n    message: 'could not build the module: RuntimeError: no 3-d kernel'", "xfailed"),
])
def test_an_error_cell_is_only_expected_by_outcome_error(entry: str, outcome: str, tmp_path: Path) -> None:
    path = write_spec(tmp_path, "known.yaml", f"expected:\n  - case: 'bessel/*'\n    {entry}\n    reason: no 3-d yet\n")
    proc, report = bnconform("--backend", "b=tests.broken_backends:cannot_build_3d", "--case", "bessel/ncdhw_golden",
                             "--manifest", str(path), out=tmp_path / "out")
    (cell,) = report["results"]
    assert cell["outcome"] == outcome, cell["message"]
    assert proc.returncode == (1 if outcome == "error" else 0)


def test_an_entry_that_excused_nothing_is_warned_about(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "m.yaml", "expected:\n"
                      "  - case: 'bessel/*'\n    diagnosis: eps_outside_sqrt\n    reason: the wrong bug named\n"
                      "  - case: 'bessel/*'\n    diagnosis: biased_running_var\n    reason: the right one\n")
    proc, report = bnconform("--backend", "mutant:biased_running_var", "--family", "bessel", "--manifest", str(path),
                             out=tmp_path / "out")
    assert proc.returncode == 0 and set(outcomes(report, "mutant:biased_running_var").values()) == {"xfailed"}
    assert (f"warning: manifest {path}: entry 'bessel/*' (backend '*', expects diagnosis eps_outside_sqrt) "
            "excused none of the 16 cells it names") in proc.stdout
    assert "expects diagnosis biased_running_var" not in proc.stdout


def test_a_manifest_for_one_bug_does_not_hide_a_second_that_shows_later_in_the_case(tmp_path: Path) -> None:
    """The flip-ignored bug alone fails 7 toggling cells; beside the declared biased variance its
    failures come after the first failing step, which shows only the declared bug."""
    path = write_spec(tmp_path, "known.yaml",
                      "expected:\n  - case: '*'\n    diagnosis: biased_running_var\n    reason: biased on purpose\n")
    proc, report = bnconform("--backend", "b=tests.broken_backends:biased_flip_ignored", "--family", "toggling",
                             "--manifest", str(path), out=tmp_path / "out")
    assert proc.returncode == 1
    failed = {r["spec"]: r["message"] for r in report["results"] if r["outcome"] == "failed"}
    assert {s for s in failed if s.startswith("toggling/flip_")} and all(s.startswith("toggling/flip") for s in failed)
    assert all("with biased_running_var switched on, the case still fails: " in m for m in failed.values())
    assert "xfailed" in outcomes(report, "b").values()  # where only the declared bug shows, it is excused


def test_a_star_entry_for_the_one_bug_a_backend_has_is_clean_under_strict(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "known.yaml",
                      "expected:\n  - case: '*'\n    diagnosis: biased_running_var\n    reason: biased on purpose\n")
    proc, report = bnconform("--backend", "b=mutant:biased_running_var", "--manifest", str(path), "--strict",
                             *FIRST_18, out=tmp_path / "out")
    assert proc.returncode == 0, proc.stdout[-3000:]
    # passed, xfailed, and skipped only where numpy declares no double backward
    assert set(outcomes(report, "b").values()) == {"passed", "xfailed", "skipped"}
    assert all("does not declare: double_backward" in r["message"] for r in report["results"] if r["outcome"] == "skipped")
