"""How long bnconform takes to start and to run, beside `python -c "import torch"` on the same machine.

A benchmark, not a test: it times whole commands as a user types them (fresh processes, from the
repository root, reports to a temporary directory), takes the median of several runs for the
short ones (run in turn with what they are compared with), and prints each figure with its
ratio to torch's import time measured in the same run, against the target the light-and-fast
work set. Run it on an idle machine:

    python benchmarks/startup.py                 # everything (the matrix and mutants take minutes)
    python benchmarks/startup.py --quick         # start-up, one case, one family only
    python benchmarks/startup.py --markdown      # the table as Markdown (the README's)

The load average before and after is printed: a loaded machine makes every figure slower.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


@dataclass
class Figure:
    name: str
    seconds: float
    runs: int
    target: str  # what it should be, in words
    met: Optional[bool]  # None: no target of its own (a reference)
    note: str = ""


def _time(argv: list[str], runs: int, cwd: Path = ROOT, check: bool = True) -> float:
    """Median wall time of `runs` fresh runs of a command (stdout and stderr discarded)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - start)
        if check and proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return statistics.median(times)


def _interleaved(commands: list[list[str]], runs: int, cwd: Path = ROOT) -> list[float]:
    """Median wall times of commands run in turn, round after round: a machine that slows down
    or speeds up during the benchmark affects each of them alike (the ratios are what count)."""
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for i, argv in enumerate(commands):
            times[i].append(_time(argv, 1, cwd=cwd))
    return [statistics.median(t) for t in times]


def _plugin_import_ms() -> float:
    """Cumulative import time of the pytest11 entry module, pytest itself already imported (as it
    is in every pytest session that loads the plugin), from `python -X importtime`."""
    proc = subprocess.run([PY, "-X", "importtime", "-c", "import pytest; import bnconform.runners.engine.plugin"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    for line in proc.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == "bnconform.runners.engine.plugin":
            return int(parts[1]) / 1000
    raise SystemExit("no import time for bnconform.runners.engine.plugin")


def _bnconform(out: Path, *args: str) -> list[str]:
    return [PY, "-m", "bnconform", *args, "--out", str(out), "--progress", "off"]


def measure(quick: bool, runs: int) -> tuple[list[Figure], dict[str, float]]:
    figures: list[Figure] = []
    load = {"before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out = work / "reports"
        one_case = _bnconform(out, "run", "--backend", "torch", "--case", "bessel/nc_golden")
        torch_s, one = _interleaved([[PY, "-c", "import torch"], one_case], runs)
        figures.append(Figure('python -c "import torch"', torch_s, runs, "reference", None))

        (work / "test_empty.py").write_text("def test_nothing():\n    pass\n", encoding="utf-8")
        session = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_empty.py"]
        # Under a second each, 5% of it is well inside one run's noise: five times the runs.
        with_s, without_s = _interleaved([session, session[:3] + ["-p", "no:bnconform"] + session[3:]], 5 * runs,
                                         cwd=work)
        ratio = with_s / without_s
        figures.append(Figure("pytest session, one empty test, bnconform installed", with_s, 5 * runs,
                              "within 5% of the session without it", ratio <= 1.05,
                              f"{ratio:.3f}x the session without bnconform ({without_s:.2f} s)"))
        ms = _plugin_import_ms()
        figures.append(Figure("import of the pytest11 entry module (ms, -X importtime)", ms / 1000, 1, "under 50 ms",
                              ms < 50, f"{ms:.1f} ms"))

        figures.append(Figure("bnconform run --backend torch --case bessel/nc_golden", one, runs,
                              "within about 2 s of import torch", one - torch_s <= 2.0, f"+{one - torch_s:.2f} s"))
        family = _time(_bnconform(out, "run", "--backend", "torch", "--family", "bessel"), runs)
        figures.append(Figure("bnconform run --backend torch --family bessel (16 cells)", family, runs, "", None))
        if not quick:
            first18 = ["--exclude", "shapes/*", "--exclude", "magnitudes/*"]
            for label, extra in (("", []), (", -n 2", ["-n", "2"])):
                matrix = _time(_bnconform(out, "run", *first18, *extra), 1)
                figures.append(Figure(f"bnconform run{label}: first 18 families (869 cases x 3)", matrix, 1,
                                      "under 10 s", matrix < 10, f"{matrix / 10:.1f}x the target"))
                whole = _time(_bnconform(out, "run", *extra), 1)
                figures.append(Figure(f"bnconform run{label}: whole default tier (1817 cases x 3)", whole, 1,
                                      "", None))
            mutants = _time(_bnconform(out, "mutants", *first18), 1, check=False)  # exit 1: a mutant survived
            figures.append(Figure("bnconform mutants: whole corpus, first 18 families", mutants, 1, "under 60 s",
                                  mutants < 60, f"{mutants / 60:.1f}x the target"))
    load["after"] = os.getloadavg()[0]
    return figures, load


def table(figures: list[Figure], markdown: bool) -> str:
    torch_s = figures[0].seconds
    verdict: Callable[[Optional[bool]], str] = lambda met: "" if met is None else ("met" if met else "missed")
    rows = [[f.name, f"{f.seconds:.2f}", f"{f.seconds / torch_s:.2f}", f.runs, f.target, verdict(f.met), f.note]
            for f in figures]
    headers = ["what", "seconds", "x import torch", "runs (median)", "target", "", "note"]
    return tabulate(rows, headers, tablefmt="github" if markdown else "simple")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, {platform.platform()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="start-up, one case and one family only")
    parser.add_argument("--runs", type=int, default=5, help="runs per short command (median)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    figures, load = measure(args.quick, args.runs)
    print(f"machine: {machine()}; load average {load['before']:.2f} before, {load['after']:.2f} after")
    print(table(figures, args.markdown))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "load": load,
                                               "figures": [f.__dict__ for f in figures]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
