"""Report writers: conformance.json, conformance.md and the terminal summary, from one RunReport."""
from __future__ import annotations

import json
from pathlib import Path

from tabulate import tabulate

from bnconform.cases.deviations import DEVIATIONS
from bnconform.runners.reports.results import OUTCOMES, RunReport

CELL = {
    "passed": "pass",
    "deviates": "deviates (declared)",
    "failed": "**FAIL**",
    "error": "**ERROR**",
    "skipped": "skip",
    "xfailed": "xfail",
    "xpassed": "**XPASS**",
}


def write_json(report: RunReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def markdown(report: RunReport) -> str:
    backends = report.backend_names()
    meta = report.metadata
    lines = [
        "# BatchNorm conformance matrix",
        "",
        f"bnconform {report.suite_version}, {meta.get('date', '?')}, Python {meta.get('packages', {}).get('python', '?')} "
        f"on {meta.get('os', '?')}; wall time {report.wall_time_s:.1f} s.",
        "",
        f"git commit {meta.get('git_commit', 'unknown')}, spec set digest "
        f"{meta.get('spec_digest', 'unknown')[:16]}, CPU {meta.get('cpu_model', '?')}, {meta.get('threads', '?')} threads.",
        "",
        tabulate(
            [[b.name, b.version, b.unavailable or "yes"] for b in report.backends],
            headers=["backend", "version", "available"],
            tablefmt="github",
        ),
        "",
        "## Summary per family",
        "",
    ]
    header = ["family", "cases"] + [f"{b} pass/fail/skip" for b in backends]
    rows = []
    for fam in report.families() + [None]:
        cases = {r.spec for r in report.results if fam is None or r.family == fam}
        row = [fam or "**total**", len(cases)]
        for b in backends:
            c = report.counts(b, fam)
            extra = "".join(f", {c[o]} {o}" for o in ("deviates", "error", "xfailed", "xpassed") if c[o])
            row.append(f"{c['passed']}/{c['failed']}/{c['skipped']}{extra}")
        rows.append(row)
    lines += [tabulate(rows, headers=header, tablefmt="github"), ""]

    by_cell = {(r.spec, r.backend): r for r in report.results}
    for fam in report.families():
        lines += [f"## {fam}", ""]
        specs = list(dict.fromkeys(r.spec for r in report.results if r.family == fam))
        table = [[f"`{s}`"] + [CELL.get(by_cell[(s, b)].outcome, "") if (s, b) in by_cell else "" for b in backends]
                 for s in specs]
        lines += [tabulate(table, headers=["case"] + backends, tablefmt="github"), ""]

    problems = [r for r in report.results if r.outcome in ("failed", "error", "xpassed")]
    causes: dict[tuple[str, str], int] = {}
    for r in problems:
        for d in r.diagnosis or ["(none found)"]:
            causes[(r.backend, d)] = causes.get((r.backend, d), 0) + 1
    if causes:
        lines += ["## Likely causes", "",
                  "Known deviations whose predictions reproduce the failed cases' observed values "
                  "(cases/deviations.py).", ""]
        rows = [[b, f"`{d}`" if d in DEVIATIONS else d, DEVIATIONS.get(d, ""), n]
                for (b, d), n in sorted(causes.items(), key=lambda kv: (kv[0][0], -kv[1]))]
        lines += [tabulate(rows, headers=["backend", "deviation", "meaning", "failed cases"], tablefmt="github"), ""]
    if problems:
        lines += ["## Failures", ""]
        for r in problems:
            diagnosis = f"Diagnosis: {', '.join(f'`{d}`' for d in r.diagnosis)}" if r.diagnosis else "Diagnosis: none found"
            lines += [f"### `{r.spec}` on {r.backend}: {r.outcome}", "", diagnosis, "", "```", r.message.strip(), "```", ""]
    skips: dict[tuple[str, str], int] = {}
    for r in report.results:
        if r.outcome == "skipped":
            key = (r.backend, _first_line(r.message))
            skips[key] = skips.get(key, 0) + 1
    if skips:
        lines += ["## Skip reasons", ""]
        rows = [[b, n, why] for (b, why), n in skips.items()]
        lines += [tabulate(rows, headers=["backend", "cases", "reason"], tablefmt="github"), ""]
    return "\n".join(lines)


def write_markdown(report: RunReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(report), encoding="utf-8")
    return path


def terminal_summary(report: RunReport) -> str:
    rows = []
    for b in report.backend_names():
        c = report.counts(b)
        rows.append([b] + [c[o] for o in OUTCOMES])
    verdict = "INTERRUPTED" if report.interrupted else "FAILED" if report.failed() else "OK"
    cases = len({r.spec for r in report.results})
    return (
        f"bnconform: {cases} cases x {len(report.backend_names())} backends, {report.wall_time_s:.1f} s -> {verdict}\n"
        + tabulate(rows, headers=["backend"] + list(OUTCOMES), tablefmt="simple")
    )


def write_all(report: RunReport, out_dir: Path, html: bool = False) -> list[Path]:
    """conformance.json and conformance.md (and the self-contained conformance.html)."""
    out_dir = Path(out_dir)
    paths = [write_json(report, out_dir / "conformance.json"), write_markdown(report, out_dir / "conformance.md")]
    if html:
        from bnconform.runners.reports.html import page

        paths.append(out_dir / "conformance.html")
        paths[-1].write_text(page("BatchNorm conformance", conformance=report), encoding="utf-8")
    return paths
