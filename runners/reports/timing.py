"""timing.json and timing.md from the bench records: per cell and backend both comparisons
(kernel against kernel, and as called), each ratio to torch with its 95% interval and verdict,
the cell's share of the measured roofline, and the state of the machine while it ran.

The report judges the backends against torch and against the roofline; it carries no targets
of this project's own.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Optional

from tabulate import tabulate

from bnconform.cases.loader import BUILTIN_SPECS, spec_files
from bnconform.runners.bench.intervals import paired_ratio, verdict
from bnconform.runners.bench.roofline import ALGORITHMIC, COMPULSORY, bounds_s
from bnconform.runners.bench.workloads import MODES, PHASES, TOUCHED, TRAFFIC
from bnconform.runners.reports.metadata import run_metadata

REFERENCE = "torch"


def metadata(threads: int, backends: list[str], machine: dict[str, Any]) -> dict[str, Any]:
    # Others' load: the average before the run, and after it less the bench's own threads.
    busy = max(machine["load_before"], machine["load_after"] - threads) > machine["cpu_count"]
    return {
        **run_metadata(spec_files([BUILTIN_SPECS]), thread_count=threads),
        "backends": backends,
        "traffic_model": {p: f"{r} tensor reads + {w} tensor writes" for p, (r, w) in TRAFFIC.items()},
        "machine": {**machine, "busy": busy},
    }


def _mode_row(cell: dict[str, Any], backend: str, mode: str, roof: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    stats = cell["results"].get(f"{backend}|{mode}")
    if stats is None:
        return None
    row: dict[str, Any] = {"median_s": stats["median"], "min_s": stats["min"], "max_s": stats["max"],
                           "rounds": stats["rounds"], "loops": stats["loops"],
                           "gbs": (cell["bytes_read"] + cell["bytes_written"]) / stats["median"] / 1e9}
    ref = cell["results"].get(f"{REFERENCE}|{mode}")
    if ref is not None and backend != REFERENCE:
        ratio, lo, hi = paired_ratio(stats["data"], ref["data"])
        row.update(ratio_to_torch=ratio, interval=[lo, hi], verdict=verdict(lo, hi))
    if roof:
        compulsory, algorithmic = bounds_s(roof, cell["phase"], cell["tensor_bytes"])
        pct = 100.0 * algorithmic / stats["median"]
        touched = TOUCHED[cell["phase"]] * cell["tensor_bytes"]
        fits = roof.get("cache_bytes") is not None and touched <= roof["cache_bytes"]
        row.update(compulsory_bound_s=compulsory, bound_s=algorithmic, pct_of_bound=pct,
                   pct_of_compulsory=100.0 * compulsory / stats["median"], cache_resident=fits or pct > 100.0)
    return row


def table(records: list[dict[str, Any]], backends: list[str]) -> tuple[list[dict[str, Any]], Optional[dict[str, Any]]]:
    """One row per backend x shape x phase holding both modes; and the roofline record."""
    roof = next((r for r in records if r["kind"] == "roofline" and "kernels" in r), None)
    rows = []
    for cell in (r for r in records if r["kind"] == "cell"):
        for backend in backends:
            row: dict[str, Any] = {"backend": backend, "shape": cell["shape"], "phase": cell["phase"],
                                   "bytes_read": cell["bytes_read"], "bytes_written": cell["bytes_written"]}
            for mode in MODES:
                row[mode] = _mode_row(cell, backend, mode, roof)
                row[f"{mode}_skipped"] = cell["skipped"].get(f"{backend}|{mode}")
            if row["kernel"] and row["as_called"]:
                row["as_called_over_kernel"] = row["as_called"]["median_s"] / row["kernel"]["median_s"]
            rows.append(row)
    return rows, roof


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per backend: how many cells it is faster / no clearly different / slower than torch, kernel
    against kernel, and its share of the roofline on the cells that stream from memory."""
    out = []
    for backend in dict.fromkeys(r["backend"] for r in rows):
        if backend == REFERENCE:
            continue
        kern = [r["kernel"] for r in rows if r["backend"] == backend and r["kernel"] and "verdict" in r["kernel"]]
        streaming = [r["kernel"]["pct_of_bound"] for r in rows if r["backend"] == backend and r["kernel"]
                     and "pct_of_bound" in r["kernel"] and not r["kernel"]["cache_resident"]]
        out.append({"backend": backend, "cells": len(kern),
                    **{v: sum(k["verdict"] == v for k in kern) for v in ("faster", "no clear difference", "slower")},
                    "roofline_median_pct": statistics.median(streaming) if streaming else None,
                    "roofline_min_pct": min(streaming) if streaming else None})
    return out


def _ratio(m: Optional[dict[str, Any]]) -> str:
    if not m or "ratio_to_torch" not in m:
        return ""
    lo, hi = m["interval"]
    return f"{m['ratio_to_torch']:.2f} [{lo:.2f}, {hi:.2f}] {m['verdict']}"


def _roof(m: Optional[dict[str, Any]]) -> str:
    if not m or "pct_of_bound" not in m:
        return ""
    return f"cache-resident ({m['pct_of_bound']:.0f}%)" if m["cache_resident"] else f"{m['pct_of_bound']:.0f}%"


def _bounds(m: Optional[dict[str, Any]]) -> str:
    if not m or "bound_s" not in m:
        return ""
    return f"{m['compulsory_bound_s'] * 1e3:.3f} / {m['bound_s'] * 1e3:.3f}"


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]], roof: Optional[dict[str, Any]]) -> str:
    mach = meta["machine"]
    lines = [
        "# BatchNorm timing",
        "",
        f"bnconform {meta['suite_version']} ({meta['git_commit'][:12]}), {meta['date']}; CPU: {meta['cpu_model']} "
        f"({mach['cpu_count']} logical CPUs); **{meta['threads']} threads for every backend** "
        "(torch intra-op threads, the C kernel's OpenMP team, NumPy's chunks). float32 NCHW unless a cell's "
        "name says /channels_last, /float16 or /bfloat16. Packages: "
        + ", ".join(f"{k} {v}" for k, v in meta["packages"].items()) + ".",
        "",
        f"Load average (1 min) {mach['load_before']:.2f} before, {mach['load_after']:.2f} after (its own "
        f"{meta['threads']} threads included).",
        "",
    ]
    if mach["busy"]:
        lines += [f"**The machine was busy (load above its {mach['cpu_count']} CPUs): these figures are unreliable; "
                  "run again on an idle machine.**", ""]
    lines += roofline_lines(roof, meta.get("roofline_unavailable"))
    lines += [
        "Two comparisons per cell. **Kernel**: every backend writes into outputs allocated once (torch through "
        "`native_batch_norm.out` and `native_batch_norm_backward.out`, a KernelModule backend through its "
        "kernel's functions on recycled outputs). **As called**: the module as its users call it, its "
        "allocations included; torch's module allocates a new output per call, page faults and all. "
        "torch's backward has no true out kernel (native_batch_norm_backward.out computes into temporaries and "
        "copies them), so its train_fwd_bwd kernel cells still include those allocations. "
        "The headline is kernel against kernel; as called / kernel shows what the allocations cost.",
        "",
        "Ratio = the backend's median time / torch's in the same mode, rounds interleaved (each round times every "
        "backend once, in a shuffled order); [95% interval] from a bootstrap over the paired rounds. An interval "
        "that spans 1.0 reads *no clear difference*. Bounds (ms) = compulsory / algorithmic: the STREAM "
        "kernels' times for the phase's traffic, scaled to the cell's bytes (compulsory: "
        + "; ".join(f"{p}: {' + '.join(k)}" for p, k in COMPULSORY.items()) + "; algorithmic, the passes a "
        "kernel normalising by batch statistics needs beyond the cache: "
        + "; ".join(f"{p}: {' + '.join(k)}" for p, k in ALGORITHMIC.items()) + "). % of bound = the algorithmic "
        "bound / the median. "
        "A cell whose data (x and y; with dy and dx in train_fwd_bwd) fits the last-level cache"
        + (f" ({roof['cache_bytes'] >> 20} MB here)" if roof and roof.get("cache_bytes") else "")
        + ", or that beats the memory bound, is *cache-resident*: its percentage is shown but bounds nothing, "
        "and the verdicts below leave it out.",
        "",
        "## Verdicts against torch (kernel against kernel)",
        "",
    ]
    summary = verdicts(rows)
    if summary:
        lines += [tabulate([[v["backend"], v["cells"], v["faster"], v["no clear difference"], v["slower"],
                             "" if v["roofline_median_pct"] is None else f"{v['roofline_median_pct']:.0f}%",
                             "" if v["roofline_min_pct"] is None else f"{v['roofline_min_pct']:.0f}%"]
                            for v in summary],
                           headers=["backend", "cells", "faster", "no clear difference", "slower",
                                    "median % of bound", "lowest % of bound"], tablefmt="github"), ""]
    else:
        lines += ["No backend beside torch was timed.", ""]
    for phase in PHASES:
        body = [cell_values(row) for row in rows if row["phase"] == phase]  # in the timing set's order
        if body:
            lines += [f"## {phase}", "", tabulate(body, headers=CELL_HEADERS, tablefmt="github"), ""]
    return "\n".join(lines)


CELL_HEADERS = ["shape", "backend", "kernel ms (rounds)", "kernel ratio to torch [95%]", "kernel GB/s",
                "bounds ms", "% of bound", "as called ms (rounds)", "as called ratio to torch [95%]",
                "as called / kernel"]


def _ms(m: Optional[dict[str, Any]], skipped: Optional[str]) -> str:
    if m:
        return f"{m['median_s'] * 1e3:.3f} ({m['rounds']})"
    return f"skipped: {skipped}" if skipped else "not timed"


def cell_values(row: dict[str, Any]) -> list[str]:
    """One cell's columns (CELL_HEADERS), for timing.md and timing.html alike."""
    k, a = row.get("kernel"), row.get("as_called")
    return [
        row["shape"], row["backend"],
        _ms(k, row.get("kernel_skipped")),
        _ratio(k), f"{k['gbs']:.1f}" if k else "", _bounds(k), _roof(k),
        _ms(a, row.get("as_called_skipped")),
        _ratio(a), f"{row['as_called_over_kernel']:.2f}" if row.get("as_called_over_kernel") else "",
    ]


def sweep(records: list[dict[str, Any]], roof: Optional[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The --sweep points: per backend, phase and size (or thread count), the kernel's median
    time, GB/s and the roofline's least time for the same traffic."""
    out: dict[str, list[dict[str, Any]]] = {"sizes": [], "threads": []}
    for cell in records:
        if cell["kind"] not in ("sweep_size", "sweep_threads"):
            continue
        for label, stats in cell["results"].items():
            point = {"backend": label.split("|")[0], "shape": cell["shape"], "phase": cell["phase"],
                     "bytes": cell["tensor_bytes"], "median_s": stats["median"],
                     "gbs": (cell["bytes_read"] + cell["bytes_written"]) / stats["median"] / 1e9,
                     "bound_s": bounds_s(roof, cell["phase"], cell["tensor_bytes"])[1] if roof else None}
            if cell["kind"] == "sweep_size":
                out["sizes"].append(point)
            else:
                out["threads"].append({**point, "threads": cell["threads"]})
    return out


def sweep_markdown(points: dict[str, list[dict[str, Any]]]) -> str:
    """The --sweep points as tables (timing.html draws them)."""
    lines: list[str] = []
    for phase in PHASES:
        by_size = [p for p in points["sizes"] if p["phase"] == phase]
        if by_size:
            lines += ["", f"## Sweep over tensor size: {phase} (kernel)", ""]
            lines += [tabulate([[f"{p['bytes'] / 1024:.0f} KB", p["backend"], f"{p['median_s'] * 1e3:.4f}",
                                 f"{p['gbs']:.2f}", "" if p["bound_s"] is None else f"{p['bound_s'] * 1e3:.4f}"]
                                for p in by_size],
                               headers=["x", "backend", "ms", "GB/s", "bound ms"], tablefmt="github")]
        by_threads = [p for p in points["threads"] if p["phase"] == phase]
        if by_threads:
            lines += ["", f"## Sweep over threads: {phase}, {by_threads[0]['shape']} (kernel)", ""]
            lines += [tabulate([[p["threads"], p["backend"], f"{p['median_s'] * 1e3:.3f}", f"{p['gbs']:.2f}"]
                                for p in by_threads], headers=["threads", "backend", "ms", "GB/s"], tablefmt="github")]
    return "\n".join(lines) + ("\n" if lines else "")


def benchmarks(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pytest-benchmark's per-benchmark entries (name, group, extra_info, stats with every round)."""
    out = []
    for cell in (r for r in records if r["kind"] == "cell"):
        for label, stats in cell["results"].items():
            backend, mode = label.split("|")
            out.append({"name": f"{backend}-{cell['shape']}-{cell['phase']}-{mode}",
                        "group": f"{cell['shape']}-{cell['phase']}",
                        "extra_info": {"backend": backend, "shape": cell["shape"], "phase": cell["phase"],
                                       "mode": mode, "bytes_read": cell["bytes_read"],
                                       "bytes_written": cell["bytes_written"]},
                        "stats": stats})
    return out


def roofline_lines(roof: Optional[dict[str, Any]], unavailable: Optional[str]) -> list[str]:
    """The STREAM rates as timing.md states them (or why there are none)."""
    if not roof:
        return [f"No roofline: {unavailable or 'not measured'}.", ""]
    rates = ", ".join(f"{k} **{v['gbs']:.1f} GB/s**" + (f" ({v['stores']} stores)" if "stores" in v else "")
                      for k, v in roof["kernels"].items())
    return [f"Roofline (same run: STREAM kernels compiled like the C backend, {roof['isa']} instructions, "
            f"{roof['threads']} threads, {roof['buffer_bytes'] >> 20} MB float32 arrays, best round; a writing "
            f"kernel's faster of plain and streaming stores): {rates}.", ""]


def write(raw: Path, out_dir: Path, threads: int, backends: list[str], machine: dict[str, Any]) -> list[Path]:
    """timing.json (pytest-benchmark's `benchmarks` plus bnconform's table) and timing.md."""
    records = [json.loads(line) for line in Path(raw).read_text(encoding="utf-8").splitlines() if line.strip()]
    meta = metadata(threads, backends, machine)
    rows, roof = table(records, backends)
    missing = next((r["unavailable"] for r in records if r["kind"] == "roofline" and "unavailable" in r), None)
    if missing:
        meta["roofline_unavailable"] = missing
    points = sweep(records, roof)
    data = {"benchmarks": benchmarks(records),
            "bnconform": {"metadata": meta, "roofline": roof, "table": rows, "verdicts": verdicts(rows),
                          "sweep": points}}
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "timing.json", out_dir / "timing.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    md_path.write_text(markdown(meta, rows, roof) + sweep_markdown(points))
    return [json_path, md_path]
