"""The search: hypothesis rounds within a time budget, a database of failures, shrinking, a verdict.

hypothesis has no time budget, so the property runs in rounds of `ROUND_EXAMPLES` examples,
each round seeded from `--seed` and the round's number, until `--budget` seconds are used; an
example drawn after that passes at once, so the round in progress ends in moments. A failure
is shrunk by hypothesis within the same round, for at most `shrink_seconds` (after that every
new candidate passes at once and the smallest failure so far is the result), then written by
artifacts.py. Each scenario runs through the engine of `bnconform run`: `run_case` on the
backend's isolated worker (runners/engine/isolation.py), so a crash or a hang costs one
scenario, never the search.

A scenario counts as a failure of the backend only if torch passes it: where the reference
backend fails too, the disagreement is between torch and the oracle (or the tolerance), not
the backend's, and the search goes on. Shrinking therefore keeps "fails here, passes on torch".
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from hypothesis import HealthCheck, Phase, Verbosity, given, reject, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase
from hypothesis.errors import Unsatisfiable

from bnconform.runners.backends import Column
from bnconform.runners.engine.execute import Outcome, run_case
from bnconform.runners.engine.isolation import RemoteBackend
from bnconform.runners.fuzz.scenario import Prepared, Unusable, prepare
from bnconform.runners.fuzz.strategies import Offer, scenarios

ROUND_EXAMPLES = 100  # examples per hypothesis round (a round ends early once the budget is used)
REFERENCE = "torch"  # what a failure must pass on to be the backend's
DATABASE = "hypothesis"  # DIR/hypothesis: hypothesis' example database
# A change to the strategies changes what a stored example draws; this keeps old entries apart.
STRATEGY_VERSION = b"bnconform-fuzz-1:"


def shrink_seconds(budget: float) -> float:
    """How long hypothesis may shrink a failure: half the budget, at least 15 s, at most 5 min."""
    return min(300.0, max(15.0, 0.5 * budget))


@dataclass
class Failure(Exception):
    """A scenario the backend fails and the reference passes: the property's failure."""

    prepared: Prepared
    outcome: Outcome
    reference: Optional[Outcome]

    def __str__(self) -> str:
        return self.outcome.message.splitlines()[0] if self.outcome.message else self.outcome.outcome


@dataclass
class Stats:
    """What the search did, for the summary line and the progress display."""

    started: float = field(default_factory=time.monotonic)
    scenarios: int = 0
    steps: int = 0
    unusable: int = 0  # drawn, but not checkable on this backend (Unusable)
    reference_fails: int = 0  # the backend failed, but so did torch: not counted against the backend
    spec_errors: list[str] = field(default_factory=list)  # generated specs the engine called a spec error
    found_after: Optional[float] = None  # seconds to the first failure
    found_at: int = 0  # scenarios run when the first failure came
    shrink_time: float = 0.0
    rounds: int = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def rate(self) -> float:
        return self.scenarios / max(self.elapsed(), 1e-9)


class _Keyed(ExampleDatabase):
    """hypothesis' directory database with every key prefixed (by the backend and the strategy
    version): one DIR/hypothesis serves several backends without replaying one's failures as
    another's."""

    def __init__(self, inner: ExampleDatabase, prefix: bytes) -> None:
        super().__init__()
        self.inner, self.prefix = inner, prefix

    def save(self, key: bytes, value: bytes) -> None:
        self.inner.save(self.prefix + key, value)

    def fetch(self, key: bytes) -> Iterable[bytes]:
        return self.inner.fetch(self.prefix + key)

    def delete(self, key: bytes, value: bytes) -> None:
        self.inner.delete(self.prefix + key, value)

    def move(self, src: bytes, dest: bytes, value: bytes) -> None:
        self.inner.move(self.prefix + src, self.prefix + dest, value)


def database(out: Path, backend: str) -> ExampleDatabase:
    return _Keyed(DirectoryBasedExampleDatabase(out / DATABASE), STRATEGY_VERSION + backend.encode() + b":")


def round_seed(seed: int, number: int) -> int:
    """The hypothesis seed of round `number` of a run with --seed `seed`."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:8], "big")


def new_seed() -> int:
    return secrets.randbelow(10**6)


def digest(spec: Any) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


CONFIG_DEFAULTS = ("eps", "momentum", "momentum_convention", "affine", "bias", "track_running_stats", "training",
                   "input_dtype", "dtype")


def simpler(spec: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Specs one edit simpler than `spec`, the boldest first: a shorter prefix of the steps, a
    step left out, no init (or one init value less), a config key at its default, a source field
    at its default (distribution normal, scale 1, offset 0), seed 0, a contiguous layout."""
    steps = spec["steps"]

    def variant(**changes: Any) -> dict[str, Any]:
        return {**copy.deepcopy(spec), **changes}

    for k in range(1, len(steps)):
        yield variant(steps=copy.deepcopy(steps[:k]))
    for i in reversed(range(len(steps))):
        if len(steps) > 1:
            yield variant(steps=copy.deepcopy(steps[:i] + steps[i + 1:]))
    if "init" in spec:
        yield {k: v for k, v in copy.deepcopy(spec).items() if k != "init"}
        for name in spec["init"]:
            yield variant(init={k: v for k, v in copy.deepcopy(spec["init"]).items() if k != name})
    for key in CONFIG_DEFAULTS:
        if key in spec["config"]:
            yield variant(config={k: v for k, v in spec["config"].items() if k != key})
    for i, step in enumerate(steps):
        action = next(iter(k for k in step if k != "expect"))
        args = step[action]
        if not isinstance(args, dict):
            continue
        for where in ("input", "grad"):
            source = args.get(where, {}).get("random") if isinstance(args.get(where), dict) else None
            if source is None:
                continue
            for name in ("distribution", "scale", "offset", "seed"):
                if name in source and (name != "seed" or source["seed"] != 0):
                    plain = {k: v for k, v in source.items() if k != name}
                    if name == "seed":
                        plain["seed"] = 0
                    new_steps = copy.deepcopy(steps)
                    new_steps[i][action][where] = {"random": plain}
                    yield variant(steps=new_steps)
        if "layout" in args:
            new_steps = copy.deepcopy(steps)
            del new_steps[i][action]["layout"]
            yield variant(steps=new_steps)


def is_failure(outcome: Outcome) -> bool:
    return outcome.outcome in ("failed", "error") and not is_spec_error(outcome)


def is_spec_error(outcome: Outcome) -> bool:
    return outcome.outcome == "error" and outcome.message.startswith("spec error")


class Search:
    """The property and the budget loop around it."""

    def __init__(self, column: Column, backend: RemoteBackend, reference: Optional[Callable[[], RemoteBackend]], *,
                 budget: float, seed: int, out: Path, given_as: str, on_scenario: Callable[[], None] = lambda: None) -> None:
        self.column, self.backend = column, backend
        self._reference = reference
        self.reference_backend: Optional[RemoteBackend] = None  # started on the first failure
        self.budget, self.seed, self.out, self.given_as = budget, seed, out, given_as
        self.offer = Offer(frozenset(backend.capabilities.provides()))
        self.stats = Stats()
        self.deadline = self.stats.started + budget
        self.shrink_deadline = math.inf
        self.best: Optional[Failure] = None
        self.seen: dict[str, Optional[Failure]] = {}  # drawn spec -> its failure (None: it passed)
        self.on_scenario = on_scenario
        self.db = database(out, column.name)

    def reference(self) -> Optional[RemoteBackend]:
        """torch's worker, started when first needed (None when the backend is torch itself)."""
        if self.reference_backend is None and self._reference is not None:
            self.reference_backend = self._reference()
        return self.reference_backend

    @property
    def shrinking(self) -> bool:
        return self.best is not None

    def _run(self, prepared: Prepared, backend: RemoteBackend, name: str, given_as: str) -> Outcome:
        backend.begin_cell()
        return run_case(prepared.case, backend, name, given_as, diagnose_failures=False)  # the kept one is diagnosed

    def check(self, raw: dict[str, Any]) -> None:
        """The property: the backend agrees with the oracle on this scenario (or torch does not)."""
        key = digest(raw)
        if key in self.seen:
            known = self.seen[key]
            if known is not None:
                raise known
            return
        now = time.monotonic()
        if now > (self.shrink_deadline if self.shrinking else self.deadline):
            return  # the budget is used: what is left of the round passes at once
        try:
            prepared = prepare(raw, self.offer, self.out / "fuzz.yaml")
        except Unusable:
            self.stats.unusable += 1
            reject()
        outcome = self._run(prepared, self.backend, self.column.name, self.given_as)
        self.stats.scenarios += 1
        self.stats.steps += prepared.steps
        self.on_scenario()
        if is_spec_error(outcome):  # a bug of the generator or the oracle: said at the end, never blamed
            self.stats.spec_errors.append(f"{outcome.message.splitlines()[0]}\n{json.dumps(prepared.spec)}")
            self.seen[key] = None
            return
        if not is_failure(outcome):
            self.seen[key] = None
            return
        ref = None
        reference = self.reference()
        if reference is not None:
            ref = self._run(prepared, reference, REFERENCE, REFERENCE)
            if ref.outcome != "passed":
                self.stats.reference_fails += 1
                self.seen[key] = None
                return
        failure = Failure(prepared, outcome, ref)
        if self.best is None:
            self.stats.found_after = time.monotonic() - self.stats.started
            self.stats.found_at = self.stats.scenarios
            self.shrink_deadline = time.monotonic() + shrink_seconds(self.budget)
        self.best = failure  # hypothesis only tries candidates smaller than its current failure
        self.seen[key] = failure
        raise failure

    def _attempt(self, candidate: dict[str, Any]) -> Optional[Failure]:
        """The candidate's failure, if it is one (backend fails, torch passes), else None."""
        raw = copy.deepcopy(candidate)
        for step in raw["steps"]:
            step["expect"] = "oracle"  # prepare() decides the error expectations again
        key = digest(raw)
        if key in self.seen:
            return self.seen[key]
        try:
            prepared = prepare(raw, self.offer, self.out / "fuzz.yaml")
        except Exception:  # Unusable, or a candidate the loader refuses (a load without its save)
            self.seen[key] = None
            return None
        outcome = self._run(prepared, self.backend, self.column.name, self.given_as)
        self.stats.scenarios += 1
        self.stats.steps += prepared.steps
        self.on_scenario()
        failure = None
        if is_failure(outcome):
            reference = self.reference()
            ref = None if reference is None else self._run(prepared, reference, REFERENCE, REFERENCE)
            if ref is None or ref.outcome == "passed":
                failure = Failure(prepared, outcome, ref)
        self.seen[key] = failure
        return failure

    def trim(self) -> None:
        """What hypothesis' shrinker leaves (a step it could not delete without shifting the
        choices after it, a config key or a source field that plays no part) removed one at a
        time, each removal kept while the scenario still fails here and passes on torch. Within
        the shrink time."""
        assert self.best is not None
        progress = True
        while progress and time.monotonic() < self.shrink_deadline:
            progress = False
            for candidate in simpler(self.best.prepared.spec):
                if time.monotonic() >= self.shrink_deadline:
                    return
                failure = self._attempt(candidate)
                if failure is not None:
                    self.best, progress = failure, True
                    break

    def _round(self, number: int) -> None:
        @settings(database=self.db, max_examples=ROUND_EXAMPLES, deadline=None, derandomize=False,
                  suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet, report_multiple_bugs=False,
                  phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink), print_blob=False)
        @hypothesis_seed(round_seed(self.seed, number))
        @given(scenarios(self.offer))
        def bnconform_fuzz(raw: dict[str, Any]) -> None:
            self.check(raw)

        bnconform_fuzz()

    def run(self) -> Optional[Failure]:
        """Search until the budget is used or a failure is found (then shrunk); the failure."""
        number = 0
        while time.monotonic() < self.deadline:
            self.stats.rounds += 1
            try:
                self._round(number)
            except Unsatisfiable:
                pass  # every scenario of the round was unusable here
            except Exception:
                # the shrunk failure (or hypothesis' complaint that a replay did not fail again,
                # a flaky backend): the smallest failure seen is the result either way
                if self.best is None:
                    raise
            if self.best is not None:
                assert self.stats.found_after is not None
                self.trim()
                self.stats.shrink_time = self.stats.elapsed() - self.stats.found_after
                return self.best
            number += 1
        return None
