"""Run one case on one backend, step by step, beside the oracle.

The backend and the oracle get the same inputs (the oracle in float64, from the same
dtype-rounded values). After each step the spec's expectations are checked; the first step
with a mismatch ends the case with a message naming quantity, step, errors and tolerance.
"""
from __future__ import annotations

import re
import shlex
import traceback
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence

import numpy as np

from bnconform.cases.deviations import describe
from bnconform.cases.dtypes import numpy_dtype
from bnconform.cases.layouts import arrange
from bnconform.cases.loader import BUILTIN_SPECS
from bnconform.cases.model import Case
from bnconform.cases.oracle import Oracle, OracleError
from bnconform.cases.schema import Step
from bnconform.runners.backends import unavailable_reason
from bnconform.runners.backends.protocol import PROFILES, Backend, BackendUnavailable, Conventions, ModuleConfig
from bnconform.runners.engine.contract import ContractViolation
from bnconform.runners.engine.diagnose import diagnose
from bnconform.runners.engine.isolation import HostError
from bnconform.runners.engine.scenario import (
    Run,
    SpecInconsistent,
    describe_step,
    exception_text,
    init,
    is_type,
    steps_of,
    type_names,
)


@dataclass(frozen=True)
class Outcome:
    outcome: str  # passed, failed, skipped, error, deviates (declared)
    message: str = ""
    diagnosis: tuple[str, ...] = ()  # deviations that reproduce a failure (cases/deviations.py)


def reproduce_command(case: Case, backend_name: str, before: Sequence[Case] = ()) -> str:
    """The one command that reruns this case on this backend (with its spec dir if not built in);
    with `before`, those cases first, in that order and in the same worker (--keep-order)."""
    parts = ["bnconform", "run", "--backend", backend_name]
    for directory in dict.fromkeys(c.source.parent for c in (*before, case)):
        if directory.resolve() != BUILTIN_SPECS.resolve():
            parts += ["--specs", str(directory)]
    if any(c.tier == "full" for c in (*before, case)):
        parts += ["--tier", "full"]
    parts += ["--keep-order"] if before else []
    return shlex.join(parts + [a for c in (*before, case) for a in ("--case", c.id)])


def _error_step(run: Run, step: Step, index: int, oracle_exc: Optional[OracleError],
                module_exc: Optional[BaseException]) -> Optional[str]:
    """Check a step that must raise: the exception type is the contract, then the message.

    Returns a failure text, or None when it raised as specified (or, for a backend declaring
    its own messages, raised the right type with other words: noted in `run.own_messages`).
    """
    expect = step.expect
    assert expect is not None and expect.error is not None  # called only for a step that expects an error
    want = expect.error
    where = describe_step(step, index)
    if oracle_exc is None:
        raise SpecInconsistent(f"{where} expects {want.type}, but the reference does not raise there")
    if oracle_exc.kind != want.type:
        raise SpecInconsistent(f"{where} expects {want.type}, but the reference raises {oracle_exc.kind}")
    if module_exc is None:
        return f"error expected at {where}: {want.type} matching /{want.match}/, but nothing was raised"
    if not is_type(module_exc, want.type):
        return f"wrong exception at {where}: expected {want.type} matching /{want.match}/, got {exception_text(module_exc)}"
    if want.match and not re.search(want.match, str(module_exc)):
        text = (f"{where} raises {want.type} as expected; message differs: expected /{want.match}/, "
                f"got {str(module_exc)[:300]!r}")
        if run.messages_own:
            run.own_messages.append(text)
            return None
        run.message_only = True
        return text
    return None


def run_case(case: Case, backend: Backend, backend_name: Optional[str] = None, given_as: Optional[str] = None,
             diagnose_failures: bool = True) -> Outcome:
    """Execute `case` on `backend`; never raises for a backend's fault. `given_as` is the --backend
    value that names it (ALIAS=TARGET for an alias), for the reproduce line. Without
    `diagnose_failures` a failure is reported without its likely cause (the fuzzer's search,
    which diagnoses only the failure it keeps)."""
    name = backend_name or backend.name
    reason = unavailable_reason(backend)
    if reason:
        return Outcome("skipped", f"{name} unavailable: {reason}")
    missing = sorted(case.requires - backend.capabilities.provides())
    if missing:
        reasons = getattr(backend.capabilities, "reasons", None) or {}
        why = "".join(f"; {m}: {reasons[m]}" for m in missing if m in reasons)
        return Outcome("skipped", f"{name} does not declare: {', '.join(missing)}{why}")
    repro = f"reproduce: {reproduce_command(case, given_as or name)}"
    conventions = getattr(backend, "conventions", None) or PROFILES["torch"]
    if not conventions.counter and "num_batches_tracked" in case.init:
        return Outcome("skipped", f"{name} keeps no num_batches_tracked (conventions.counter=False), which this case "
                                  "sets before its first step")
    declared = conventions.deviations()
    # With a declared profile a failure here is usually explained by it: diagnose later, if at all.
    result = _run_against(case, backend, name, repro, conventions, deviations=(),
                          diagnose_failure=diagnose_failures and not declared)
    if result.outcome != "failed" or not declared:
        return result
    # The backend differs from torch by declaration: does it behave as its profile says? Name the
    # declared deviations this case needs: one if one suffices, else the whole profile.
    subsets = [frozenset({d}) for d in sorted(declared)] + ([declared] if len(declared) > 1 else [])
    for i, subset in enumerate(subsets):
        last = i == len(subsets) - 1  # only the whole profile's failure is reported, so diagnosed
        attempt = _run_against(case, backend, name, repro, conventions, deviations=subset,
                               diagnose_failure=diagnose_failures and last)
        if attempt.outcome in ("passed", "deviates"):  # deviates: its own words for an error, as declared too
            what = "; ".join([describe(d) for d in sorted(subset)] + (
                [attempt.message.removeprefix("deviates (declared): ")] if attempt.outcome == "deviates" else []))
            return Outcome("deviates", f"deviates (declared): {what}", tuple(sorted(subset)))
    if attempt.outcome == "failed":  # beyond its declaration: compared with, and diagnosed on top of, its profile
        head = f"fails even under its declared conventions ({conventions.describe()}):\n"
        return Outcome("failed", head + attempt.message, attempt.diagnosis)
    return _run_against(case, backend, name, repro, conventions, deviations=(),  # the reference failure, diagnosed
                        diagnose_failure=diagnose_failures)


def still_fails(case: Case, backend: Backend, name: str, deviations: tuple[str, ...]) -> Optional[str]:
    """Run the case again with `deviations` switched on (on top of the backend's declared profile):
    None when it then passes (they explain every failure of the case), else the first line of
    what still fails. How a manifest entry for one bug is kept from hiding a second."""
    conventions = getattr(backend, "conventions", None) or PROFILES["torch"]
    result = _run_against(case, backend, name, "", conventions, deviations=conventions.deviations() | set(deviations),
                          diagnose_failure=False)
    if result.outcome in ("passed", "deviates"):  # deviates: the backend's own words for an error, as declared
        return None
    return (result.message.strip().splitlines() or [result.outcome])[0]


def _module_config(case: Case, conventions: Conventions) -> ModuleConfig:
    """The case's config in the backend's conventions (a decay backend gets 1 - m)."""
    cfg = case.config
    if conventions.momentum == "decay" and cfg.momentum_convention == "torch":
        m = None if cfg.momentum is None else 1.0 - cfg.momentum
        return cfg.model_copy(update={"momentum_convention": "decay", "momentum": m})
    return cfg


def _run_against(case: Case, backend: Backend, name: str, repro: str, conventions: Conventions,
                 deviations: tuple[str, ...] | frozenset[str], diagnose_failure: bool = True) -> Outcome:
    """Run the case on a fresh module beside the oracle with `deviations` switched on.

    A failure of the backend's worker (crash, exit, abort, time limit) ends the case as an
    error that says what happened and where, never as a wrong result.
    """
    where = "create()"
    try:
        try:
            module = backend.create(_module_config(case, conventions))
        except BackendUnavailable as exc:
            return Outcome("skipped", f"{name} unavailable: {exc}")
        except HostError:
            raise
        except Exception as exc:
            return Outcome("error", f"{name} could not build the module: {exception_text(exc)}\n{repro}")
        decay_driven = conventions.momentum == "decay" and case.config.momentum_convention == "torch"
        run = Run(case, module, deviations, decay_driven=decay_driven)
        run.messages_own = conventions.messages == "own"
        steps = steps_of(case)
        offset = 0 if case.config.training else 1
        where = "init (setting the initial values)"
        try:
            init(run)
        except (SpecInconsistent, HostError, ContractViolation):
            raise
        except Exception as exc:
            return Outcome("error", f"{name} could not set the initial values: {exception_text(exc)}\n{repro}")
        for position, step in enumerate(steps):
            where = describe_step(step, position + 1 - offset)
            failure = _run_step(run, step, position, position + 1 - offset)
            if failure and run.spec_suspect:  # the oracle contradicts the golden too: the spec's fault?
                return Outcome("error", f"spec error? {failure}\nthe reference oracle contradicts this golden value too: "
                                        f"check its derivation in {case.source} ({case.id})\n{repro}")
            if failure:
                if not diagnose_failure:
                    return Outcome("failed", f"{failure}\n{repro}")
                return _failed(case, steps, run, position, failure, repro)
    except HostError as exc:
        return Outcome("error", f"{exc.at(where)}\n{repro}")
    except ContractViolation as exc:  # a wrong kind of value is wrong whatever the numbers say
        return Outcome("failed", f"{where}: {exc}\n{repro}")
    except SpecInconsistent as exc:
        return Outcome("error", f"spec error in {case.source} ({case.id}): {exc}")
    except Exception as exc:  # a backend returning something unreadable, say
        tb = "".join(traceback.format_exception(exc)[-3:]).rstrip()
        return Outcome("error", f"harness error in {where} on {name}: {exception_text(exc)}\n{tb}\n{repro}")
    if run.own_messages:
        return Outcome("deviates", f"deviates (declared): own error messages: {run.own_messages[0]}")
    return Outcome("passed")


def _run_step(run: Run, step: Step, position: int, index: int) -> Optional[str]:
    """One step on both sides; the failure text, or None when the module behaved."""
    oracle_exc: Optional[OracleError] = None
    module_exc: Optional[BaseException] = None
    try:
        run.apply(step, "oracle")
    except OracleError as exc:
        oracle_exc = exc
    except SpecInconsistent:
        raise
    except Exception as exc:  # the reference side cannot run what the spec asks: not the backend's fault
        raise SpecInconsistent(f"the reference cannot run {describe_step(step, index)}: {exception_text(exc)}") from exc
    try:
        run.apply(step, "module")
    except (SpecInconsistent, HostError, ContractViolation):
        raise
    except Exception as exc:  # the backend's own failure
        module_exc = exc
    expects_error = step.expect is not None and step.expect.error is not None
    if expects_error and oracle_exc is None and run.deviations:
        expects_error = False  # the declared profile predicts no error here
    if expects_error:
        run.log.append((position, "error", None if module_exc is None else type_names(module_exc)[0]))
        return _error_step(run, step, index, oracle_exc, module_exc)
    if oracle_exc is not None and run.deviations:  # the declared profile predicts an error here
        if module_exc is not None and is_type(module_exc, oracle_exc.kind):
            return None
        got = "nothing" if module_exc is None else exception_text(module_exc)
        return f"{describe_step(step, index)}: the declared profile predicts {oracle_exc.kind} ({oracle_exc}), got {got}"
    if oracle_exc is not None:
        raise SpecInconsistent(
            f"{describe_step(step, index)}: the reference raises {oracle_exc.kind} ({oracle_exc}) "
            "but the spec expects no error"
        )
    if module_exc is not None:
        run.log.append((position, "error", type_names(module_exc)[0]))
        tb = getattr(module_exc, "remote_traceback", None) or "".join(traceback.format_exception(module_exc)[-3:]).rstrip()
        return f"{describe_step(step, index)} raised {exception_text(module_exc)} where the reference does not raise\n{tb}"
    return run.check(step, position, index)


def _failed(case: Case, steps: list[Step], run: Run, position: int, failure: str, repro: str) -> Outcome:
    """A failed outcome, with the known deviations that reproduce what the module showed."""
    if run.message_only:
        return Outcome("failed", f"{failure}\ndiagnosis: none (the exception type is torch's; only its message differs, "
                                 "which no deviation describes; a backend with its own words declares "
                                 "Conventions(messages='own'))\n" + repro)
    causes = tuple(diagnose(case, steps, run.log, position, base=run.deviations))
    if causes:
        lead = "likely cause: " if len(causes) == 1 else "likely causes (each reproduces the observed values): "
        text = lead + "; ".join(describe(c) for c in causes)
    else:
        text = "diagnosis: no single known deviation reproduces the observed values"
    return Outcome("failed", f"{failure}\n{text}\n{repro}", causes)


class _Raised(Exception):
    """An error of the switched oracle, seen as the module's own exception of that type."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.type_names = [kind, "Exception", "BaseException"]


class SwitchedOracle:
    """The oracle with deviations switched on, driven the way a backend's module is: its float64
    values handed back in the dtypes and layout torch gives them (the oracle says which)."""

    # method -> what each part of its result is, as a quantity name (dtype_of/layout_of)
    RESULTS: ClassVar[dict[str, Any]] = {
        "forward": "output", "forward_with_grad_mode": "output", "forward_shards": ["output"],
        "backward": {"input": "grad_input", "weight": "grad_weight", "bias": "grad_bias"},
        "double_backward": {"input": "gradgrad_input", "weight": "gradgrad_weight", "output": "gradgrad_output"},
        "fold": ("fused_weight", "fused_bias"),
    }

    def __init__(self, config: ModuleConfig, deviations: frozenset[str]) -> None:
        self._oracle = Oracle(config, deviations)

    def _as_module(self, value: Any, quantity: Any) -> Any:
        if isinstance(value, dict):
            names = quantity if isinstance(quantity, dict) else {}
            return {k: self._as_module(v, names.get(k, quantity if isinstance(quantity, str) else k))
                    for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            parts = [self._as_module(v, quantity[0] if isinstance(quantity, list) else quantity[i])
                     for i, v in enumerate(value)]
            return parts if isinstance(value, list) else tuple(parts)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            dtype = self._oracle.dtype_of(quantity) or self._oracle.dtype
            value = value.astype(numpy_dtype(dtype))
            layout = self._oracle.layout_of(quantity)
            return arrange(value, layout) if layout and value.ndim else value
        return value

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._oracle, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = method(*args, **kwargs)
            except OracleError as exc:
                raise _Raised(exc.kind, str(exc)) from None
            if name in ("get",):
                return self._as_module(result, args[0])
            return self._as_module(result, self.RESULTS.get(name, "weight"))

        return call


_EXERCISES: dict[tuple[str, str, frozenset[str], frozenset[str]], bool] = {}


def exercises(case: Case, deviations: tuple[str, ...], base: frozenset[str] = frozenset()) -> bool:
    """Whether this case would fail a module that has `deviations` (on top of the declared `base`):
    a manifest entry expecting them is only about cases that can show them."""
    key = (str(case.source), case.id, frozenset(deviations), frozenset(base))
    if key not in _EXERCISES:
        run = Run(case, SwitchedOracle(case.config, key[3] | key[2]), key[3])
        run.messages_own = True  # the oracle's words are not torch's: only types and values tell
        try:
            init(run)
            _EXERCISES[key] = any(_run_step(run, step, position, position) for position, step in enumerate(steps_of(case)))
        except Exception:  # a case the switched oracle cannot even run certainly tells it apart
            _EXERCISES[key] = True
    return _EXERCISES[key]


def tolerance_label(case: Case) -> str:
    return f"rtol={case.tolerance.rtol:g} atol={case.tolerance.atol:g} ({case.config.dtype})"


