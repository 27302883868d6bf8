"""Name the likely cause of a failure: which known deviation reproduces what the module showed.

Runs only when a case has failed. For each relevant deviation (cases/deviations.py) the oracle
is replayed with that one switch on, over the same steps and inputs, up to the failing step;
the deviation explains the failure when every value the module showed on the way (outputs,
buffers, grads, state_dict keys, raised or not) matches the switched oracle within the case's
tolerance. Several may explain one failure when the case cannot tell them apart.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from bnconform.cases.deviations import DEVIATIONS, relevant
from bnconform.cases.model import Case
from bnconform.cases.oracle import OracleError
from bnconform.cases.schema import Step
from bnconform.runners.engine.scenario import Run, SpecInconsistent, init


def _explains(case: Case, steps: list[Step], seen: dict[int, list[tuple[str, Any]]], last: int, name: str,
              base: frozenset[str]) -> bool:
    run = Run(case, deviations=base | ({name} if name else set()))
    try:
        init(run)
    except (OracleError, SpecInconsistent):
        return False
    for position, step in enumerate(steps[: last + 1]):
        raised = None
        try:
            run.apply(step, "oracle")
        except OracleError as exc:
            raised = exc.kind
        except SpecInconsistent:
            return False
        observed = seen.get(position, [])
        if raised is not None and not any(key == "error" for key, _ in observed):
            return False  # the switched oracle raises where the module did not
        for key, value in observed:
            if key == "error":
                if value != raised:
                    return False
            elif key == "state_dict_keys":
                if list(run.sides["oracle"].state_dict()) != value:
                    return False
            else:
                try:
                    predicted = run.value("oracle", key)
                except SpecInconsistent:
                    return False
                if run.compare(key, predicted, value) is not None:
                    return False
    return True


def diagnose(case: Case, steps: list[Step], log: list[tuple[int, str, Any]], last: int,
             base: frozenset[str] = frozenset()) -> list[str]:
    """Deviations that reproduce every observation up to step position `last` (on top of `base`,
    the switches of a backend's declared profile), and only where the reference itself does not:
    a switch is named only if it changes what was observed."""
    seen: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    for position, key, value in log:
        seen[position].append((key, value))
    if _explains(case, steps, seen, last, "", base):
        return []  # what the module showed is what the reference shows: no switch changes it, none is the cause
    return [name for name in DEVIATIONS
            if name not in base and relevant(name, case) and _explains(case, steps, seen, last, name, base)]
