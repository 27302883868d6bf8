"""pytest entry: conformance options, spec loading, case x backend parametrisation, reports.

`pytest` at the root runs the suite's own tests (tests/) and every conformance case
(cases/test_conformance.py) on every installed built-in backend.
"""
from __future__ import annotations

import pytest

from runners import plugin


def pytest_addoption(parser: pytest.Parser) -> None:
    plugin.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    plugin.configure(config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    plugin.parametrize(metafunc)
