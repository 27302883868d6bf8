"""Goldens against the oracle: does the reference agree with the numbers a spec writes down?

A golden is derived by hand (docs/semantics.md), so it can be wrong; the oracle is derived
from the same formulas independently. `golden_disagreements(case)` replays a case on the
oracle alone and lists every literal expectation the oracle contradicts: a golden value
outside the case's tolerance, a golden None where the oracle has a value (or the reverse),
state_dict keys, and an expected error the oracle does not raise (or raises as another
type), or an error the oracle raises where the spec expects none. The suite's own tests
run it over every built-in case (tests/test_goldens.py). At run time the engine does not
replay: when a cell fails a golden, Run.check compares that golden with the oracle value the
same run already computed (scenario.py, `spec_suspect`).

Cheap: a case without literal expectations is not replayed, and a replay stops after the
last step that has one.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from bnconform.runners.engine.mismatch import mismatch
from bnconform.runners.engine.scenario import Run, SpecInconsistent, describe_step, init, steps_of

from .model import Case
from .oracle import OracleError
from .schema import Step


def has_goldens(case: Case) -> bool:
    """Whether `case` has a literal expectation (a number, None, state_dict keys or an error)."""
    return any(_has_literal(step) for step in case.steps)


def _has_literal(step: Step) -> bool:
    exp = step.expect
    if exp is None:
        return False
    return exp.error is not None or exp.state_dict_keys is not None or any(
        not (isinstance(v, str) and v == "oracle") for v in exp.values.values()
    )


def _short(value: Any) -> str:
    if value is None:
        return "None"
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return f"{arr.item():.12g}"
    flat = arr.ravel()
    body = ", ".join(f"{x:.12g}" for x in flat[:8]) + (f", ... ({flat.size} values)" if flat.size > 8 else "")
    return f"[{body}]" + (f" shape {tuple(arr.shape)}" if arr.ndim > 1 else "")


def golden_disagreements(case: Case) -> list[str]:
    """Each literal expectation of `case` the reference oracle contradicts, as one text each
    ("case: step N (action): quantity: golden ... vs oracle ..."); [] when they all agree."""
    steps = steps_of(case)
    last: Optional[int] = max((i for i, s in enumerate(steps) if _has_literal(s)), default=None)
    if last is None:
        return []
    offset = 0 if case.config.training else 1  # steps_of put an eval() first
    tol = case.tolerance
    run = Run(case)  # the oracle alone
    try:
        init(run)
    except SpecInconsistent as exc:
        return [f"{case.id}: init: {exc}"]
    problems: list[str] = []
    for position, step in enumerate(steps[: last + 1]):
        where = f"{case.id}: {describe_step(step, position + 1 - offset)}"
        raised: Optional[OracleError] = None
        try:
            run.apply(step, "oracle")
        except OracleError as exc:
            raised = exc
        except SpecInconsistent as exc:
            problems.append(f"{where}: {exc}")
            break
        exp = step.expect
        if exp is not None and exp.error is not None:
            if raised is None:
                problems.append(f"{where}: error: golden {exp.error.type}, but the oracle raises nothing")
                break
            if raised.kind != exp.error.type:
                problems.append(f"{where}: error: golden {exp.error.type}, but the oracle raises {raised.kind} ({raised})")
                break
            continue  # raised as the spec says; the checks of a raising step end there
        if raised is not None:
            problems.append(f"{where}: the oracle raises {raised.kind} ({raised}) where the spec expects no error")
            break
        if exp is None:
            continue
        for quantity, golden in exp.values.items():
            if isinstance(golden, str):  # oracle
                continue
            try:
                value = run.value("oracle", quantity)
            except SpecInconsistent as exc:
                problems.append(f"{where}: {quantity}: {exc}")
                continue
            diff = mismatch(quantity, golden, value, tol)
            if diff:
                problems.append(f"{where}: {quantity}: golden {_short(golden)} vs oracle {_short(value)} "
                                f"(rtol {tol.rtol:g}, atol {tol.atol:g}; expected = golden, actual = oracle)\n  {diff}")
        if exp.state_dict_keys is not None:
            keys = list(run.sides["oracle"].state_dict())
            if keys != list(exp.state_dict_keys):
                problems.append(f"{where}: state_dict_keys: golden {list(exp.state_dict_keys)} vs oracle {keys}")
    return problems
