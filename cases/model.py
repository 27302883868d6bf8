"""A case: one spec with its grid values filled in, ready to run on any backend."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .schema import ModuleConfig, Step, Tolerance

# Defaults: float32 results from a float32 kernel against the float64 oracle differ by a few
# ulp of the largest intermediate; float64 ones by rounding of sums.
DEFAULT_TOLERANCE = {
    "float32": Tolerance(rtol=1e-4, atol=1e-5),
    "float64": Tolerance(rtol=1e-9, atol=1e-10),
}


@dataclass(frozen=True)
class Case:
    id: str  # "family/spec_id[grid=values]"
    family: str
    spec_id: str
    description: str
    source: Path
    config: ModuleConfig
    init: dict[str, Any]
    steps: tuple[Step, ...]
    tolerances: dict[Literal["float32", "float64"], Tolerance] = field(default_factory=dict)
    requires: frozenset[str] = frozenset()

    @property
    def tolerance(self) -> Tolerance:
        return self.tolerances.get(self.config.dtype, DEFAULT_TOLERANCE[self.config.dtype])


def id_matches(case_id: str, pattern: str) -> bool:
    """Exact id, or a glob in which only `*` is special (ids contain brackets: `[dim=2,...]`)."""
    if case_id == pattern:
        return True
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, case_id) is not None
