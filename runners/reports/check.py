"""The `bnconform check --backend X` view: the plugin author's view of one backend.

A verdict per family, the first failure of each with its diagnosis and reproducer, the skip
reasons, and what the backend declared (capabilities, conventions). It reads the RunReport
that the engine wrote, like every other report.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from tabulate import tabulate

from bnconform.runners.reports.results import CaseResult, RunReport


def _verdict(results: list[CaseResult], strict: bool) -> str:
    counts = Counter(r.outcome for r in results)
    bad = counts["failed"] + counts["error"] + (counts["xpassed"] if strict else 0)
    ran = len(results) - counts["skipped"]
    if bad:
        return f"FAIL ({bad} of {ran} run failed)"
    if not ran:
        return "not run (all skipped)"
    extra = "".join(f", {counts[k]} {k}" for k in ("deviates", "xfailed", "xpassed") if counts[k])
    return f"pass ({counts['passed']} of {ran}{extra})"


def check_text(report: RunReport, name: str) -> str:
    """The report text for backend `name` (its verdicts follow the run's: --strict, manifests)."""
    by_family: dict[str, list[CaseResult]] = defaultdict(list)
    for r in report.results:
        if r.backend == name:
            by_family[r.family].append(r)
    info = next((b for b in report.backends if b.name == name), None)
    lines = [f"# bnconform check: {name}", ""]
    if info is not None:
        lines.append(f"version: {info.version}")
        if info.unavailable:
            lines.append(f"unavailable here: {info.unavailable}")
        lines.append(f"capabilities: {', '.join(info.capabilities)}")
        if info.conventions:
            lines.append(f"conventions: {info.conventions}")
    if report.interrupted:
        lines.append("**the run was interrupted: cells not run read error**")
    failing = ("failed", "error") + (("xpassed",) if report.strict else ())
    rows, details = [], []
    skips: Counter[str] = Counter()
    for family, results in by_family.items():
        rows.append([family, len(results), _verdict(results, report.strict)])
        first = next((r for r in results if r.outcome in failing), None)
        if first:
            details += [f"## {family}: first failure, {first.spec}", "", "```", first.message.strip(), "```", ""]
        for r in results:
            if r.outcome == "skipped":
                skips[(r.message.strip().splitlines() or [""])[0]] += 1
    lines += ["", tabulate(rows, headers=["family", "cases", "verdict"], tablefmt="github"), ""] + details
    if skips:
        lines += ["## Skipped", "", tabulate([[n, why] for why, n in skips.most_common()], headers=["cases", "reason"],
                                              tablefmt="github"), ""]
    lines += [f"**nothing checked: {why}**" for why in report.unchecked]
    return "\n".join(lines)
