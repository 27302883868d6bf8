"""Fixtures shared by the tests that use bnconform as installed from its wheel (tests/installed.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.installed import assert_installed, build_venv, build_wheel, once, wheel_in


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout (once per test run)."""
    return wheel_in(once(tmp_path_factory, "bnconform-wheel", build_wheel))


@pytest.fixture(scope="session")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a fresh virtual environment with that wheel installed (once per test run)."""
    bin_dir = once(tmp_path_factory, "bnconform-venv", build_venv(wheel)) / "bin"
    assert_installed(bin_dir)  # still there for this worker, however long ago another built it
    return bin_dir


@pytest.fixture(scope="session")
def installed_without_torch(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a fresh venv with the wheel alone (`pip install bnconform`): no torch."""
    bin_dir = once(tmp_path_factory, "bnconform-venv-no-torch", build_venv(wheel, extras="")) / "bin"
    assert_installed(bin_dir)
    return bin_dir
