"""The one place results are collected: the session's controller (the pytest process itself, or
the pytest-xdist controller) turns cell reports into the RunReport and writes the reports.

It knows which cells were selected from the collected node ids, before any case runs, so the
report always holds every selected cell: one that never reported (the run was interrupted, a
test process died) reads error with the reason instead of vanishing.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Sequence

import pytest

from bnconform.cases.loader import spec_files
from bnconform.runners.backends import UnknownBackend, torch_release_warning, uses_torch
from bnconform.runners.engine import manifest, shards
from bnconform.runners.engine.cellids import parse_nodeid
from bnconform.runners.engine.cells import EmptySelection, selected_columns, spec_dirs
from bnconform.runners.engine.options import Settings
from bnconform.runners.reports import outdir
from bnconform.runners.reports.matrix import write_all
from bnconform.runners.reports.metadata import run_metadata, suite_version
from bnconform.runners.reports.results import BackendInfo, CaseResult, RunReport, checked_nothing


def _first_line(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return report.longreprtext or f"{report.when} {report.outcome}"


class Collector:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.expected: dict[str, tuple[str, str]] = {}  # node id -> (case id, column), in collection order
        self.results: dict[str, CaseResult] = {}
        self.backends: dict[str, BackendInfo] = {}
        self.columns: list[str] = []
        self.start_time = time.perf_counter()
        self.report: Optional[RunReport] = None
        self.paths: list[Path] = []
        self.warnings: list[str] = []
        self.errors: list[str] = []  # why a run that wrote its report still has no verdict (exit 2)

    @property
    def active(self) -> bool:
        return bool(self.expected)

    def start(self, nodeids: Sequence[str]) -> None:
        """Called once, when the collection is known: note the cells, prepare --out (or stop the run)."""
        if self.expected:
            return
        self.expected = {n: parsed for n in nodeids if (parsed := parse_nodeid(n)) is not None}
        if not self.expected:
            return  # no bnconform cell in this session: stay out of the way
        self.columns = list(dict.fromkeys(column for _, column in self.expected.values()))
        try:
            outdir.prepare(Path(self.settings.out), outdir.REPORT_FILES["run"])
            if self.settings.junit:
                outdir.prepare_file(Path(self.settings.junit), "--junit")
        except outdir.OutDirError as exc:
            self.expected = {}  # no report: it could not be written where asked, and no case ran
            pytest.exit(f"bnconform: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
        self.start_time = time.perf_counter()

    def record(self, report: pytest.TestReport) -> None:
        cell = self.expected.get(report.nodeid)
        if cell is None:
            return
        data: Optional[dict[str, Any]] = getattr(report, "bnconform", None)
        previous = self.results.get(report.nodeid)
        if data is not None:
            result = CaseResult(**data["result"])
            self.backends[result.backend] = BackendInfo(**data["backend"])
        elif report.failed:  # setup or teardown error, or a crashed pytest-xdist worker ("???")
            if previous is not None and previous.outcome in ("failed", "error"):
                return
            result = self._bare(cell, "error", f"{report.when}: {_first_line(report)}")
        elif report.skipped and report.when == "setup":  # skipped by a mark or -m before running
            result = self._bare(cell, "skipped", _first_line(report))
        else:
            return
        self.results[report.nodeid] = result

    @staticmethod
    def _bare(cell: tuple[str, str], outcome: str, message: str) -> CaseResult:
        case_id, column = cell
        return CaseResult(spec=case_id, family=case_id.split("/")[0], backend=column, outcome=outcome, message=message)

    def _stale_entries(self, results: list[CaseResult], interrupted: bool) -> list[str]:
        """Manifest entries that match no selected cell, or that excused nothing in the cells they
        match (fixed? too narrow?): warned about, as a typo would be."""
        paths = [Path(p) for p in self.settings.manifest]
        paths += [Path(b.manifest) for b in self.backends.values() if b.manifest]
        try:
            entries = manifest.load(dict.fromkeys(paths))
        except manifest.ManifestError:
            return []  # reported on the cells already
        out = []
        for e in entries:
            mine = [r for r in results if e.matches(r.spec, r.backend)]
            where = f"manifest {e.source}: entry {e.case!r} (backend {e.backend!r}"
            if not mine:
                out.append(f"{where}) matches no selected case")
            elif not interrupted and not any(r.outcome in ("xfailed", "xpassed") and e.describe() in r.message for r in mine):
                out.append(f"{where}, expects {e.expectation()}) excused none of the {len(mine)} cells it names")
        return out

    def finish(self, session: pytest.Session) -> None:
        """Complete the report (every selected cell), write it, and make the exit status agree."""
        if not self.active:
            return
        interrupted = session.exitstatus == pytest.ExitCode.INTERRUPTED
        why = ("not run: the run was interrupted before this cell ran" if interrupted
               else "not run: its test process stopped before reporting it")
        results = [self.results.get(n) or self._bare(cell, "error", why) for n, cell in self.expected.items()]
        backends = [self.backends.get(name) or BackendInfo(name, "unknown (no cell of it ran)", [])
                    for name in self.columns]
        self.warnings = self._stale_entries(results, interrupted) + [
            f"backend {b.name} did not run: unavailable here ({b.unavailable}); its "
            f"{sum(r.backend == b.name for r in results)} cells are skipped" for b in backends if b.unavailable]
        torch_columns = self._torch_columns()
        self.warnings += [w for b in backends if not b.unavailable and b.name in torch_columns
                          and (w := torch_release_warning(b.name, b.version)) is not None]
        try:
            files = spec_files(spec_dirs(self.settings))
        except Exception:  # a spec dir that vanished must not lose the report
            files = []
        self.report = RunReport(
            metadata={**run_metadata(files), **shards.metadata(self.settings)}, strict=self.settings.strict,
            suite_version=suite_version(),
            backends=backends, results=results, wall_time_s=round(time.perf_counter() - self.start_time, 2),
            interrupted=interrupted, unchecked=checked_nothing(backends, results),
        )
        self.errors = list(self.report.unchecked)
        try:
            self.paths = write_all(self.report, Path(self.settings.out), html=self.settings.html,
                                   junit=Path(self.settings.junit) if self.settings.junit else None)
        except OSError as exc:
            self.warnings.append(f"could not write the reports to {self.settings.out}: {exc}")
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
            return
        if self.report.failed() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.report.unchecked and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            session.exitstatus = pytest.ExitCode.USAGE_ERROR

    def _torch_columns(self) -> set[str]:
        """The run's columns built on torch (those whose torch release is worth a warning)."""
        try:
            return {c.name for c in selected_columns(self.settings) if uses_torch(c.target)}
        except (UnknownBackend, EmptySelection):  # refused before any case ran; never lose the report here
            return set()
