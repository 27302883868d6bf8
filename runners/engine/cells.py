"""Cells: the selected cases x backend columns, their ids, and running one cell to a result.

This is the part of the engine that lives in every process that runs cases (a plain pytest
session, or each pytest-xdist worker): it loads the specs once, keeps one isolated worker per
backend column (isolation.py), runs a case beside the oracle (execute.py), applies expected-
deviation manifests, and returns the one result model (runners/reports/results.py).
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from bnconform.cases.loader import BUILTIN_SPECS, file_families, load_cases, spec_files
from bnconform.cases.model import Case, id_matches
from bnconform.runners.backends import Column, columns, default_backends
from bnconform.runners.engine import manifest, order, shards
from bnconform.runners.engine.cellids import cell_id
from bnconform.runners.engine.execute import exercises, reproduce_command, run_case, still_fails, tolerance_label
from bnconform.runners.engine.isolation import HostError, Hosts, RemoteBackend, warm_up
from bnconform.runners.engine.options import Settings
from bnconform.runners.reports.results import FAILING, BackendInfo, CaseResult


def spec_dirs(settings: Settings) -> list[Path]:
    return [BUILTIN_SPECS] + [Path(d) for d in settings.specs]


def select(cases: list[Case], settings: Settings) -> list[Case]:
    """Cases of the families (all if none), matching an include pattern (all if none), minus excludes."""

    def wanted(case: Case) -> bool:
        if case.tier == "full" and settings.tier != "full":
            return False
        if settings.family and case.family not in settings.family:
            return False
        if settings.case and not any(id_matches(case.id, p) for p in settings.case):
            return False
        return not any(id_matches(case.id, p) for p in settings.exclude)

    chosen = [c for c in cases if wanted(c)]
    if settings.keep_order and settings.case:  # each pattern's matches in turn, a case once
        chosen = list({c.id: c for p in settings.case for c in chosen if id_matches(c.id, p)}.values())
    return chosen


class EmptySelection(Exception):
    """No case matches the selection: a usage error that names the filters, never an empty pass."""


def _each_filter_matches(cases: list[Case], families: list[str], settings: Settings) -> None:
    """A filter value that matches nothing is a typo (or a stale name), even beside others that do."""
    for family in settings.family:
        if family not in families:
            raise EmptySelection(f"--family {family!r} matches no family (families: {', '.join(families)})")
    for option, patterns in (("case", settings.case), ("exclude", settings.exclude)):
        for pattern in patterns:
            matched = [c for c in cases if id_matches(c.id, pattern)]
            if not matched:
                hint = " (a spec with a grid has ids like family/spec[dim=2,...]: add [*] or *)" if "[" not in pattern else ""
                raise EmptySelection(f"--{option} {pattern!r} matches no case{hint}")
            if option == "case" and settings.tier != "full" and all(c.tier == "full" for c in matched):
                raise EmptySelection(f"--case {pattern!r} matches only cases of the full tier: add --tier full")


def families_needed(settings: Settings) -> Optional[set[str]]:
    """The families a selection's filters name (None: any): those of --family and the family part
    of each --case pattern, unless a pattern has a `*` there or there is neither. Only their spec
    files are validated and expanded (each filter is still checked against what it names)."""
    heads = {pattern.split("/", 1)[0] for pattern in settings.case}
    if any("*" in head for head in heads) or not (settings.family or settings.case):
        return None
    return set(settings.family) | heads


def selected_cases(settings: Settings) -> list[Case]:
    """The selected cases (specs loaded once per process), only its shard's with --shard I/N.
    Raises SpecError or EmptySelection."""
    for directory in settings.specs:  # a directory without specs is a wrong path, not an addition of nothing
        if Path(directory).is_dir() and not spec_files([Path(directory)]):
            raise EmptySelection(f"--specs {directory}: no spec files (*.yaml, *.yml) in that directory")
    try:
        shard = shards.parse(settings.shard)
    except shards.ShardError as exc:
        raise EmptySelection(str(exc)) from None
    directories = spec_dirs(settings)
    needed = families_needed(settings)
    everything = load_cases(directories, needed)
    families = list(dict.fromkeys(f for f in file_families(directories).values() if f is not None))
    _each_filter_matches(everything, families, settings)
    cases = select(everything, settings)
    if not cases:
        filters = [f"{key} {' '.join(repr(v) for v in values)}" for key, values in
                   (("family", settings.family), ("case", settings.case), ("exclude", settings.exclude),
                    ("specs", settings.specs)) if values]
        raise EmptySelection(f"no case matches the selection ({'; '.join(filters) or 'the spec set is empty'})")
    try:  # after the filters, so that a filter's typo is still its own error
        return shards.take(cases, shard)
    except shards.ShardError as exc:
        raise EmptySelection(str(exc)) from None


def selected_columns(settings: Settings) -> list[Column]:
    """The backend columns (names checked, nothing imported). Raises UnknownBackend, or
    UnknownColumn for a --fresh-worker value that names none of them."""
    found = columns(settings.backend or default_backends())
    names = [c.name for c in found]
    for name in settings.fresh_worker:
        if name != "all" and name not in names:
            raise UnknownColumn(f"--fresh-worker {name!r} names no backend column of this run "
                                f"(columns: {', '.join(names)}; or 'all')")
    return found


class UnknownColumn(EmptySelection):
    """A --fresh-worker value that names no column of the run: a typo, refused as a usage error."""


@dataclass(frozen=True)
class Cell:
    case: Case
    column: Column

    @property
    def id(self) -> str:
        return cell_id(self.case.id, self.column.name)


class BackendProblem(Exception):
    """A requested backend that cannot be run: it breaks the protocol, its name is taken, or it is
    unavailable here (unless --allow-unavailable). Found before any case runs; a usage error."""


def uses_bfloat16(cases: Sequence[Case]) -> bool:
    """Whether a case's module or input is bfloat16 (its workers then want ml_dtypes preloaded)."""
    return any("bfloat16" in (c.config.dtype, c.config.input_dtype) for c in cases)


def preflight(settings: Settings, columns: list[Column], cases: Sequence[Case] = ()) -> Hosts:
    """Start each column's worker and check what the backend declares, once, before any case runs.

    Raises BackendProblem naming every column that cannot run; an unavailable one is allowed
    with --allow-unavailable (its cells then read skipped with the reason). The hosts are kept
    for the cells of this process (`bnconform run` checks here, then runs in the same process).
    """
    key = (tuple(columns), settings.timeout)
    if key in _PREFLIGHTED:
        return _PREFLIGHTED.pop(key)
    warm_up(columns, uses_bfloat16(cases))
    hosts = Hosts(settings.timeout)
    # Named backends must run; the defaults are "the built-ins that can run here" (cffi without a
    # compiler is skipped, saying why).
    allowed = settings.allow_unavailable or not settings.backend
    problems = []
    for column in columns:
        backend = hosts.backend(column)
        if column.problem:
            problems.append(f"backend {column.name}: {column.problem}")
        elif backend.broken:
            problems.append(f"backend {column.name} breaks the backend protocol: {backend.broken}")
        elif backend.available() and not allowed:
            problems.append(f"backend {column.name} is unavailable: {backend.available()} "
                            "(--allow-unavailable runs without it, its cells skipped)")
        elif backend.manifest:
            try:
                manifest.load([Path(backend.manifest)])
            except manifest.ManifestError as exc:
                problems.append(f"backend {column.name} ships a malformed manifest: {exc}")
    if problems:
        hosts.close()
        raise BackendProblem("; ".join(problems))
    return hosts


_PREFLIGHTED: dict[tuple[tuple[Column, ...], float], Hosts] = {}


def keep_for_this_process(settings: Settings, hosts: Hosts) -> None:
    """Hand checked hosts to the next Cells of this process (the CLI's pytest session)."""
    _PREFLIGHTED[(tuple(selected_columns(settings)), settings.timeout)] = hosts


class Cells:
    """What one test process needs to run cells: cases, columns, manifests, backend workers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cases = selected_cases(settings)
        self.columns = selected_columns(settings)
        self.entries = manifest.load(Path(p) for p in settings.manifest)
        self.hosts = preflight(settings, self.columns, self.cases)
        self.shipped: dict[str, list[manifest.Entry] | str] = {}  # a column's own manifest, or why it failed to load
        self.fresh = {c.name for c in self.columns if {"all", c.name} & set(settings.fresh_worker)}
        self.counted: dict[str, collections.Counter[str]] = {}  # a counting column's totals after its last cell

    def all(self) -> list[Cell]:
        return [Cell(case, column) for case in self.cases for column in self.columns]

    def _shipped(self, backend: RemoteBackend) -> list[manifest.Entry] | str:
        if backend.name not in self.shipped:
            try:
                self.shipped[backend.name] = manifest.load([Path(backend.manifest)]) if backend.manifest else []
            except manifest.ManifestError as exc:
                self.shipped[backend.name] = f"the manifest {backend.name} ships is malformed: {exc}"
        return self.shipped[backend.name]

    def run(self, cell: Cell) -> tuple[CaseResult, BackendInfo]:
        """Run one cell to its result (never raises for a backend's fault)."""
        case, name = cell.case, cell.column.name
        start = time.perf_counter()
        backend = self.hosts.backend(cell.column)
        if name in self.fresh and backend.history():  # --fresh-worker: every cell alone
            backend.restart()
        backend.begin_cell(case)
        before: list[Case] = backend.history()
        shipped = self._shipped(backend)
        diagnosis: tuple[str, ...]
        culprits: list[str] = []
        if isinstance(shipped, str):
            outcome, message, diagnosis = "error", shipped, ()
        else:
            column = cell.column
            given_as = column.name if column.name == column.target else f"{column.name}={column.target}"
            result = run_case(case, backend, name, given_as)
            outcome, message, diagnosis = result.outcome, result.message, result.diagnosis
            if outcome in FAILING and not self.settings.no_rerun_alone:  # does it fail alone?
                if before:
                    message, culprits = self._alone(cell, backend, before, message, given_as)
                else:
                    message = f"{message.rstrip()}\n{order.RAN_FIRST}"
            base = backend.conventions.deviations() if backend.conventions else frozenset()
            outcome, message = self._expected(case, backend, name, outcome, message, diagnosis,
                                              self.entries + shipped, base)
        info = BackendInfo(name, backend.version(), sorted(backend.capabilities.provides()), backend.available(),
                           backend.conventions.describe() if backend.conventions else None, backend.manifest)
        return CaseResult(spec=case.id, family=case.family, backend=name, outcome=outcome, message=message,
                          duration=round(time.perf_counter() - start, 6), tolerance=tolerance_label(case),
                          diagnosis=list(diagnosis), order_dependent=culprits, counters=self._counted(name, backend)), info

    def _counted(self, name: str, backend: RemoteBackend) -> dict[str, int]:
        """What a counting backend (its optional counters(): graphs compiled...) counted during this
        cell, its reruns alone included: the difference of its column's totals."""
        total = backend.counters()
        if not total:
            return {}
        before = self.counted.get(name, collections.Counter())
        self.counted[name] = total
        return {k: v for k, v in (total - before).items() if v}

    def _alone(self, cell: Cell, backend: RemoteBackend, before: list[Case], message: str,
               given_as: str) -> tuple[str, list[str]]:
        """Rerun a failed cell alone in a fresh worker; if it passes there, bisect the cells its
        worker ran before it (order.py). The message retold, and the prefix that makes it fail.

        The trials run in a second worker of the column (Hosts.trial), so that the column's own
        worker keeps what its cells built (a compiler column's cache) when the failure is its own."""
        try:
            trial = self.hosts.trial(cell.column)
        except HostError as exc:  # its worker would not even start: no trial, the failure as it is
            return f"{message.rstrip()}\ncould not rerun it alone: {exc.at('loading the backend')}", []

        def fails(prefix: Sequence[Case]) -> bool:
            trial.restart()
            for earlier in prefix:  # their outcomes do not matter, only what they leave behind
                trial.begin_cell(earlier)
                run_case(earlier, trial, cell.column.name, diagnose_failures=False)
            trial.begin_cell(cell.case)  # whether it fails is all a trial asks: no diagnosis
            return run_case(cell.case, trial, cell.column.name, diagnose_failures=False).outcome in FAILING

        try:
            finding = order.investigate(before, fails)
        finally:
            trial.close()
        if finding is None:  # it failed alone: later cells go on in the column's worker
            backend.begin_cell(cell.case)
            return f"{message.rstrip()}\n{order.ALONE_TOO}", []
        backend.restart()  # later cells (and the manifest's own rerun) get a clean worker
        backend.begin_cell(cell.case)
        named = order.Finding(tuple(c.id for c in finding.history), tuple(c.id for c in finding.culprits),
                              finding.trials, finding.bound_hit)
        repro = reproduce_command(cell.case, given_as, finding.culprits)
        return order.retell(message, named, repro), list(named.culprits or named.history)

    @staticmethod
    def _expected(case: Case, backend: RemoteBackend, name: str, outcome: str, message: str,
                  diagnosis: tuple[str, ...], entries: list[manifest.Entry], base: frozenset[str]) -> tuple[str, str]:
        """The outcome once the manifests are applied: a failure an entry expects is xfailed; a pass
        where an entry expects a failure this case can show is xpassed (fixed?); a failure no entry
        expects stays what it is."""
        about = manifest.about(entries, case.id, name)
        if not about or outcome not in ("passed", "failed", "error"):
            return outcome, message
        if outcome == "passed":
            # An entry expecting a diagnosis concerns only the cases that would show that deviation.
            live = [e for e in about if not e.order_dependent
                    and (e.diagnosis is None or exercises(case, e.diagnosis, base))]
            if not live:
                return outcome, message
            return "xpassed", f"passes despite the manifest entry: {live[0].describe()}"
        leftovers = []
        for entry in about:
            if not entry.expects(outcome, message):
                continue
            if entry.diagnosis is not None:
                if diagnosis and not set(entry.diagnosis) & set(diagnosis):
                    continue  # the first failure is diagnosed as something else
                rest = still_fails(case, backend, name, entry.diagnosis)
                if rest is not None:  # a second bug beside the declared one
                    leftovers.append(f"with {' + '.join(entry.diagnosis)} switched on, the case still fails: {rest}")
                    continue
            return "xfailed", f"expected deviation: {entry.describe()}\n{message}"
        listed = "; ".join(f"{e.expectation()} ({e.source.name})" for e in about)
        return outcome, "\n".join([message, f"not the failure the manifest expects here: {listed}", *leftovers])

    def close(self) -> None:
        self.hosts.close()
