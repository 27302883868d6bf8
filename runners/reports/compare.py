"""`bnconform compare BASE NEW`: what changed between two runs.

Conformance reports: cases newly failing (the regressions), newly passing, added, removed,
other outcome changes, changed diagnoses. Timing reports: per backend x shape x phase x mode,
the ratio of medians new/base with a 95% bootstrap interval over both runs' rounds; a
regression is a slowdown the interval is sure of (its lower end above 1, or above 1 + threshold
when one is given), and an interval spanning 1.0 is no clear change. Markdown for a pull-request
comment, JSON for tools.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tabulate import tabulate

from bnconform.runners.reports.results import RunReport

FAILING = {"failed", "error"}


def kind(data: dict[str, Any]) -> str:
    if "results" in data:
        return "conformance"
    if "benchmarks" in data:
        return "timing"
    raise ValueError("neither a conformance.json nor a timing.json")


def load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def compare_conformance(base: RunReport, new: RunReport, allow_removed: bool = False) -> dict[str, Any]:
    """The diff; cells that disappeared and cells that ran before but are skipped now are lost
    coverage, counted as regressions unless `allow_removed` (an empty run is not 'no regression')."""
    old = {(r.spec, r.backend): r for r in base.results}
    cur = {(r.spec, r.backend): r for r in new.results}

    def row(key: tuple[str, str]) -> dict[str, Any]:
        b, n = old.get(key), cur.get(key)
        return {"case": key[0], "backend": key[1], "base": b.outcome if b else None, "new": n.outcome if n else None,
                "base_diagnosis": b.diagnosis if b else [], "new_diagnosis": n.diagnosis if n else [],
                "message": (n.message.strip().splitlines() or [""])[0] if n else ""}

    both = [k for k in cur if k in old]
    newly_failing = [row(k) for k in both if cur[k].outcome in FAILING and old[k].outcome not in FAILING]
    added_failing = [row(k) for k in cur if k not in old and cur[k].outcome in FAILING]
    removed = [row(k) for k in old if k not in cur]
    not_run = [row(k) for k in both if cur[k].outcome == "skipped" and old[k].outcome != "skipped"]
    lost = 0 if allow_removed else len(removed) + len(not_run)
    return {
        "kind": "conformance",
        "base": base.metadata, "new": new.metadata,
        "spec_set_changed": base.metadata.get("spec_digest") != new.metadata.get("spec_digest"),
        "newly_failing": newly_failing,
        "added_failing": added_failing,
        "newly_passing": [row(k) for k in both if old[k].outcome in FAILING and cur[k].outcome == "passed"],
        "not_run": not_run,
        "changed": [row(k) for k in both if old[k].outcome != cur[k].outcome and cur[k].outcome != "skipped"
                    and not (cur[k].outcome in FAILING) != (old[k].outcome in FAILING)],
        "changed_diagnosis": [row(k) for k in both if cur[k].outcome in FAILING and old[k].outcome in FAILING
                              and sorted(cur[k].diagnosis) != sorted(old[k].diagnosis)],
        "added": [row(k) for k in cur if k not in old],
        "removed": removed,
        "allow_removed": allow_removed,
        "regressions": len(newly_failing) + len(added_failing) + lost,
    }


TimingKey = tuple[str, str, str, str]


def _timing_rows(data: dict[str, Any]) -> dict[TimingKey, dict[str, Any]]:
    out = {}
    for b in data.get("benchmarks", []):
        info, stats = b.get("extra_info", {}), b["stats"]
        if "data" not in stats or "mode" not in info:
            raise ValueError("a timing.json without its rounds (written before bnconform timed in rounds): "
                             "run bnconform bench again for that side")
        out[(info["backend"], info["shape"], info["phase"], info["mode"])] = stats
    return out


def compare_timing(base: dict[str, Any], new: dict[str, Any], threshold: float) -> dict[str, Any]:
    from bnconform.runners.bench.intervals import independent_ratio

    old, cur = _timing_rows(base), _timing_rows(new)
    rows = []
    for key in [k for k in cur if k in old]:
        ratio, lo, hi = independent_ratio(cur[key]["data"], old[key]["data"])
        rows.append({"backend": key[0], "shape": key[1], "phase": key[2], "mode": key[3],
                     "base_median_s": old[key]["median"], "new_median_s": cur[key]["median"],
                     "ratio": ratio, "interval": [lo, hi],
                     "regression": lo > 1 + threshold, "improvement": hi < 1 - threshold,
                     "no_clear_change": lo <= 1.0 <= hi})
    meta = lambda d: d.get("bnconform", {}).get("metadata", {})
    busy = [side for side, d in (("base", base), ("new", new)) if meta(d).get("machine", {}).get("busy")]
    return {"kind": "timing", "threshold": threshold, "base": meta(base), "new": meta(new), "rows": rows,
            "busy": busy, "added": [list(k) for k in cur if k not in old],
            "removed": [list(k) for k in old if k not in cur], "regressions": sum(r["regression"] for r in rows)}


def compare(base_path: Path, new_path: Path, threshold: float = 0.0, allow_removed: bool = False) -> dict[str, Any]:
    base, new = load(base_path), load(new_path)
    kb, kn = kind(base), kind(new)
    if kb != kn:
        raise ValueError(f"cannot compare a {kb} report with a {kn} report")
    if kb == "conformance":
        return compare_conformance(RunReport.from_json(base), RunReport.from_json(new), allow_removed)
    return compare_timing(base, new, threshold)


def _section(title: str, rows: list[dict[str, Any]], cols: list[str]) -> list[str]:
    if not rows:
        return []
    return [f"### {title} ({len(rows)})", "", tabulate([[r.get(c, "") for c in cols] for r in rows], headers=cols,
                                                       tablefmt="github"), ""]


def markdown(diff: dict[str, Any]) -> str:
    b, n = diff.get("base", {}), diff.get("new", {})
    head = [f"## bnconform compare: {diff['kind']}", "",
            f"base: {b.get('git_commit', '?')} ({b.get('date', '?')}); new: {n.get('git_commit', '?')} ({n.get('date', '?')})",
            ""]
    if diff["kind"] == "conformance":
        verdict = f"**{diff['regressions']} regression(s)**" if diff["regressions"] else "no regression"
        head += [verdict + (" — the spec set changed between the runs" if diff["spec_set_changed"] else ""), ""]
        cols = ["case", "backend", "base", "new", "new_diagnosis", "message"]
        lost = " — allowed by --allow-removed" if diff["allow_removed"] else " — regressions (--allow-removed accepts them)"
        body = (_section("Newly failing", diff["newly_failing"], cols)
                + _section("Added and failing", diff["added_failing"], cols)
                + _section("Newly passing", diff["newly_passing"], cols[:4])
                + _section("Changed diagnosis", diff["changed_diagnosis"], ["case", "backend", "base_diagnosis", "new_diagnosis"])
                + _section(f"Ran before, skipped now{lost}", diff["not_run"], cols[:4] + ["message"])
                + _section(f"Removed{lost}", diff["removed"], cols[:3])
                + _section("Other outcome changes", diff["changed"], cols[:4])
                + _section("Added", diff["added"], cols[:2] + ["new"]))
        return "\n".join(head + (body or ["Nothing changed."]))
    head += [f"**{diff['regressions']} regression(s)**: slower with 95% confidence (the interval's lower end above "
             f"{1 + diff['threshold']:.2f}). An interval spanning 1.0 is no clear change.", ""]
    if diff["busy"]:
        head += [f"**The machine was busy during the {' and '.join(diff['busy'])} run: the comparison is unreliable.**", ""]
    table = [[r["backend"], r["shape"], r["phase"], r["mode"], f"{r['base_median_s'] * 1e3:.3f}",
              f"{r['new_median_s'] * 1e3:.3f}", f"{r['ratio']:.2f} [{r['interval'][0]:.2f}, {r['interval'][1]:.2f}]",
              "REGRESSION" if r["regression"] else ("improvement" if r["improvement"] else
                                                    ("no clear change" if r["no_clear_change"] else ""))]
             for r in diff["rows"]]
    return "\n".join(head + [tabulate(table, headers=["backend", "shape", "phase", "mode", "base ms", "new ms",
                                                      "new/base [95%]", ""], tablefmt="github"), ""])
