"""`bnconform fuzz`: check the request, start the workers, search, keep what was found, say so.

Exit codes: 0 no scenario failed within the budget; 1 one did (its files are written and
printed); 2 no verdict: a usage problem (unknown or unavailable backend, bad --budget or --seed,
an --out that cannot be written) or an interrupted run.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bnconform.runners.backends import Column, UnknownBackend, columns
from bnconform.runners.engine.isolation import Hosts, RemoteBackend
from bnconform.runners.fuzz import artifacts
from bnconform.runners.fuzz.engine import DATABASE, REFERENCE, Search, Stats
from bnconform.runners.fuzz.progress import FuzzTally, create
from bnconform.runners.reports import outdir
from bnconform.runners.reports.progress import duration

EXIT_OK, EXIT_FOUND, EXIT_USAGE = 0, 1, 2


class FuzzUsageError(Exception):
    """What was asked cannot run (one line, exit 2)."""


@dataclass(frozen=True)
class Request:
    backend: str
    budget: float
    seed: int
    out: Path
    timeout: float
    progress: str


def _backend(hosts: Hosts, column: Column) -> RemoteBackend:
    backend = hosts.backend(column)
    if column.problem:
        raise FuzzUsageError(f"backend {column.name}: {column.problem}")
    if backend.broken:
        raise FuzzUsageError(f"backend {column.name} breaks the backend protocol: {backend.broken}")
    if backend.available():
        raise FuzzUsageError(f"backend {column.name} is unavailable: {backend.available()}")
    return backend


def _summary(stats: Stats, name: str, seed: int, budget: float) -> str:
    extra = []
    if stats.unusable:
        extra.append(f"{stats.unusable} drawn scenarios not usable on this backend")
    if stats.reference_fails:
        extra.append(f"{stats.reference_fails} failed on {REFERENCE} too (not counted against {name})")
    return (f"bnconform fuzz: {name} passed {stats.scenarios} scenarios ({stats.steps} steps) in "
            f"{duration(stats.elapsed())}, {stats.rate():.1f} scenarios/s; seed {seed}"
            + (f" ({'; '.join(extra)})" if extra else "")
            + f"\nrepeat: bnconform fuzz --backend {name} --seed {seed} --budget {budget:g}")


def run(request: Request) -> int:
    try:
        [column] = columns([request.backend])
    except UnknownBackend as exc:
        raise FuzzUsageError(str(exc)) from None
    try:
        out = outdir.prepare(request.out, ())
        (out / DATABASE).mkdir(exist_ok=True)
    except (outdir.OutDirError, OSError) as exc:
        raise FuzzUsageError(str(exc)) from None
    given_as = column.name if column.name == column.target else f"{column.name}={column.target}"
    hosts = Hosts(request.timeout)
    display = None
    search: Optional[Search] = None
    try:
        backend = _backend(hosts, column)
        reference = None
        if column.target != REFERENCE:
            ref_column = Column(REFERENCE if column.name != REFERENCE else f"{REFERENCE}#reference", REFERENCE)

            def reference() -> RemoteBackend:
                return _backend(hosts, ref_column)
        tally: Optional[FuzzTally] = None

        def on_scenario() -> None:
            if display is not None and tally is not None:
                tally.shrinking = search is not None and search.shrinking
                display.update()

        search = Search(column, backend, reference, budget=request.budget, seed=request.seed, out=out,
                        given_as=given_as, on_scenario=on_scenario)
        tally = FuzzTally(search.stats, request.budget, column.name)
        display = create(request.progress, tally)
        if display is not None:
            display.start()
        try:
            with warnings.catch_warnings():  # the oracle's overflow on purpose, a backend's own
                warnings.simplefilter("ignore", RuntimeWarning)
                failure = search.run()
        finally:
            if display is not None:
                display.stop()
        stats = search.stats
        for problem in stats.spec_errors[:1]:
            print(f"bnconform fuzz: warning: {len(stats.spec_errors)} generated scenarios were spec errors (a bug of "
                  f"bnconform fuzz, not of {column.name}); the first:\n{problem}", file=sys.stderr)
        if failure is None:
            print(_summary(stats, column.name, request.seed, request.budget))
            return EXIT_OK
        found = stats.found_after or 0.0
        print(f"bnconform fuzz: {column.name} fails a scenario (found after {stats.found_at} scenarios, "
              f"{duration(found)}; shrunk in {duration(stats.shrink_time)}); checking it ...", flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            written = artifacts.keep(failure, backend=backend, reference=search.reference(), name=column.name, given_as=given_as,
                                     target=column.target, out=out, seed=request.seed, stats=stats,
                                     timeout=request.timeout)
        message = [line for line in written.message.splitlines() if not line.startswith("reproduce:")]
        print("\n".join(f"  {line}" for line in message[:12]))
        print(("verified: it fails on " + column.name + f" and passes on {REFERENCE} and on the oracle") if written.verified
              else "UNVERIFIED: " + "; ".join(written.notes))
        if written.verified and written.script_exit != 1:
            print(f"note: the standalone script exits {written.script_exit} on {column.name} (1 expected)")
        for path in written.paths:
            print(f"wrote {path}")
        print(f"reproduce: {written.reproduce[0]}\n       or: {written.reproduce[1]}")
        return EXIT_FOUND
    except KeyboardInterrupt:
        done = search.stats.scenarios if search is not None else 0
        print(f"bnconform fuzz: interrupted after {done} scenarios (no verdict)", file=sys.stderr)
        return EXIT_USAGE
    finally:
        hosts.close()
