"""The suite's own pytest configuration (`make test` runs pytest at the repository root).

bnconform's pytest plugin arrives through its `pytest11` entry point, exactly as in a user's
session, and tests/test_conformance.py asks it for every cell on the built-in backends. The
package must therefore be installed (`make test` sets up .venv with it, editable); this file
turns a session without it into one clear message instead of a wall of import errors.
"""
from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("bnconform"):
        raise pytest.UsageError(
            "bnconform's pytest plugin is not registered: install the package first "
            "(`make test` sets up .venv with it, or `pip install -e .[dev]`)")
