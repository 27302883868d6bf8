"""Non-passing cells grouped by cause, so a report grows with the causes, not the cells.

A failure's cause is its diagnosis (the known deviations that reproduce it, cases/deviations.py;
several form one combined cause). An undiagnosed failure or error is grouped by its first
message line with what is particular to the case taken out: numbers, the case id, the backend
name, which reference and dtype it was compared with. 144 cells failing for one reason are one
cause with 144 cells and one example message.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from bnconform.runners.reports.results import CaseResult

PROBLEMS = ("failed", "error", "xpassed")  # what a CI user must act on (xpassed under --strict)
EXPECTED = ("deviates", "xfailed")  # declared by the backend or its manifest

_RULES = (
    # an order-dependent failure (runners/engine/order.py): one cause, whichever cells came before
    (re.compile(r"^(order-dependent: passes alone in a fresh worker)[;,].*$"), r"\1"),
    (re.compile(r"\s*\[expected: [^\]]*\]"), ""),  # which reference and dtype: case-specific
    (re.compile(r" matching /.*?/(?=, got )"), ""),  # an error's expected words, and what the backend said
    (re.compile(r"(, got \w+(?:Error|Exception|Interrupt|Exit)):.*$"), r"\1"),
    (re.compile(r"(message differs): .*$"), r"\1"),
    (re.compile(r"0x[0-9a-fA-F]+"), "0x…"),
    (re.compile(r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?!\w)"), "N"),
)


def first_line(message: str) -> str:
    """The line that says what happened; a heading ending in ':' takes the line after it along."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    return f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def reason(result: CaseResult) -> str:
    """Why a cell deviates or is expected to fail: its first line without the outcome's own words."""
    return first_line(result.message).removeprefix("deviates (declared): ").removeprefix("expected deviation: ")


def normalise(result: CaseResult) -> str:
    """The first message line with what is particular to this cell taken out."""
    text = first_line(result.message)
    for name, stand_in in sorted(((result.spec, "<case>"), (result.backend, "<backend>")), key=lambda p: -len(p[0])):
        if name:  # as a whole token only: a backend called "t" is not every letter t
            text = re.sub(rf"(?<![\w.:/-]){re.escape(name)}(?![\w./-])", stand_in, text)
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text or f"({result.outcome}, no message)"


@dataclass
class Cause:
    title: str  # the deviation names joined by ' + ', or the normalised first message line
    diagnosis: tuple[str, ...]  # empty for a cause known only by its message
    results: list[CaseResult] = field(default_factory=list)

    def backends(self) -> list[str]:
        return list(dict.fromkeys(r.backend for r in self.results))

    def outcomes(self, backend: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            if r.backend == backend:
                out[r.outcome] = out.get(r.outcome, 0) + 1
        return out


def group(results: list[CaseResult], outcomes: tuple[str, ...] = PROBLEMS) -> list[Cause]:
    """The cells with these outcomes grouped by cause, the cause with most cells first."""
    causes: dict[tuple[str, ...], Cause] = {}
    for r in results:
        if r.outcome not in outcomes:
            continue
        diagnosis = tuple(sorted(dict.fromkeys(r.diagnosis)))
        key = ("diagnosis", *diagnosis) if diagnosis else ("message", normalise(r))
        if key not in causes:
            causes[key] = Cause(" + ".join(diagnosis) if diagnosis else key[1], diagnosis)
        causes[key].results.append(r)
    return sorted(causes.values(), key=lambda c: -len(c.results))
