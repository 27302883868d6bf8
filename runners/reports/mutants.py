"""The mutation score view: on each deliberately broken backend (runners/backends/mutants.py),
did the suite kill it (some cell failed) and did the diagnosis name its bug?"""
from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Optional

from tabulate import tabulate

from bnconform.cases.deviations import DEVIATIONS
from bnconform.runners.reports.results import CaseResult


@dataclass
class MutantScore:
    name: str
    cause: Optional[str]  # the deviation describing its bug, None when none does
    cases: int
    failed: int
    top_diagnoses: list[str]  # the deviation(s) named most often across its failed cases
    cause_named: int  # failed cases whose diagnosis names the cause
    families: list[str]  # families with at least one failed case

    @property
    def killed(self) -> bool:
        return self.failed > 0

    @property
    def diagnosed(self) -> Optional[bool]:
        """Correct when its cause is (among) the most often named; None without a known cause."""
        return None if self.cause is None else self.cause in self.top_diagnoses


def score(name: str, cause: Optional[str], results: list[CaseResult]) -> MutantScore:
    """How the suite did on one mutant, from its cells' results (the engine ran them)."""
    failed = [r for r in results if r.outcome in ("failed", "error")]
    named = Counter(d for r in failed for d in r.diagnosis)
    top = max(named.values(), default=0)
    return MutantScore(
        name=name, cause=cause, cases=len(results), failed=len(failed),
        top_diagnoses=sorted(d for d, n in named.items() if n == top and top > 0),
        cause_named=named.get(cause, 0) if cause else 0,
        families=sorted({r.family for r in failed}),
    )


def load_corpus(spec: str) -> tuple[dict[str, Any], dict[str, Optional[str]]]:
    """`package.module` holding MUTANTS (name -> backend) and CAUSE (name -> deviation or None)."""
    module = importlib.import_module(spec)
    causes = dict(module.CAUSE)
    unknown = {c for c in causes.values() if c is not None} - set(DEVIATIONS)
    if unknown:
        raise ValueError(f"{spec}: causes {sorted(unknown)} are not deviations")
    return dict(module.MUTANTS), causes


def summary(scores: list[MutantScore]) -> dict[str, Any]:
    with_cause = [s for s in scores if s.cause is not None]
    return {
        "killed": sum(s.killed for s in scores),
        "total": len(scores),
        "diagnosed": sum(bool(s.diagnosed) for s in with_cause),
        "with_known_cause": len(with_cause),
        "survivors": [s.name for s in scores if not s.killed],
        "misdiagnosed": [s.name for s in with_cause if not s.diagnosed],
    }


def table(scores: list[MutantScore]) -> str:
    rows = [[s.name, s.cause or "(none)", f"{s.failed}/{s.cases}", "killed" if s.killed else "SURVIVED",
             ", ".join(s.top_diagnoses) or "-", {True: "yes", False: "NO", None: "n/a"}[s.diagnosed],
             ", ".join(s.families)]
            for s in scores]
    return tabulate(rows, headers=["mutant", "its bug", "failed cases", "verdict", "most named cause", "diagnosed",
                                   "killed by families"], tablefmt="github")


def report(scores: list[MutantScore]) -> tuple[str, dict[str, Any]]:
    s = summary(scores)
    text = (f"# Mutation score\n\nkilled {s['killed']}/{s['total']}; correctly diagnosed "
            f"{s['diagnosed']}/{s['with_known_cause']} (of the mutants whose bug is a known deviation)\n\n"
            + table(scores) + "\n")
    return text, {"summary": s, "mutants": [asdict(m) | {"killed": m.killed, "diagnosed": m.diagnosed} for m in scores]}
