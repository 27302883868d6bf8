"""bnconform as a user gets it, built once per test run: the wheel from a copy of this checkout,
and a fresh virtual environment with it installed (tests/conftest.py makes them fixtures).

Slow (a venv with torch in it, about a minute and a half), so every test that needs it shares
one copy, under pytest-xdist too: the workers build it once, under a lock in the run's shared
temporary directory (the way pytest-xdist's documentation shows for session fixtures).
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Callable

import pytest

from tests.helpers import ROOT


def _not_source(directory: str, names: list[str]) -> set[str]:
    """Build output, environments and generated reports (reports/ at the top only: runners/reports is code)."""
    top = Path(directory) == ROOT
    return {n for n in names if n in (".git", ".venv", ".tox", "__pycache__") or n.endswith((".so", ".egg-info", "_cache"))
            or (top and n in ("build", "dist", "reports"))}


def once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A directory made by `build` once per test run, whichever xdist worker asks first."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        target = factory.mktemp(name)
        build(target)
        return target
    shared = factory.getbasetemp().parent / name  # the run's directory, above every worker's own
    with open(shared.with_name(name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / ".built").exists():
            shutil.rmtree(shared, ignore_errors=True)
            shared.mkdir()
            build(shared)
            (shared / ".built").touch()
    return shared


def build_wheel(out: Path) -> None:
    """Built from a copy of the source tree, so no earlier build output can slip into it."""
    source = out / "source" / "bnconform"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_not_source)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           "-w", str(out / "wheel"), str(source)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.rmtree(out / "source")


def wheel_in(directory: Path) -> Path:
    (found,) = (directory / "wheel").glob("bnconform-*.whl")
    return found


def build_venv(wheel: Path, extras: str = "[torch]") -> Callable[[Path], None]:
    """A venv with the wheel and its extras: `[torch]` (the torch columns) unless told otherwise."""

    def build(env_dir: Path) -> None:
        venv.create(env_dir, with_pip=True)
        # In the user's environment: a PYTHONPATH naming this checkout (the CLI adds the current directory
        # to it for `--backend pkg.module:attr`, and tests call the CLI in-process) shows pip the checkout's
        # bnconform.egg-info, and pip then takes bnconform for installed and installs only its dependencies.
        proc = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{wheel}{extras}"],
                              capture_output=True, text=True, timeout=1800, env=user_env(env_dir / "bin"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert_installed(env_dir / "bin")

    return build


def assert_installed(bin_dir: Path) -> None:
    """The venv has bnconform importable from its own site-packages (a CI run once found it missing
    from the shared venv while pytest, a dependency, was there: pip had seen this checkout through a
    leaked PYTHONPATH and taken bnconform for installed; this names what the venv held instead)."""
    own = "import bnconform, sys; assert bnconform.__file__.startswith(sys.prefix), bnconform.__file__"
    proc = subprocess.run([str(bin_dir / "python"), "-c", own], capture_output=True, text=True, timeout=120, cwd=bin_dir,
                          env=user_env(bin_dir))
    if proc.returncode != 0:
        listing = subprocess.run([str(bin_dir / "python"), "-m", "pip", "list"], capture_output=True, text=True,
                                 timeout=120, env=user_env(bin_dir))
        raise AssertionError(f"bnconform is not importable in {bin_dir.parent}: {proc.stderr[-1000:]}\n"
                             f"pip list:\n{listing.stdout}")


def user_env(bin_dir: Path) -> dict[str, str]:
    """The environment of a user whose PATH starts with that venv, with nothing of this checkout's."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env
