"""bnconform's pytest plugin: the one engine behind `bnconform run`, `check` and `mutants`, and
behind bnconform's cells in a user's own pytest session.

Registered through the `pytest11` entry point, so it is present in every pytest session of
the environment, and inert there: it declares its `--bnconform-*` options and does nothing
else (it imports nothing of the engine: the entry point costs what its options do) until a
collected test asks for the `bnconform_cell` fixture (the function
`bnconform.testing.test_conformance`, placed in a test module as ONNX's backend tests are).
Then it loads the specs (once per process), parametrises that test with one cell per case x
backend column, runs each cell with its backend in a worker process of its own, and the
session's controller collects every cell's result into the reports.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Optional, Sequence

import pytest

from bnconform.runners.engine.cellids import parse_nodeid
from bnconform.runners.engine.options import Settings, add_pytest_options

if TYPE_CHECKING:  # the engine loads only when a session has cells (_cells, Controller._collect)
    from bnconform.runners.engine.cells import Cell, Cells
    from bnconform.runners.engine.collector import Collector
    from bnconform.runners.reports import progress
    from bnconform.runners.reports.results import BackendInfo, CaseResult

SETTINGS = pytest.StashKey[Settings]()
CELLS = pytest.StashKey["Cells | str"]()  # the cells, or why they could not be set up
RESULT = pytest.StashKey[tuple["CaseResult", "BackendInfo"]]()


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_addoption(parser: pytest.Parser) -> None:
    add_pytest_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SETTINGS] = Settings.from_config(config)
    if config.stash[SETTINGS].keep_order and (config.getoption("numprocesses", None) or 0):
        raise pytest.UsageError("--bnconform-keep-order runs the cells in order in one process: not with -n")
    if not _is_worker(config):  # the controller: the only place results are collected
        config.pluginmanager.register(Controller(config), "bnconform-controller")


def pytest_unconfigure(config: pytest.Config) -> None:
    cells = config.stash.get(CELLS, None)
    if cells is not None and not isinstance(cells, str):
        cells.close()


def _cells(config: pytest.Config) -> Cells:
    """The cells of this process, set up on first request (the plugin's activation)."""
    if CELLS not in config.stash:
        from bnconform.cases.loader import SpecError
        from bnconform.runners.backends import UnknownBackend
        from bnconform.runners.engine import manifest
        from bnconform.runners.engine.cells import BackendProblem, Cells, EmptySelection

        try:
            config.stash[CELLS] = Cells(config.stash[SETTINGS])
        except (SpecError, EmptySelection, UnknownBackend, manifest.ManifestError, BackendProblem) as exc:
            config.stash[CELLS] = f"bnconform: {exc}"
    found = config.stash[CELLS]
    if isinstance(found, str):
        raise pytest.Collector.CollectError(found)
    return found


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bnconform_cell" not in metafunc.fixturenames:
        return
    cells = _cells(metafunc.config).all()
    metafunc.parametrize("bnconform_cell", cells, ids=[c.id for c in cells], indirect=True)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--bnconform-keep-order: the cells back in Cells.all()'s order, after any plugin that
    shuffles or sorts (pytest-randomly, say); other tests keep their places."""
    cells = config.stash.get(CELLS, None)
    if not config.stash[SETTINGS].keep_order or cells is None or isinstance(cells, str):
        return
    position = {c.id: i for i, c in enumerate(cells.all())}
    places = [i for i, item in enumerate(items) if _cell_id(item) in position]
    ordered = sorted((items[i] for i in places), key=lambda item: position[_cell_id(item) or ""])
    for i, item in zip(places, ordered):
        items[i] = item


def _cell_id(item: pytest.Item) -> Optional[str]:
    from bnconform.runners.engine.cells import Cell  # loaded already: the session has cells

    callspec = getattr(item, "callspec", None)
    cell = callspec.params.get("bnconform_cell") if callspec is not None else None
    return cell.id if isinstance(cell, Cell) else None


class CellCheck:
    """What the test function holds: one cell, run and turned into pytest's outcome."""

    def __init__(self, cells: Cells, cell: Cell, node: pytest.Item) -> None:
        self.cells, self.cell, self.node = cells, cell, node

    def verdict(self) -> None:
        result, info = self.cells.run(self.cell)
        self.node.stash[RESULT] = (result, info)
        where = f"{self.cell.case.id} on {self.cell.column.name}"
        if result.outcome == "skipped":
            pytest.skip(result.message)
        if result.outcome in ("deviates", "xfailed"):  # visible as such in the reports, never as a pass
            pytest.xfail(result.message.splitlines()[0])
        if result.outcome == "xpassed" and self.cells.settings.strict:
            pytest.fail(f"XPASS(strict) {where}: {result.message}", pytrace=False)
        if result.outcome in ("failed", "error"):
            pytest.fail(f"{where}: {result.outcome}\n{result.message}", pytrace=False)


@pytest.fixture
def bnconform_cell(request: pytest.FixtureRequest) -> CellCheck:
    """One bnconform cell (case x backend column), parametrised by this plugin."""
    return CellCheck(_cells(request.config), request.param, request.node)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if call.when == "call" and RESULT in item.stash:  # travels to the xdist controller with the report
        result, info = item.stash[RESULT]
        report.bnconform = {"result": dataclasses.asdict(result), "backend": dataclasses.asdict(info)}
    return report


class Controller:
    """The session controller's hooks (the pytest process, or the pytest-xdist controller).

    Until the collection shows a cell it holds nothing: the collector, the reports and the
    progress display load only in a session that has bnconform cells."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.collector: Optional[Collector] = None
        self.progress: Optional[progress.Display] = None

    def _collect(self, nodeids: Sequence[str]) -> None:
        """Once the selected cells are known: the collector, and the live progress if asked for."""
        if self.collector is None:
            if self.config.option.collectonly or not any(parse_nodeid(n) for n in nodeids):
                return  # no cell in this session (or none to run: --collect-only): stay out of the way
            from bnconform.runners.engine.collector import Collector

            self.collector = Collector(self.config.stash[SETTINGS])
        self.collector.start(nodeids)
        self._started()

    def _started(self) -> None:
        if self.progress is not None or self.collector is None or not self.collector.active:
            return
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is None:
            return
        from bnconform.runners.reports import progress

        self.progress = progress.create(self.collector.settings.progress, len(self.collector.expected),
                                        self.collector.columns, terminal.write_line,
                                        verbose=self.config.get_verbosity() > 0)
        if self.progress is not None:
            self.progress.start()

    def _stop_progress(self, interrupted: bool = False) -> None:
        if self.progress is not None:
            display, self.progress = self.progress, None
            display.stop(interrupted)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._collect([item.nodeid for item in session.items])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: Sequence[str]) -> None:
        self._collect(ids)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.collector is None:
            return
        self.collector.record(report)
        result = self.collector.results.get(report.nodeid)
        if self.progress is not None and result is not None:
            self.progress.tally.record(report.nodeid, result.backend, result.outcome)
            self.progress.update()

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config) -> Any:
        """With the live progress on, a cell's letter (the -q dot) is left out: the progress says it."""
        status = yield
        if (self.progress is not None and self.collector is not None and report.nodeid in self.collector.expected
                and config.get_verbosity() <= 0):
            return (status[0], "", "")
        return status

    def pytest_keyboard_interrupt(self) -> None:
        self._stop_progress(interrupted=True)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self._stop_progress(interrupted=session.exitstatus == pytest.ExitCode.INTERRUPTED)
        if self.collector is not None:
            self.collector.finish(session)

    def pytest_unconfigure(self) -> None:
        self._stop_progress()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        report = self.collector.report if self.collector is not None else None
        if self.collector is None or report is None:
            return
        from bnconform.runners.reports.matrix import terminal_summary

        terminalreporter.write_sep("=", "bnconform conformance")
        terminalreporter.write_line(terminal_summary(report))
        for warning in self.collector.warnings:
            terminalreporter.write_line(f"warning: {warning}")
        for error in self.collector.errors:
            terminalreporter.write_line(f"error: {error}")
        for path in self.collector.paths:
            terminalreporter.write_line(f"wrote {path}")
