"""The pytest side of the runner: options, case selection, parametrisation and result collection.

Results are read from test reports (record_property travels with them), so they are
collected on the controller whether or not pytest-xdist runs the cases in workers.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Optional

import pytest

import runners
from cases.loader import BUILTIN_SPECS, SpecError, load_cases, spec_files
from cases.model import Case, id_matches
from runners import manifest
from runners.backends import UnknownBackend, default_backends, resolve, unavailable_reason
from runners.metadata import run_metadata
from runners.report_writers import terminal_summary, write_all
from runners.results import BackendInfo, CaseResult, RunReport

CASES_KEY = pytest.StashKey[list]()
SPEC_FILES_KEY = pytest.StashKey[list]()
BACKENDS_KEY = pytest.StashKey[list]()
MANIFEST_KEY = pytest.StashKey[list]()
NODE_RE = re.compile(r"test_conformance\[(?P<case>.*)\[(?P<backend>[^\[\]]*)\]\]$")


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("bnconform", "BatchNorm conformance")
    group.addoption("--backend", action="append", default=[], metavar="NAME",
                    help="backend to test (repeatable): a built-in or plugin name, package.module:attr, "
                         "torch-module:package.module:factory, or ALIAS=any of those to run it under another "
                         "name. Default: every built-in backend that can run here.")
    group.addoption("--specs", action="append", default=[], metavar="DIR",
                    help="extra spec directory, added to the built-in specs/ (repeatable)")
    group.addoption("--case", action="append", default=[], metavar="ID",
                    help="run only cases whose id equals ID or matches it as a glob (repeatable)")
    group.addoption("--exclude", action="append", default=[], metavar="ID",
                    help="leave out cases whose id equals ID or matches it as a glob (repeatable)")
    group.addoption("--family", action="append", default=[], metavar="NAME",
                    help="run only this family (repeatable)")
    group.addoption("--manifest", action="append", default=[], metavar="FILE",
                    help="expected-deviation manifest: matching cells are xfailed (repeatable)")
    group.addoption("--strict-manifest", action="store_true", default=False,
                    help="a manifest entry that passes (xpassed) fails the run")
    group.addoption("--report-dir", default=None, metavar="DIR",
                    help="write conformance.json and conformance.md here at the end of the run")
    bench = parser.getgroup("bnconform-bench", "BatchNorm timing (runners/bench_cases.py, via `bnconform bench`)")
    bench.addoption("--bench-backend", action="append", default=[], metavar="NAME", help="backend to time (repeatable)")
    bench.addoption("--bench-shape", action="append", default=[], metavar="NxCx...", help="only this shape (repeatable)")
    bench.addoption("--bench-threads", type=int, default=0, metavar="N", help="threads for every backend (0: torch's)")


def split_alias(name: str) -> tuple[str, str]:
    """`ALIAS=SPEC` runs SPEC under the column name ALIAS (a new build standing in for an old one)."""
    alias, sep, spec = name.partition("=")
    return (alias, spec) if sep and alias and ":" not in alias else (name, name)


def _matches(case_id: str, patterns: list[str]) -> bool:
    return any(id_matches(case_id, p) for p in patterns)


def _selected(cases: list[Case], include: list[str], exclude: list[str], families: list[str]) -> list[Case]:
    """Cases of the families (all if none), matching an include pattern (all if none), minus excludes."""

    def wanted(case: Case) -> bool:
        if families and case.family not in families:
            return False
        if include and not _matches(case.id, include):
            return False
        return not _matches(case.id, exclude)

    return [c for c in cases if wanted(c)]


def configure(config: pytest.Config) -> None:
    dirs = [BUILTIN_SPECS] + [Path(d) for d in config.getoption("specs")]
    try:
        cases = load_cases(dirs)
        config.stash[SPEC_FILES_KEY] = spec_files(dirs)
    except SpecError as exc:
        raise pytest.UsageError(f"spec error: {exc}") from None
    config.stash[CASES_KEY] = _selected(
        cases, config.getoption("case"), config.getoption("exclude"), config.getoption("family")
    )
    names = config.getoption("backend") or default_backends()
    try:
        config.stash[BACKENDS_KEY] = [(alias, resolve(spec)) for alias, spec in map(split_alias, dict.fromkeys(names))]
    except UnknownBackend as exc:
        raise pytest.UsageError(str(exc)) from None
    paths = [Path(p) for p in config.getoption("manifest")]
    for _, backend in config.stash[BACKENDS_KEY]:  # a backend may ship its own manifest
        if getattr(backend, "manifest", None):
            paths.append(Path(backend.manifest))
    try:
        config.stash[MANIFEST_KEY] = manifest.load(paths)
    except manifest.ManifestError as exc:
        raise pytest.UsageError(f"manifest error: {exc}") from None
    if not hasattr(config, "workerinput"):
        names = [n for n, _ in config.stash[BACKENDS_KEY]]
        for entry in config.stash[MANIFEST_KEY]:
            if not any(entry.matches(c.id, n) for c in config.stash[CASES_KEY] for n in names):
                config.issue_config_time_warning(
                    UserWarning(f"manifest {entry.source}: entry {entry.case!r} (backend {entry.backend!r}) "
                                "matches no selected case"), stacklevel=2)
    report_dir = config.getoption("report_dir")
    if report_dir and not hasattr(config, "workerinput"):  # the xdist controller, or no xdist
        config.pluginmanager.register(ResultCollector(config, Path(report_dir)), "bnconform-results")


def parametrize(metafunc: pytest.Metafunc) -> None:
    if "conformance_cell" not in metafunc.fixturenames:
        return
    cases = metafunc.config.stash[CASES_KEY]
    backends = metafunc.config.stash[BACKENDS_KEY]
    cells = [(case, name, backend) for case in cases for name, backend in backends]
    metafunc.parametrize("conformance_cell", cells, ids=[f"{c.id}[{n}]" for c, n, _ in cells])


class ResultCollector:
    """Turns conformance test reports into CaseResults and writes the reports at session end."""

    def __init__(self, config: pytest.Config, out_dir: Path) -> None:
        self.config = config
        self.out_dir = out_dir
        self.results: dict[str, CaseResult] = {}
        self.families = {c.id: c.family for c in config.stash[CASES_KEY]}
        self.start = time.perf_counter()
        self.report: Optional[RunReport] = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        match = NODE_RE.search(report.nodeid)
        if not match:
            return
        props = dict(report.user_properties)
        case_id, backend = props.get("case", match["case"]), props.get("backend", match["backend"])
        outcome = self._outcome(report, props)
        if outcome is None:
            return
        message = props.get("bnconform_message", "")
        if not message and report.outcome != "passed":
            message = report.longreprtext or ""
            if report.skipped and isinstance(report.longrepr, tuple):
                message = str(report.longrepr[2]).removeprefix("Skipped: ")
        previous = self.results.get(report.nodeid)
        if previous is not None and previous.outcome in ("failed", "error") and report.when == "teardown":
            return
        self.results[report.nodeid] = CaseResult(
            spec=case_id,
            family=props.get("family", self.families.get(case_id, case_id.split("/")[0])),
            backend=backend,
            outcome=outcome,
            message=message,
            duration=round(float(getattr(report, "duration", 0.0)), 6),
            tolerance=props.get("tolerance", ""),
            diagnosis=list(props.get("bnconform_diagnosis", [])),
        )

    @staticmethod
    def _outcome(report: pytest.TestReport, props: dict) -> Optional[str]:
        xfail = hasattr(report, "wasxfail")
        if report.when == "call":
            if "bnconform_outcome" in props and report.outcome != "failed":
                return props["bnconform_outcome"]
            if report.passed:
                return "xpassed" if xfail else "passed"
            if report.skipped:
                return "xfailed" if xfail else "skipped"
            return props.get("bnconform_outcome", "failed")
        if report.when == "setup":
            if report.skipped:
                return "xfailed" if xfail else "skipped"
            return "error" if report.failed else None
        return "error" if report.failed else None  # teardown

    def build_report(self) -> RunReport:
        backends = []
        for name, backend in self.config.stash[BACKENDS_KEY]:
            try:
                version = backend.version()
            except Exception as exc:  # a broken backend's version must not lose the report
                version = f"unknown ({type(exc).__name__})"
            try:
                unavailable = unavailable_reason(backend)
            except Exception as exc:
                unavailable = f"{type(exc).__name__}: {exc}"
            backends.append(BackendInfo(name, version, sorted(backend.capabilities.provides()), unavailable))
        order = {c.id: i for i, c in enumerate(self.config.stash[CASES_KEY])}
        names = [n for n, _ in self.config.stash[BACKENDS_KEY]]
        results = sorted(self.results.values(), key=lambda r: (order.get(r.spec, 1 << 30), names.index(r.backend) if r.backend in names else 99))
        return RunReport(
            metadata=run_metadata(self.config.stash[SPEC_FILES_KEY]),
            strict=bool(self.config.getoption("strict_manifest")),
            suite_version=runners.__version__,
            backends=backends,
            results=results,
            wall_time_s=round(time.perf_counter() - self.start, 2),
        )

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.report = self.build_report()
        self.paths = write_all(self.report, self.out_dir)

    def pytest_terminal_summary(self, terminalreporter) -> None:  # type: ignore[no-untyped-def]
        if self.report is None:
            return
        terminalreporter.write_sep("=", "bnconform conformance")
        terminalreporter.write_line(terminal_summary(self.report))
        for p in self.paths:
            terminalreporter.write_line(f"wrote {p}")
