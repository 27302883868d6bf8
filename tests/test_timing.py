"""The timing report: both comparisons per cell, intervals and verdicts, the roofline, the
machine's state, no project targets; the kernel comparison is blind to allocation."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bnconform.runners.bench.intervals import paired_ratio, verdict
from bnconform.runners.reports.timing import markdown, metadata, table
from tests.helpers import ROOT


def bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "bnconform", "bench", "--out", str(tmp_path), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((tmp_path / "timing.json").read_text())


def test_bench_writes_both_comparisons_intervals_and_the_roofline(tmp_path: Path) -> None:
    data = bench(tmp_path, "--shape", "4x8x4x4", "--max-time", "0.05")
    b = data["bnconform"]
    assert all("data" in e["stats"] and e["stats"]["rounds"] >= 5 for e in data["benchmarks"])  # every round kept
    assert {e["extra_info"]["mode"] for e in data["benchmarks"]} == {"kernel", "as_called"}
    machine = b["metadata"]["machine"]
    assert machine["cpu_count"] >= 1 and machine["load_before"] >= 0 and isinstance(machine["busy"], bool)
    roof = b["roofline"]
    assert set(roof["kernels"]) == {"sum", "dot", "fill", "copy", "scale", "add", "triad"}
    assert all(k["gbs"] > 0 for k in roof["kernels"].values()) and roof["isa"] in ("portable", "avx2", "avx512")
    assert {roof["kernels"][k]["stores"] for k in ("fill", "copy", "scale", "add", "triad")} <= {"plain", "streaming"}
    rows = b["table"]
    assert {(r["backend"], r["phase"]) for r in rows} == {(x, p) for x in ("torch", "numpy", "cffi")
                                                          for p in ("train_fwd", "eval_fwd", "train_fwd_bwd")}
    for r in rows:
        for mode in ("kernel", "as_called"):
            m = r[mode]
            assert m["median_s"] > 0 and m["pct_of_bound"] > 0
            assert 0 < m["compulsory_bound_s"] < m["bound_s"] or r["phase"] == "eval_fwd"
            assert m["cache_resident"] or m["pct_of_bound"] <= 100.0  # nothing beats a bound unflagged
            if r["backend"] != "torch":
                lo, hi = m["interval"]
                assert lo <= m["ratio_to_torch"] <= hi and m["verdict"] == verdict(lo, hi)
    md = (tmp_path / "timing.md").read_text()
    assert "Verdicts against torch (kernel against kernel)" in md and "Roofline (same run" in md
    assert "Target" not in md and "MET" not in md  # no project targets in a user's report


def test_the_kernel_comparison_does_not_see_an_allocation_the_module_makes(tmp_path: Path) -> None:
    data = bench(tmp_path, "--backend", "numpy", "--backend", "tests.broken_backends:allocates_per_call",
                 "--shape", "256x1024", "--max-time", "0.2")
    rows = {(r["backend"], r["phase"]): r for r in data["bnconform"]["table"]}
    for phase in ("train_fwd", "eval_fwd", "train_fwd_bwd"):
        plain, alloc = rows[("numpy", phase)], rows[("tests.broken_backends:allocates_per_call", phase)]
        # 256 MB page-faulted per call against a 1 MB kernel: far slower as called ...
        assert alloc["as_called"]["median_s"] > 5 * plain["as_called"]["median_s"], phase
        # ... and the same kernel, interleaved with it, when compared kernel against kernel
        assert 0.5 < alloc["kernel"]["median_s"] / plain["kernel"]["median_s"] < 2.0, phase


def test_a_ratio_interval_and_its_verdict() -> None:
    torch_rounds = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1.02, 0.98]
    faster = paired_ratio([0.5 * t for t in torch_rounds], torch_rounds)
    assert faster[0] == 0.5 and faster[1] <= 0.5 <= faster[2] and verdict(*faster[1:]) == "faster"
    same = paired_ratio([1.2, 0.8, 1.1, 0.9, 1.0, 1.15, 0.85, 1.0], torch_rounds)
    assert same[1] < 1.0 < same[2] and verdict(*same[1:]) == "no clear difference"
    assert verdict(1.1, 1.3) == "slower"


def _records(load: float) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    # STREAM kernels at 0.1 ns per byte of x each (10 GB/s of x: numbers that keep the arithmetic plain)
    kern = {k: {"best_s": 0.0268, "gbs": 10.0, "s_per_byte": 0.1e-9} for k in ("sum", "dot", "scale", "triad")}
    roof = {"kind": "roofline", "threads": 2, "buffer_bytes": 256 << 20, "cache_bytes": 1 << 20, "isa": "avx2",
            "kernels": kern}
    stats = lambda t: {"median": t, "min": t, "max": t, "rounds": 5, "loops": 1, "data": [t] * 5}
    # 40 MB x, train_fwd: compulsory = scale: 40e6 B * 0.1 ns/B = 4 ms; algorithmic = sum + scale = 8 ms; cffi's 10 ms = 80%
    cell = {"kind": "cell", "shape": "big", "phase": "train_fwd", "bytes_read": 40e6, "bytes_written": 40e6,
            "tensor_bytes": 40e6, "skipped": {},
            "results": {"torch|kernel": stats(0.016), "cffi|kernel": stats(0.010), "torch|as_called": stats(0.025),
                        "cffi|as_called": stats(0.0105)}}
    machine = {"cpu_count": 2, "load_before": load, "load_after": 0.5}
    rows, roofline = table([roof, cell], ["torch", "cffi"])
    return metadata(2, ["torch", "cffi"], machine), rows, roofline or {}


def test_roofline_share_and_a_busy_machine_are_stated() -> None:
    meta, rows, roof = _records(load=3.5)
    cffi = next(r for r in rows if r["backend"] == "cffi")
    assert abs(cffi["kernel"]["pct_of_bound"] - 80.0) < 1e-9 and not cffi["kernel"]["cache_resident"]
    assert abs(cffi["kernel"]["compulsory_bound_s"] - 0.004) < 1e-12 and abs(cffi["kernel"]["pct_of_compulsory"] - 40.0) < 1e-9
    assert abs(cffi["kernel"]["ratio_to_torch"] - 0.625) < 1e-12 and cffi["kernel"]["verdict"] == "faster"
    assert abs(cffi["as_called_over_kernel"] - 1.05) < 1e-12
    md = markdown(meta, rows, roof)
    assert "The machine was busy (load above its 2 CPUs)" in md and "80%" in md
    idle_meta, rows, roof = _records(load=0.3)
    assert "busy" not in markdown(idle_meta, rows, roof).lower()


def test_a_backend_that_raises_costs_only_its_own_cells(tmp_path: Path) -> None:
    data = bench(tmp_path, "--backend", "numpy", "--backend", "tests.broken_backends:system_exit",
                 "--shape", "4x8x4x4", "--max-time", "0.02")
    rows = {(r["backend"], r["phase"]): r for r in data["bnconform"]["table"]}
    for phase in ("train_fwd", "eval_fwd", "train_fwd_bwd"):
        broken = rows[("tests.broken_backends:system_exit", phase)]
        assert broken["as_called"] is None and broken["as_called_skipped"].startswith("raised SystemExit")
        assert rows[("numpy", phase)]["as_called"]["median_s"] > 0 and rows[("torch", phase)]["kernel"]["median_s"] > 0
    assert "skipped: raised SystemExit" in (tmp_path / "timing.md").read_text()


def _kernel_callables() -> list[tuple[str, str, str]]:
    return [(b, p, v) for b in ("numpy", "cffi") for p in ("train_fwd", "eval_fwd", "train_fwd_bwd")
            for v in ("float32", "channels_last", "float16", "bfloat16")]


def test_kernel_callables_allocate_no_output_per_call() -> None:
    """numpy and cffi in the kernel comparison: after the warm-up, a call allocates nothing of
    x's size (its outputs come back from the recycler); counted by tracemalloc, not timed."""
    import tracemalloc

    from bnconform.runners.bench.workloads import callable_for

    shape = (16, 32, 28, 28)
    checked = 0
    for backend, phase, variant in _kernel_callables():
        fn, why = callable_for(backend, shape, phase, "kernel", variant)
        if fn is None:
            assert why and "has no" in why  # numpy's kernel: no native 16-bit or channels_last path
            continue
        fn()
        fn()
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        x_bytes = 2 * 16 * 32 * 28 * 28 if variant in ("float16", "bfloat16") else 4 * 16 * 32 * 28 * 28
        assert peak < x_bytes, (backend, phase, variant, peak, x_bytes)
        checked += 1
    assert checked == 15  # cffi: all 12; numpy: float32 only
