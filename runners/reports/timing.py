"""timing.json and timing.md from pytest-benchmark's JSON: medians, effective GB/s, ratios
to torch measured in the same run, the share of the measured copy bandwidth, and where each
performance target stands."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from tabulate import tabulate

from bnconform.cases.loader import BUILTIN_SPECS, spec_files
from bnconform.runners.bench.workloads import PHASES, SHAPES, TENSORS_MOVED, shape_id
from bnconform.runners.reports.metadata import run_metadata

LARGEST = shape_id((32, 64, 112, 112))
NCHW = [shape_id(s) for s in SHAPES if len(s) == 4 and s != (4, 8, 4, 4)]


def metadata(threads: int, backends: list[str]) -> dict[str, Any]:
    return {
        **run_metadata(spec_files([BUILTIN_SPECS]), thread_count=threads),
        "backends": backends,
        "bytes_model": {p: f"{n} tensor sizes" for p, n in TENSORS_MOVED.items()},
    }


def rows(bench: dict[str, Any]) -> tuple[list[dict[str, Any]], Optional[float]]:
    """One row per backend x shape x phase, with ratios; and the copy bandwidth (GB/s)."""
    out, copy_gbs = [], None
    for b in bench.get("benchmarks", []):
        info, stats = b.get("extra_info", {}), b["stats"]
        gbs = info["bytes"] / stats["median"] / 1e9
        if info.get("backend") == "copy":
            copy_gbs = gbs
            continue
        out.append({
            "backend": info["backend"], "shape": info["shape"], "phase": info["phase"],
            "median_s": stats["median"], "min_s": stats["min"], "max_s": stats["max"],
            "rounds": stats["rounds"], "gbs": gbs,
        })
    torch_median = {(r["shape"], r["phase"]): r["median_s"] for r in out if r["backend"] == "torch"}
    for r in out:
        ref = torch_median.get((r["shape"], r["phase"]))
        r["ratio_to_torch"] = r["median_s"] / ref if ref else None
        r["pct_of_copy"] = 100.0 * r["gbs"] / copy_gbs if copy_gbs else None
    return out, copy_gbs


def targets(table: list[dict[str, Any]], copy_gbs: Optional[float]) -> list[tuple[str, str, str]]:
    """(target, verdict, evidence) for the issue's performance targets."""
    def cells(backend: str, **where: str) -> list[dict[str, Any]]:
        return [r for r in table if r["backend"] == backend and all(r[k] == v for k, v in where.items())]

    result = []
    c_all = [r for r in cells("cffi") if r["ratio_to_torch"] is not None]
    if c_all:
        worst = max(c_all, key=lambda r: r["ratio_to_torch"])
        ok = worst["ratio_to_torch"] <= 1.0
        result.append(("cffi at least as fast as torch on every shape and phase (ratio <= 1.0)",
                       "MET" if ok else "MISSED",
                       f"worst ratio {worst['ratio_to_torch']:.2f} on {worst['shape']} {worst['phase']}"))
        big = [r for s in NCHW for r in cells("cffi", shape=s, phase="train_fwd") if r["ratio_to_torch"]]
        if big:
            worst_big = max(big, key=lambda r: r["ratio_to_torch"])
            result.append(("cffi >= 1.5x faster than torch on the three NCHW training forwards (ratio <= 0.667)",
                           "MET" if worst_big["ratio_to_torch"] <= 1 / 1.5 else "MISSED",
                           ", ".join(f"{r['shape']}: {r['ratio_to_torch']:.2f}" for r in big)))
        largest = cells("cffi", shape=LARGEST, phase="train_fwd")
        if largest and copy_gbs:
            pct = largest[0]["pct_of_copy"]
            result.append((f"cffi >= 50% of copy bandwidth on {LARGEST} training forward",
                           "MET" if pct >= 50 else "MISSED",
                           f"{largest[0]['gbs']:.1f} GB/s effective = {pct:.0f}% of {copy_gbs:.1f} GB/s copy"))
    n_all = [r for r in cells("numpy") if r["ratio_to_torch"] is not None]
    if n_all:
        worst = max(n_all, key=lambda r: r["ratio_to_torch"])
        missed = [r for r in n_all if r["ratio_to_torch"] > 3.0]
        result.append(("numpy within 3x of torch on every shape and phase (ratio <= 3.0)",
                       "MET" if not missed else f"MISSED on {len(missed)} of {len(n_all)}",
                       f"worst ratio {worst['ratio_to_torch']:.2f} on {worst['shape']} {worst['phase']}"))
    return result


def markdown(meta: dict[str, Any], table: list[dict[str, Any]], copy_gbs: Optional[float]) -> str:
    backends = list(dict.fromkeys(r["backend"] for r in table))
    lines = [
        "# BatchNorm timing",
        "",
        f"bnconform {meta['suite_version']} ({meta['git_commit'][:12]}), {meta['date']}; CPU: {meta['cpu_model']} "
        f"({meta['cpu_count']} logical CPUs); **{meta['threads']} threads for every backend** "
        "(torch intra-op threads, the C kernel's OpenMP team; NumPy is single-threaded by nature). "
        f"float32. Packages: " + ", ".join(f"{k} {v}" for k, v in meta["packages"].items()) + ".",
        "",
        f"Copy bandwidth (same run, {LARGEST} float32, read + write): "
        + (f"**{copy_gbs:.1f} GB/s**." if copy_gbs else "not measured."),
        "",
        "Effective GB/s = minimal bytes / median time, with minimal bytes per phase: "
        "training forward reads x twice and writes y (3 tensors); eval forward reads x and writes y (2); "
        "training forward+backward adds reading dy and x twice and writing dx (8 in all). "
        "Ratio = median time / torch's median time on the same shape and phase (below 1 is faster). "
        "min-max ms is the spread over the rounds: a difference inside it is noise.",
        "",
        "## Targets",
        "",
        tabulate(targets(table, copy_gbs), headers=["target", "status", "evidence"], tablefmt="github"),
        "",
    ]
    shapes = [shape_id(sh) for sh in SHAPES]
    for phase in PHASES:
        body = []
        for shape in shapes:
            for b in backends:
                cell = next((r for r in table if r["backend"] == b and r["shape"] == shape and r["phase"] == phase), None)
                if cell is None:
                    continue
                body.append([
                    shape, b, f"{cell['median_s'] * 1e3:.3f}",
                    f"{cell['min_s'] * 1e3:.3f}-{cell['max_s'] * 1e3:.3f}",
                    f"{cell['gbs']:.1f}",
                    f"{cell['ratio_to_torch']:.2f}" if cell["ratio_to_torch"] is not None else "",
                    f"{cell['pct_of_copy']:.0f}%" if cell["pct_of_copy"] is not None else "",
                ])
        if body:
            lines += [f"## {phase}", ""]
            lines += [tabulate(body, headers=["shape", "backend", "median ms", "min-max ms", "GB/s", "ratio to torch",
                                              "% of copy"], tablefmt="github"), ""]
    return "\n".join(lines)


def write(bench_json: Path, out_dir: Path, threads: int, backends: list[str]) -> list[Path]:
    """Merge run metadata and the derived table into timing.json; write timing.md."""
    bench = json.loads(Path(bench_json).read_text())
    for b in bench.get("benchmarks", []):
        b["stats"].pop("data", None)  # every round's time: megabytes, and the statistics say it all
    meta = metadata(threads, backends)
    table, copy_gbs = rows(bench)
    bench["bnconform"] = {"metadata": meta, "copy_gbs": copy_gbs, "table": table,
                          "targets": [dict(zip(("target", "status", "evidence"), t)) for t in targets(table, copy_gbs)]}
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "timing.json", out_dir / "timing.md"
    json_path.write_text(json.dumps(bench, indent=2) + "\n")
    md_path.write_text(markdown(meta, table, copy_gbs))
    return [json_path, md_path]
