"""`bnconform check --backend X`: the plugin author's view of one backend.

A verdict per family, the first failure of each with its diagnosis and reproducer, the skip
reasons, and what the backend declared (capabilities, conventions).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from tabulate import tabulate

from cases.model import Case
from runners.backends import unavailable_reason
from runners.execute import Outcome, run_case


def _verdict(outcomes: list[Outcome]) -> str:
    counts = Counter(o.outcome for o in outcomes)
    bad = counts["failed"] + counts["error"]
    ran = len(outcomes) - counts["skipped"]
    if bad:
        return f"FAIL ({bad} of {ran} run failed)"
    if not ran:
        return "not run (all skipped)"
    extra = "".join(f", {counts[k]} {k}" for k in ("deviates", "xfailed") if counts[k])
    return f"pass ({counts['passed']} of {ran}{extra})"


def check(name: str, backend: Any, cases: list[Case]) -> tuple[str, bool]:
    """The report text, and whether every case that ran passed."""
    by_family: dict[str, list[tuple[Case, Outcome]]] = defaultdict(list)
    for case in cases:
        by_family[case.family].append((case, run_case(case, backend, name)))
    caps = sorted(backend.capabilities.provides())
    lines = [f"# bnconform check: {name}", "", f"version: {backend.version()}"]
    reason = unavailable_reason(backend)
    if reason:
        lines.append(f"unavailable here: {reason}")
    lines += [f"capabilities: {', '.join(caps)}"]
    profile = getattr(backend, "conventions", None)
    if profile is not None:
        lines.append(f"conventions: {profile.describe()}")
    rows, details, skips = [], [], Counter()
    for family, pairs in by_family.items():
        outcomes = [o for _, o in pairs]
        rows.append([family, len(pairs), _verdict(outcomes)])
        first = next(((c, o) for c, o in pairs if o.outcome in ("failed", "error")), None)
        if first:
            details += [f"## {family}: first failure, {first[0].id}", "", "```", first[1].message.strip(), "```", ""]
        for o in outcomes:
            if o.outcome == "skipped":
                skips[o.message.splitlines()[0]] += 1
    lines += ["", tabulate(rows, headers=["family", "cases", "verdict"], tablefmt="github"), ""] + details
    if skips:
        lines += ["## Skipped", "", tabulate([[n, why] for why, n in skips.most_common()], headers=["cases", "reason"],
                                              tablefmt="github"), ""]
    ok = all(o.outcome not in ("failed", "error") for pairs in by_family.values() for _, o in pairs)
    return "\n".join(lines), ok
