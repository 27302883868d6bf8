"""The one result model every report writer reads: a run's metadata and its case x backend results."""
from __future__ import annotations

import collections
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OUTCOMES = ("passed", "deviates", "failed", "error", "skipped", "xfailed", "xpassed")
FAILING = ("failed", "error")  # xpassed too under --strict


@dataclass
class CaseResult:
    spec: str  # case id, e.g. momentum/cumulative_average[dim=2]
    family: str
    backend: str
    outcome: str  # one of OUTCOMES
    message: str = ""
    duration: float = 0.0
    tolerance: str = ""  # e.g. "rtol=0.0001 atol=1e-05 (float32)"
    diagnosis: list[str] = field(default_factory=list)  # deviations reproducing a failure (cases/deviations.py)
    # A failure that passes alone in a fresh worker: the earlier cells of its worker that still make it
    # fail (runners/engine/order.py), in order; empty for every other cell (and in older reports).
    order_dependent: list[str] = field(default_factory=list)
    # What the backend counted during this cell (its optional counters(), e.g. a compiler column's
    # "graphs compiled"), summed per column by the report; empty for backends that count nothing.
    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class BackendInfo:
    name: str
    version: str
    capabilities: list[str]
    unavailable: str | None = None
    conventions: str | None = None  # its declared profile (Conventions.describe()), if any
    manifest: str | None = None  # the expected-deviation manifest it ships, if any


@dataclass
class RunReport:
    suite_version: str
    backends: list[BackendInfo]
    results: list[CaseResult] = field(default_factory=list)
    wall_time_s: float = 0.0
    strict: bool = False  # xpassed cells fail the gate
    metadata: dict[str, Any] = field(default_factory=dict)  # runners/reports/metadata.py: what produced it
    interrupted: bool = False  # stopped by the user: cells not run read error, "not run: ..."
    # Backends of which nothing was checked (every selected cell skipped): the run has no verdict.
    unchecked: list[str] = field(default_factory=list)

    def families(self) -> list[str]:
        """Families in first-seen order (spec files are read in name order)."""
        return list(dict.fromkeys(r.family for r in self.results))

    def backend_names(self) -> list[str]:
        names = [b.name for b in self.backends]
        names += [r.backend for r in self.results if r.backend not in names]
        return list(dict.fromkeys(names))

    def counted(self) -> dict[str, dict[str, int]]:
        """Per backend, what it counted over its cells (CaseResult.counters summed), where it counts."""
        out: dict[str, collections.Counter[str]] = {}
        for r in self.results:
            if r.counters:
                out.setdefault(r.backend, collections.Counter()).update(r.counters)
        return {backend: dict(counts) for backend, counts in out.items()}

    def counts(self, backend: str | None = None, family: str | None = None) -> dict[str, int]:
        out = {o: 0 for o in OUTCOMES}
        for r in self.results:
            if (backend is None or r.backend == backend) and (family is None or r.family == family):
                out[r.outcome] += 1
        return out

    def failed(self) -> bool:
        failing = FAILING + (("xpassed",) if self.strict else ())
        return self.interrupted or bool(self.unchecked) or any(r.outcome in failing for r in self.results)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["suite"] = "bnconform"
        data["summary"] = {b: self.counts(b) for b in self.backend_names()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunReport":
        return cls(
            suite_version=data["suite_version"],
            backends=[BackendInfo(**b) for b in data["backends"]],
            results=[CaseResult(**r) for r in data["results"]],
            wall_time_s=data.get("wall_time_s", 0.0),
            strict=data.get("strict", False),
            metadata=data.get("metadata", {}),
            interrupted=data.get("interrupted", False),
            unchecked=data.get("unchecked", []),
        )

    @classmethod
    def read(cls, path: Path) -> "RunReport":
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def checked_nothing(backends: list[BackendInfo], results: list[CaseResult]) -> list[str]:
    """A backend (not allowed to be unavailable) that ran none of its selected cells: the run
    checked nothing of it and must not read as a pass. (Here, beside the model, because a run's
    collector and `bnconform merge` both apply it: to one run's cells, and to the merged cells.)"""
    out = []
    if results and all(r.outcome == "skipped" for r in results):
        out.append(f"every one of the {len(results)} selected cells was skipped: the run checked nothing")
    for b in backends:
        mine = [r for r in results if r.backend == b.name]
        if mine and not b.unavailable and all(r.outcome == "skipped" for r in mine):
            why = mine[0].message.splitlines()[0] if mine[0].message else "skipped"
            out.append(f"backend {b.name} ran none of its {len(mine)} selected cells (e.g. {why}); "
                       "nothing of it was checked")
    return out
