"""The timing report: pytest-benchmark runs, both files are written, targets are judged."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bnconform.runners.reports.timing import rows, targets
from tests.helpers import ROOT


def test_bench_writes_json_and_markdown(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bnconform", "bench", "--shape", "4x8x4x4", "--max-time", "0.01", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "timing.json").read_text())
    assert "benchmarks" in data and "machine_info" in data  # pytest-benchmark's own JSON
    meta = data["bnconform"]["metadata"]
    assert meta["threads"] >= 1 and meta["cpu_model"] and meta["packages"]["torch"].startswith("2.13.0")
    table = data["bnconform"]["table"]
    assert {r["backend"] for r in table} >= {"torch", "numpy"}
    assert {r["phase"] for r in table} == {"train_fwd", "eval_fwd", "train_fwd_bwd"}
    assert all(r["ratio_to_torch"] > 0 and r["gbs"] > 0 for r in table)
    assert data["bnconform"]["copy_gbs"] > 0
    md = (tmp_path / "timing.md").read_text()
    assert "threads for every backend" in md and "## Targets" in md and "ratio to torch" in md


def _bench(cells: list[tuple[str, str, str, float]], copy_s: float) -> dict:
    out = [{"extra_info": {"backend": "copy", "shape": "", "phase": "copy", "bytes": 2e9},
            "stats": {"median": copy_s, "min": copy_s, "max": copy_s, "rounds": 5}}]
    for backend, shape, phase, median in cells:
        out.append({"extra_info": {"backend": backend, "shape": shape, "phase": phase, "bytes": 1e9},
                    "stats": {"median": median, "min": median, "max": median, "rounds": 5}})
    return {"benchmarks": out}


def test_targets_are_judged_from_ratios() -> None:
    cells = []
    for shape in ("32x256x14x14", "32x64x56x56", "32x64x112x112"):
        cells += [("torch", shape, "train_fwd", 1.0), ("cffi", shape, "train_fwd", 0.5), ("numpy", shape, "train_fwd", 2.0)]
    table, copy_gbs = rows(_bench(cells, copy_s=0.1))  # copy: 20 GB/s
    verdicts = {t[0].split(" ")[0] + str(i): t[1] for i, t in enumerate(targets(table, copy_gbs))}
    assert list(verdicts.values()) == ["MET", "MET", "MISSED", "MET"]  # cffi 2 GB/s is 10% of copy
    slow = cells + [("torch", "4x8x4x4", "eval_fwd", 1.0), ("cffi", "4x8x4x4", "eval_fwd", 1.2),
                    ("numpy", "4x8x4x4", "eval_fwd", 3.5)]
    table, copy_gbs = rows(_bench(slow, copy_s=0.1))
    result = targets(table, copy_gbs)
    assert result[0][1] == "MISSED" and "4x8x4x4 eval_fwd" in result[0][2]
    assert result[3][1].startswith("MISSED on 1")
