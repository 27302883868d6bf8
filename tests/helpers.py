"""Shared helpers for the suite's own tests."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Optional

from bnconform.cases.loader import BUILTIN_SPECS, load_cases
from bnconform.cases.model import Case

ROOT = Path(__file__).resolve().parent.parent

# The shapes library's families (specs/19-shapes.yaml, specs/20-magnitudes.yaml).
SHAPE_FAMILIES = ("shapes", "magnitudes")
# The first eighteen families, for the tests of a whole run (reports, plugins, adapters, baseline
# comparison): the shapes library's large tensors add nothing to what those tests check, and the
# conformance cells and the mutation tests run them already.
FIRST_18 = tuple(arg for family in SHAPE_FAMILIES for arg in ("--exclude", f"{family}/*"))


def default_cases(families: Optional[Iterable[str]] = None) -> list[Case]:
    """The built-in cases a run selects without --tier full (of these families, or all)."""
    return [c for c in load_cases([BUILTIN_SPECS], families) if c.tier == "default"]


def bnconform(*args: str, out: Path, timeout: int = 600) -> tuple[subprocess.CompletedProcess, dict | None]:
    """Run `bnconform run ...` as a user would (a fresh process from the repository root, so that
    `--backend tests.broken_backends:NAME` resolves)."""
    proc = subprocess.run(
        [sys.executable, "-m", "bnconform", "run", "--out", str(out), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
    report = out / "conformance.json"
    return proc, json.loads(report.read_text()) if report.exists() else None


def ctrl_c_reaches() -> None:
    """preexec_fn for a process a test interrupts with SIGINT: the default disposition, as under a
    terminal. A shell starting a job in the background (`make test &`, a CI runner's script without
    job control) starts it with SIGINT ignored, every process below inherits that, and Python then
    never raises KeyboardInterrupt: the run would rightly go on."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def write_spec(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path
