"""Report writers: conformance.json, conformance.md and the terminal summary, from one RunReport."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from tabulate import tabulate

from bnconform.cases.deviations import DEVIATIONS
from bnconform.runners.reports.caseids import collapse
from bnconform.runners.reports.causes import EXPECTED, PROBLEMS, Cause, group
from bnconform.runners.reports.results import OUTCOMES, CaseResult, RunReport

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


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _fenced(text: str) -> list[str]:
    """A code block that the message's own backticks cannot close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence]


def _case_list(results: list[CaseResult], family_sizes: dict[str, int]) -> list[str]:
    """The cells' case ids per family, collapsed into grid patterns."""
    by_family: dict[str, list[str]] = {}
    for r in results:
        by_family.setdefault(r.family, []).append(r.spec)
    lines = []
    for family, ids in by_family.items():
        total = family_sizes.get(family, len(ids))
        scope = f"all {total}" if len(ids) == total else f"{len(ids)} of {total}"
        patterns = ", ".join(f"`{c.text.removeprefix(family + '/')}`" for c in collapse(ids))
        lines.append(f"  - {family} ({scope}): {patterns}")
    return lines


def _cause_section(number: int, cause: Cause, family_sizes: dict[str, int], example: bool) -> list[str]:
    cells = len(cause.results)
    title = f"`{cause.title}`" if cause.diagnosis else cause.title
    lines = [f"### {number}. {title}: {_plural(cells, 'cell')}", ""]
    if cause.diagnosis:
        lines += [f"- `{d}`: {DEVIATIONS.get(d, '(not a known deviation)')}" for d in cause.diagnosis] + [""]
    elif example:
        lines += ["No known deviation reproduces these; grouped by their first message line.", ""]
    for backend in cause.backends():
        counts = ", ".join(f"{n} {o}" for o, n in cause.outcomes(backend).items())
        lines += [f"- **{backend}**: {counts}"]
        lines += _case_list([r for r in cause.results if r.backend == backend], family_sizes)
    lines += [""]
    if example:
        first = cause.results[0]
        lines += [f"Example: `{first.spec}` on {first.backend}, {first.outcome}:", ""] + _fenced(first.message.strip()) + [""]
    return lines


def _causes_part(report: RunReport, family_sizes: dict[str, int]) -> list[str]:
    problems = group(report.results, PROBLEMS)
    lines: list[str] = []
    if problems:
        cells = sum(len(c.results) for c in problems)
        lines += ["## Failures by cause", "",
                  f"{_plural(cells, 'cell')} to act on ({', '.join(PROBLEMS)}) from {_plural(len(problems), 'cause')}: "
                  "a diagnosis names the known deviations (cases/deviations.py) that reproduce what the "
                  "backend did; a failure without one is grouped by its first message line. Each cause shows one "
                  "full message; conformance.json has every cell's.", ""]
        rows = [[i, f"`{c.title}`" if c.diagnosis else c.title, ", ".join(c.backends()), len(c.results)]
                for i, c in enumerate(problems, 1)]
        lines += [tabulate(rows, headers=["#", "cause", "backends", "cells"], tablefmt="github"), ""]
        for i, cause in enumerate(problems, 1):
            lines += _cause_section(i, cause, family_sizes, example=True)
    expected = group(report.results, EXPECTED)
    if expected:
        lines += ["## Declared deviations and expected failures", "",
                  "Cells that differ from PyTorch as their backend declares (deviates) or as a manifest expects "
                  "(xfailed), by reason.", ""]
        for i, cause in enumerate(expected, 1):
            lines += _cause_section(i, cause, family_sizes, example=False)
    return lines


def _shown(outcome: str) -> str:
    """A matrix cell: the outcome's word, and a note after it (order-dependent) if any."""
    word, _, note = outcome.partition(" ")
    return CELL.get(word, word) + (f" {note}" if note else "")


def _family_table(report: RunReport, family: str, backends: list[str]) -> list[str]:
    """The family's cases that do not pass on every backend, equal outcome rows collapsed."""
    outcomes: dict[str, dict[str, str]] = {}
    for r in report.results:
        if r.family == family:  # an order-dependent failure says so (runners/engine/order.py)
            outcomes.setdefault(r.spec, {})[r.backend] = r.outcome + (" (order-dependent)" if r.order_dependent else "")
    rows: dict[tuple[str, ...], list[str]] = {}
    for spec, by_backend in outcomes.items():
        vector = tuple(by_backend.get(b, "") for b in backends)
        if any(o != "passed" for o in vector):
            rows.setdefault(vector, []).append(spec)
    listed = sum(len(ids) for ids in rows.values())
    if not listed:
        return [f"All {len(outcomes)} cases pass on every backend.", ""]
    position = {spec: i for i, spec in enumerate(outcomes)}
    table = sorted(((position[c.ids[0]], c, vector) for vector, ids in rows.items() for c in collapse(ids)),
                   key=lambda t: t[0])
    body = [[f"`{c.text}`" + (f" ({len(c.ids)})" if len(c.ids) > 1 else "")] + [_shown(o) for o in vector]
            for _, c, vector in table]
    head = ("No case passes on every backend:" if listed == len(outcomes)
            else f"{len(outcomes) - listed} of {len(outcomes)} cases pass on every backend; the other {listed}:")
    return [head, "",
            tabulate(body, headers=["cases"] + backends, tablefmt="github"), ""]


def _merged(meta: dict) -> list[str]:
    """A merged report's sources (`bnconform merge`, runners/reports/merge.py): the files, and the
    machine each column ran on (the whole metadata of each is in conformance.json's metadata.columns)."""
    runs = {run.get("file"): run for column in meta.get("columns", {}).values() for run in column}
    files = ", ".join(f"`{f}`" + (f" (shard {runs[f]['shard']})" if runs.get(f, {}).get("shard") else "")
                      for f in meta["merged_from"])
    lines = [f"Merged by `bnconform merge` from {_plural(len(meta['merged_from']), 'report')}: {files}.", ""]
    for name, column in meta.get("columns", {}).items():
        machines = dict.fromkeys(f"{r.get('cpu_model', '?')}, {r.get('threads', '?')} threads, {r.get('os', '?')}"
                                 for r in column)
        lines.append(f"- **{name}** ran on {'; '.join(machines)}")
    return lines + [""]


def _counted(report: RunReport) -> list[str]:
    """`backend: 123 graphs compiled` for each backend that counts (its counters())."""
    return [f"{b}: " + ", ".join(f"{n} {key}" for key, n in counts.items()) for b, counts in report.counted().items()]


def _counted_part(report: RunReport) -> list[str]:
    counted = _counted(report)
    if not counted:
        return []
    return (["What the backends counted during their cells (their `counters()`, summed over the cells; each cell's "
             "own in conformance.json `counters`):", ""] + [f"- {line}" for line in counted] + [""])


def markdown(report: RunReport) -> str:
    backends = report.backend_names()
    meta = report.metadata
    conventions = [b for b in report.backends if b.conventions]
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
    ]
    if meta.get("merged_from"):
        lines += _merged(meta)
    if report.interrupted:
        lines += ["**The run was interrupted: cells not run read error.**", ""]
    if conventions:
        lines += ["Declared conventions: " + "; ".join(f"**{b.name}**: {b.conventions}" for b in conventions) + ".", ""]
    lines += ["## Summary per family", ""]
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
    lines += _counted_part(report)

    family_sizes = {fam: len({r.spec for r in report.results if r.family == fam}) for fam in report.families()}
    lines += _causes_part(report, family_sizes)
    for fam in report.families():
        lines += [f"## {fam}", ""] + _family_table(report, fam, backends)

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
    verdict = ("INTERRUPTED" if report.interrupted else "NO VERDICT (nothing checked)" if report.unchecked
               else "FAILED" if report.failed() else "OK")
    cases = len({r.spec for r in report.results})
    return (
        f"bnconform: {_plural(cases, 'case')} x {_plural(len(report.backend_names()), 'backend')}, "
        f"{report.wall_time_s:.1f} s -> {verdict}\n"
        + tabulate(rows, headers=["backend"] + list(OUTCOMES), tablefmt="simple")
        + "".join(f"\n{line}" for line in _counted(report))
        + _terminal_causes(report)
    )


def _terminal_causes(report: RunReport, most: int = 8, lines: int = 8) -> str:
    """What to act on, by cause (as in conformance.md): a count, the backends, and one example's
    first lines with its reproduce command; the log grows with the causes, not the cells."""
    problems = [r for r in report.results if r.outcome in ("failed", "error") or (r.outcome == "xpassed" and report.strict)]
    out = []
    for number, cause in enumerate(group(problems)[:most], 1):
        example = cause.results[0]
        text = example.message.strip().splitlines()
        repro = next((line for line in text if line.startswith("reproduce: ")), "")
        body = [line for line in text if line != repro][:lines]
        out += [f"\n[{number}] {_plural(len(cause.results), 'cell')} ({', '.join(cause.backends())}): {cause.title}",
                f"  e.g. {example.spec} on {example.backend}:"] + [f"    {line}" for line in body]
        out += [f"  {repro}"] if repro else []
    rest = len(group(problems)) - most
    if rest > 0:
        out.append(f"\n... and {_plural(rest, 'more cause')}: see conformance.md")
    return ("\n\nwhat to act on, by cause:" if out else "") + "\n".join(out)


def write_all(report: RunReport, out_dir: Path, html: bool = False, junit: Optional[Path] = None) -> list[Path]:
    """conformance.json and conformance.md (and the self-contained conformance.html, and JUnit XML
    where the user asked for it)."""
    out_dir = Path(out_dir)
    paths = [write_json(report, out_dir / "conformance.json"), write_markdown(report, out_dir / "conformance.md")]
    if html:
        from bnconform.runners.reports.html import page

        paths.append(out_dir / "conformance.html")
        paths[-1].write_text(page("BatchNorm conformance", conformance=report), encoding="utf-8")
    if junit is not None:
        from bnconform.runners.reports.junit import write_junit

        paths.append(write_junit(report, junit))
    return paths
