"""The pytest test that runs bnconform's cells: one test per case x backend column.

bnconform's pytest plugin (runners/engine/plugin.py) parametrises it; import it into a test
module of your own as `from bnconform.testing import test_conformance` (docs/ci.md), or let
`bnconform run` collect it from here.
"""
from __future__ import annotations

from typing import Any


def test_conformance(bnconform_cell: Any) -> None:
    """Passes, fails, skips or xfails as the cell's outcome says (reports: conformance.json)."""
    bnconform_cell.verdict()
