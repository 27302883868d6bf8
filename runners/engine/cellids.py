"""A cell's pytest test id, built and read back without loading anything else of the engine.

The pytest plugin's controller (the pytest process, or the pytest-xdist controller, which sees
only node ids) reads these ids to know whether a session has bnconform cells at all; in a
session without any it must stay as cheap as a plugin that is not there.

A cell's test id is CASE_ID[COLUMN], parametrising test_conformance; case ids are family/spec
or family/spec[grid], ids and families are [a-z0-9_]+, and a column name has no brackets.
Another test whose parameters merely look like case ids is not a cell.
"""
from __future__ import annotations

import re
from typing import Optional

CELL_ID = re.compile(r"::test_conformance\[(?P<case>[a-z0-9_]+/[a-z0-9_]+(?:\[[^\[\]]*\])?)\[(?P<column>[^\[\]]+)\]\]$")


def cell_id(case_id: str, column: str) -> str:
    return f"{case_id}[{column}]"


def parse_nodeid(nodeid: str) -> Optional[tuple[str, str]]:
    """(case id, column) of a cell's pytest node id, or None for any other test."""
    match = CELL_ID.search(nodeid)
    return (match["case"], match["column"]) if match else None
