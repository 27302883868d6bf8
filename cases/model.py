"""A case: one spec with its grid values filled in, ready to run on any backend."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .schema import ModuleConfig, Step, Tolerance

# Defaults, per dtype of the quantity compared (cases/dtypes.py has the unit roundoff u):
# - float32: a float32 kernel against the float64 oracle differs by a few ulp of the largest
#   intermediate; 1e-4 relative leaves room for data a few thousand ulp ill-conditioned.
# - float64: rounding of sums, n*u ~ 1e-13 for the sizes specs use; 1e-9 is generous.
# - float16 / bfloat16: torch computes in float32 (error ~1e-6 relative to the operands) and
#   rounds the result once to the 16-bit type (error <= u*|y|). Twice u covers both:
#   float16 u = 2**-11, so rtol = atol = 2**-10 ~ 9.8e-4; bfloat16 u = 2**-8, so 2**-7 ~ 7.8e-3.
#   atol = rtol covers values near zero, whose float32 error is relative to operands of order 1
#   (normalised data); a case with larger operands states its own tolerance.
DEFAULT_TOLERANCE = {
    "float16": Tolerance(rtol=2.0**-10, atol=2.0**-10),
    "bfloat16": Tolerance(rtol=2.0**-7, atol=2.0**-7),
    "float32": Tolerance(rtol=1e-4, atol=1e-5),
    "float64": Tolerance(rtol=1e-9, atol=1e-10),
}


# The quantities that are sums over all of a channel's values (a spec's sum_tolerance).
SUM_QUANTITIES = ("grad_weight", "grad_bias")


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
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    requires: frozenset[str] = frozenset()
    # The shapes library's tier (cases/shapes.py): `default` runs always, `full` with --tier full.
    tier: str = "default"
    # grad_weight's and grad_bias's tolerances (the spec's sum_tolerance), and the values per
    # channel of a shaped case's problem (what a tolerance's per_value is multiplied by).
    sum_tolerances: dict[str, Tolerance] = field(default_factory=dict)
    values_per_channel: int = 0

    @property
    def tolerance(self) -> Tolerance:
        """The tolerance of the module's dtype (buffers, parameters)."""
        return self.tolerance_for(self.config.dtype)

    def tolerance_for(self, dtype: str, quantity: str = "") -> Tolerance:
        """The tolerance for `quantity` of `dtype` (the output and input grads have the input's)."""
        tol = self.tolerances.get(dtype, DEFAULT_TOLERANCE.get(dtype, DEFAULT_TOLERANCE["float64"]))
        if quantity in SUM_QUANTITIES:
            tol = self.sum_tolerances.get(dtype, tol)
        return tol.at(self.values_per_channel)


def id_matches(case_id: str, pattern: str) -> bool:
    """Exact id, or a glob in which only `*` is special (ids contain brackets: `[dim=2,...]`)."""
    if case_id == pattern:
        return True
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, case_id) is not None
