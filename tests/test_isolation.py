"""A run survives its backends: each broken plugin backend, beside torch, costs only its own cells.

Every test drives `bnconform run` in a fresh process, as a CI job would, and reads the
report it wrote: exit 1, torch's cells all passed, every broken cell `error` with what
happened and where, and every selected cell present, in-process and with pytest-xdist.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, bnconform, ctrl_c_reaches

CASES = ("--case", "bessel/n*_golden")  # nc, ncl, nchw, ncdhw: one forward each
N_CASES = 4
BROKEN = {
    # name: (--backend values beside torch, extra options, the broken column, what its cells must say)
    "segfault": (["tests.broken_backends:segfault"], [], "tests.broken_backends:segfault",
                 "worker crashed: signal 11 (SIGSEGV) during step 1 (forward)"),
    "os._exit(0)": (["tests.broken_backends:exit_zero"], [], "tests.broken_backends:exit_zero",
                    "worker exited with status 0 without answering (sys.exit/os._exit in the backend?) during step 1"),
    "SystemExit": (["tests.broken_backends:system_exit"], [], "tests.broken_backends:system_exit",
                   "backend raised SystemExit: 3 during step 1 (forward)"),
    "KeyboardInterrupt": (["tests.broken_backends:keyboard_interrupt"], [], "tests.broken_backends:keyboard_interrupt",
                          "backend raised KeyboardInterrupt during step 1 (forward)"),
    "hang": (["tests.broken_backends:hangs"], ["--timeout", "3"], "tests.broken_backends:hangs",
             "timed out after 3 s in step 1 (forward)"),
}
# A backend that breaks the protocol, or a column name taken twice, is refused before any case
# runs (exit 2): tests/test_gate.py.


@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_backend_costs_only_its_own_cells(kind: str, workers: str, tmp_path: Path) -> None:
    extra_backends, extra, column, reason = BROKEN[kind]
    args = ["--backend", "torch"] + [a for b in extra_backends for a in ("--backend", b)]
    proc, report = bnconform(*args, *CASES, *extra, "-n", workers, out=tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report is not None and not report["interrupted"]
    cells = report["results"]
    assert len(cells) == 2 * N_CASES  # complete: every selected case on both columns
    assert [r["outcome"] for r in cells if r["backend"] == "torch"] == ["passed"] * N_CASES
    broken = [r for r in cells if r["backend"] == column]
    assert len(broken) == N_CASES
    for r in broken:
        assert r["outcome"] == "error" and reason in r["message"], r["message"]
    assert "-> FAILED" in proc.stdout


def test_crash_reports_the_python_stack_of_the_fault(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "tests.broken_backends:segfault", "--case", "bessel/nc_golden", out=tmp_path)
    assert proc.returncode == 1 and report is not None
    message = report["results"][0]["message"]
    assert "Fatal Python error: Segmentation fault" in message and "in act" in message


def test_backend_stderr_goes_to_its_log_and_into_the_crash_report(tmp_path: Path) -> None:
    """What a backend writes to fd 2 (TensorFlow's start-up notes, say) stays off the user's
    terminal, and is shown with the crash it came before."""
    proc, report = bnconform("--backend", "tests.broken_backends:noisy_then_segfault", "--case", "bessel/nc_golden",
                             out=tmp_path)
    assert report is not None, proc.stderr
    running = proc.stdout.split("bnconform conformance")[0]  # before the summary, which reports the crash
    assert "noisy backend" not in proc.stderr + running
    message = report["results"][0]["message"]
    assert "noisy backend: a C++ warning on fd 2" in message and "Fatal Python error: Segmentation fault" in message


def test_backend_state_changes_do_not_reach_other_backends(tmp_path: Path) -> None:
    """A backend that sets numpy's error state, torch's default dtype, threads, grad mode and seeds
    runs beside torch and numpy, whose cells (gradients included) all still pass."""
    proc, report = bnconform("--backend", "tests.broken_backends:pollutes", "--backend", "torch", "--backend", "numpy",
                             "--family", "gradients", "--family", "stability", out=tmp_path)
    assert report is not None, proc.stderr
    for name in ("torch", "numpy"):
        outcomes = {r["outcome"] for r in report["results"] if r["backend"] == name}
        assert outcomes == {"passed"}, (name, outcomes)


def _run_in_background(out: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bnconform", "run", "--out", str(out), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=ctrl_c_reaches)


def _wait_until(predicate, seconds: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_writes_a_complete_report_marked_interrupted(sig: signal.Signals, tmp_path: Path) -> None:
    stale = tmp_path / "conformance.json"
    stale.write_text('{"stale": true}')
    proc = _run_in_background(tmp_path, "--backend", "torch", "--backend", "tests.broken_backends:slow",
                              "--family", "bessel")
    _wait_until(lambda: not stale.exists(), 60)  # the run started: it removed the older report first
    time.sleep(2.0)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, output[-3000:]
    report = json.loads(stale.read_text())
    assert report["interrupted"] is True
    assert len(report["results"]) == 2 * 16  # every selected cell is there
    not_run = [r for r in report["results"] if r["message"].startswith("not run: the run was interrupted")]
    assert not_run and all(r["outcome"] == "error" for r in not_run)
    assert "-> INTERRUPTED" in output


def test_a_run_that_dies_leaves_no_older_report_behind(tmp_path: Path) -> None:
    for name in ("conformance.json", "conformance.md"):
        (tmp_path / name).write_text("from an earlier run")
    proc = _run_in_background(tmp_path, "--backend", "tests.broken_backends:slow", "--family", "bessel")
    _wait_until(lambda: not (tmp_path / "conformance.json").exists(), 60)
    proc.kill()
    proc.communicate(timeout=60)
    assert not (tmp_path / "conformance.json").exists() and not (tmp_path / "conformance.md").exists()


def test_unusable_out_is_refused_before_any_case_runs(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    for out, says in ((a_file, "exists and is not a directory"), (a_file / "below", "cannot write reports there")):
        start = time.monotonic()
        proc, report = bnconform("--backend", "tests.broken_backends:hangs", out=out)
        assert proc.returncode == 2 and report is None
        assert f"bnconform: --out {out}: {says}" in proc.stderr
        assert time.monotonic() - start < 60  # refused up front, not after hanging cases
