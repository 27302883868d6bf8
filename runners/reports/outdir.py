"""The report directory: checked and cleared before a run starts, so that a run that cannot
write its reports stops before any case runs, and one that dies never leaves an older report
there looking like its own."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

# Every file a command may write into --out; each run removes the ones it will write.
REPORT_FILES = {
    "run": ("conformance.json", "conformance.md", "conformance.html"),
    "check": ("conformance.json", "conformance.md", "conformance.html", "check.md"),
    "mutants": ("conformance.json", "conformance.md", "conformance.html", "mutants.md", "mutants.json"),
    "bench": ("timing.json", "timing.md", "timing.html"),
    "merge": ("conformance.json", "conformance.md", "conformance.html"),
}


class OutDirError(Exception):
    """--out cannot hold the reports (the message says why)."""


def prepare(out: Path, names: tuple[str, ...], option: str = "--out") -> Path:
    """Create `out` if needed, prove it writable, and remove the listed report files from it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutDirError(f"{option} {out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".bnconform-", dir=out)
        os.close(fd)
        os.unlink(probe)
        for name in names:
            (out / name).unlink(missing_ok=True)
    except OSError as exc:
        raise OutDirError(f"{option} {out}: cannot write reports there ({type(exc).__name__}: {exc.strerror or exc})") from None
    return out


def prepare_file(path: Path, option: str) -> Path:
    """The same for one report file the user placed elsewhere (e.g. --junit FILE): its directory
    created and writable, an older file of that name removed."""
    path = Path(path)
    if path.is_dir():
        raise OutDirError(f"{option} {path}: is a directory")
    prepare(path.parent, (path.name,), option=f"{option} {path}: directory")
    return path


def prepare_reports(out: Path, command: str, junit: Optional[Path] = None) -> Path:
    """--out, and --junit where given, for the report files of `command` (run, check, merge...):
    a --junit naming one of the command's own files in --out is refused, as it would be overwritten."""
    prepare(out, REPORT_FILES[command])
    if junit is not None:
        target = junit.resolve()
        if target.parent == out.resolve() and target.name in REPORT_FILES[command]:
            whose = "merge" if command == "merge" else "run"
            raise OutDirError(f"--junit {junit}: that is the {whose}'s own {target.name} in --out")
        prepare_file(target, "--junit")
    return out
