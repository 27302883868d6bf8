"""What produced a report: suite version and git commit, the spec set's digest, package versions,
OS, CPU, threads and date. Every conformance.json and timing.json carries it, so a comparison
of two reports can say what changed besides the results."""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable, Optional

from bnconform.runners.backends.threads import default_threads

# The checkout this package was installed from (editable), if any: runners/reports -> the repository.
ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGES = ("torch", "numpy", "cffi", "pydantic", "pytest", "pytest-benchmark", "bnconform")


def suite_version() -> str:
    from bnconform import __version__

    return __version__


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """HEAD of the suite's checkout, with "-dirty" when it has uncommitted changes."""
    if not (ROOT / ".git").exists():  # an installed package: whatever repository encloses it is not ours
        return "unknown (installed package, not a checkout)"
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git unavailable)"


def spec_digest(files: Iterable[Path]) -> str:
    """sha256 over the spec files (name and bytes, in name order): equal digests, equal specs."""
    h = hashlib.sha256()
    for path in sorted(Path(f) for f in files):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_metadata(spec_files: Iterable[Path] = (), thread_count: Optional[int] = None) -> dict[str, Any]:
    return {
        "suite_version": suite_version(),
        "git_commit": git_commit(),
        "spec_digest": spec_digest(spec_files),
        "packages": package_versions(),
        "os": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": thread_count if thread_count is not None else default_threads(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
