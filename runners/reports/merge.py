"""`bnconform merge`: one report, and one verdict, from the conformance.json of several runs.

A CI run split across machines (the N shards of one selection, `--shard I/N`, or a column that
runs only elsewhere, such as torch-cuda on a GPU runner beside the CPU columns) still needs one
report and one gate. The merged report is what one run over all those cells would have written,
so every way the parts could fail to add up to that is refused, naming the files: the same cell
with two outcomes, different spec sets or suite versions, different --strict, an input that is
not a conformance report, and a shard of a sharded selection missing or given twice. The same
cell with the same outcome in two inputs (a reference column run on both machines) is kept once.
Each column keeps the metadata of the run(s) it came from (`metadata.columns`), so a merged
report still says on which machine, with which packages, every cell ran.
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from bnconform.runners.reports.results import OUTCOMES, BackendInfo, CaseResult, RunReport, checked_nothing

MIXED = "mixed: see metadata.columns"
OWN_KEYS = ("columns", "merged_from", "shard", "date")  # what a merge sets itself, never inherits


class MergeError(Exception):
    """The inputs do not add up to one run's report (the message says why, naming the files)."""


@dataclass(frozen=True)
class Input:
    path: Path
    report: RunReport

    @property
    def shard(self) -> Optional[tuple[int, int]]:
        """(I, N) for a report of `--shard I/N`, None for a whole selection (or an older report)."""
        text = self.report.metadata.get("shard")
        if not text:
            return None
        index, _, count = str(text).partition("/")
        return int(index), int(count)

    def column_metadata(self, column: str) -> list[dict[str, Any]]:
        """The metadata of the runs this input's column came from (a merged input passes its own on)."""
        meta = self.report.metadata
        if "merged_from" in meta and column in meta.get("columns", {}):
            return list(meta["columns"][column])
        return [{"file": str(self.path), **meta}]


def read(path: Path) -> Input:
    """A conformance.json, or MergeError saying why it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise MergeError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MergeError(f"{path}: not a bnconform conformance report (not JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("suite") != "bnconform" or "results" not in data:
        raise MergeError(f"{path}: not a bnconform conformance report (conformance.json)")
    try:
        report = RunReport.from_json(data)
        shard = Input(Path(path), report).shard
    except (KeyError, TypeError, ValueError) as exc:
        raise MergeError(f"{path}: a malformed conformance report ({type(exc).__name__}: {exc})") from None
    odd = sorted({r.outcome for r in report.results} - set(OUTCOMES))
    if odd:
        raise MergeError(f"{path}: a malformed conformance report (unknown outcome {odd[0]!r})")
    if shard is not None and not 1 <= shard[0] <= shard[1]:
        raise MergeError(f"{path}: a malformed conformance report (shard {shard[0]}/{shard[1]})")
    return Input(Path(path), report)


def _same(inputs: list[Input], what: str, value: Callable[[Input], Any], shown: int = 80) -> None:
    """Every input agrees on `value`, or MergeError naming two that differ (values cut to `shown` characters)."""
    first = inputs[0]
    for other in inputs[1:]:
        if value(other) != value(first):
            raise MergeError(f"{first.path} and {other.path} differ in {what} ({str(value(first))[:shown]} vs "
                             f"{str(value(other))[:shown]}): their cells are not one run's")


def _describe(selection: dict[str, Any], columns: tuple[str, ...]) -> str:
    """A selection as the options that made it, e.g. `--family bessel on numpy, cffi`."""
    parts = [f"--{key} {v}" for key in ("family", "case", "exclude") for v in selection.get(key, [])]
    parts += [f"--tier {selection['tier']}"] if selection.get("tier", "default") != "default" else []
    parts += ["--keep-order"] if selection.get("keep_order") else []
    return f"{' '.join(parts) or 'every case'} on {', '.join(columns)}"


def _shard_groups(inputs: list[Input]) -> list[list[Input]]:
    """The shard reports of each sharded selection (the same filters, shard count and columns),
    each checked complete: every shard 1..N exactly once, their inputs in shard order."""
    groups: dict[str, dict[int, Input]] = {}
    described: dict[str, tuple[str, int]] = {}
    for item in inputs:
        if item.shard is None:
            continue
        index, count = item.shard
        selection = item.report.metadata.get("selection", {})
        columns = tuple(item.report.backend_names())
        key = json.dumps([selection, count, columns], sort_keys=True)
        described[key] = (_describe(selection, columns), count)
        group = groups.setdefault(key, {})
        if index in group:
            raise MergeError(f"shard {index}/{count} of {described[key][0]} is given twice: {group[index].path} and "
                             f"{item.path}")
        group[index] = item
    for key, group in groups.items():
        text, count = described[key]
        missing = [f"{i}/{count}" for i in range(1, count + 1) if i not in group]
        if missing:
            given = ", ".join(f"{g.path} ({i}/{count})" for i, g in sorted(group.items()))
            raise MergeError(f"shard {', '.join(missing)} of {text} is missing (given: {given}): a merge of "
                             "some of the shards would read as a whole run")
    return [[group[i] for i in sorted(group)] for group in groups.values()]


def _case_order(inputs: list[Input], groups: list[list[Input]]) -> dict[str, int]:
    """Cases in the order one run would have them: a shard group's cases interleaved back (case k
    of the selection was the (k // N)-th of shard (k mod N) + 1), other inputs' as they are."""
    def cases(item: Input) -> list[str]:
        return list(dict.fromkeys(r.spec for r in item.report.results))

    first_of_group = {id(g[0]): g for g in groups}
    in_group = {id(i) for g in groups for i in g}
    order: list[str] = []
    for item in inputs:
        if id(item) in first_of_group:
            parts = [cases(i) for i in first_of_group[id(item)]]
            order += [p[k] for k in range(max(map(len, parts))) for p in parts if k < len(p)]
        elif id(item) not in in_group:
            order += cases(item)
    return {spec: n for n, spec in enumerate(dict.fromkeys(order))}


def _common(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """What every input's metadata says alike; where they differ, MIXED (nested dicts key by key)."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for m in metas for k in m):
        if key in OWN_KEYS:
            continue
        values: list[Any] = [m.get(key) for m in metas]
        if all(v == values[0] for v in values):
            out[key] = values[0]
        elif all(isinstance(v, dict) for v in values):
            out[key] = _common(values)
        else:
            out[key] = MIXED
    return out


def _backend(name: str, inputs: list[Input]) -> BackendInfo:
    """A column's backend as its runs describe it (one where it was available, if any was)."""
    infos = [b for i in inputs for b in i.report.backends if b.name == name]
    if not infos:
        return BackendInfo(name, "unknown (not in the reports' backends)", [])
    return next((b for b in infos if not b.unavailable), infos[0])


def merge(paths: Sequence[Path]) -> RunReport:
    """The one report of the given conformance.json files (MergeError if they do not make one)."""
    if not paths:
        raise MergeError("merge needs at least one conformance.json")
    inputs = [read(Path(p)) for p in paths]
    _same(inputs, "bnconform version", lambda i: i.report.suite_version)
    _same(inputs, "spec set (metadata.spec_digest)", lambda i: i.report.metadata.get("spec_digest"), shown=16)
    _same(inputs, "--strict", lambda i: i.report.strict)
    groups = _shard_groups(inputs)

    cells: dict[tuple[str, str], tuple[CaseResult, Input]] = {}
    for item in inputs:
        for r in item.report.results:
            seen = cells.get((r.spec, r.backend))
            if seen is None:
                cells[(r.spec, r.backend)] = (r, item)
            elif seen[0].outcome != r.outcome:
                raise MergeError(f"cell {r.spec} on {r.backend} reads {seen[0].outcome} in {seen[1].path} but "
                                 f"{r.outcome} in {item.path}")
    case_index = _case_order(inputs, groups)
    columns = list(dict.fromkeys(name for i in inputs for name in i.report.backend_names()))
    column_index = {name: n for n, name in enumerate(columns)}
    results = sorted((r for r, _ in cells.values()), key=lambda r: (case_index[r.spec], column_index[r.backend]))
    backends = [_backend(name, inputs) for name in columns]

    metadata = _common([i.report.metadata for i in inputs])
    metadata["date"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    metadata["shard"] = None
    metadata["merged_from"] = [str(i.path) for i in inputs]
    metadata["columns"] = {name: [m for i in inputs if name in i.report.backend_names() for m in i.column_metadata(name)]
                           for name in columns}
    return RunReport(
        suite_version=inputs[0].report.suite_version, backends=backends, results=results,
        wall_time_s=max(i.report.wall_time_s for i in inputs),  # the runs went side by side: the longest
        strict=inputs[0].report.strict, metadata=metadata,
        interrupted=any(i.report.interrupted for i in inputs), unchecked=checked_nothing(backends, results),
    )
