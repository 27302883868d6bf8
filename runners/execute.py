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
from typing import Any, Optional

import numpy as np

from cases.inputs import materialize
from cases.loader import BUILTIN_SPECS
from cases.model import Case
from cases.oracle import Oracle, OracleError
from cases.schema import QUANTITIES, Step
from runners.backends import unavailable_reason
from runners.compare import mismatch
from runners.protocol import Backend, BackendUnavailable

# What `expect: oracle` checks after each kind of step.
ORACLE_DEFAULTS = {
    "forward": ("output", "running_mean", "running_var", "num_batches_tracked"),
    "backward": ("grad_input", "grad_weight", "grad_bias"),
}
STATE = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class Outcome:
    outcome: str  # passed, failed, skipped, error
    message: str = ""


def reproduce_command(case: Case, backend_name: str) -> str:
    """The one command that reruns this case on this backend (with its spec dir if not built in)."""
    parts = ["bnconform", "run", "--backend", backend_name]
    if case.source.parent.resolve() != BUILTIN_SPECS.resolve():
        parts += ["--specs", str(case.source.parent)]
    return shlex.join(parts + ["--case", case.id])


class _SpecInconsistent(Exception):
    """The spec contradicts the reference (oracle): a spec bug, reported as an error."""


def _describe(step: Step, index: int) -> str:
    return f"step {index} ({step.action}{': ' + step.note if step.note else ''})"


def _exception_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def _is_type(exc: BaseException, name: str) -> bool:
    return any(cls.__name__ == name for cls in type(exc).__mro__)


class _Run:
    """State of one case run: the module and the oracle, driven by the same steps.

    The oracle follows the module protocol too (in float64 internally), so one dispatch
    serves both sides; each side keeps what its steps made observable and what it saved.
    """

    def __init__(self, case: Case, module: Any) -> None:
        self.case = case
        self.cfg = case.config
        self.sides = {"module": module, "oracle": Oracle(case.config)}
        self.observed: dict[str, dict[str, Any]] = {"module": {}, "oracle": {}}
        self.saved: dict[str, dict[str, dict]] = {"module": {}, "oracle": {}}

    def array(self, source: Any) -> np.ndarray:
        return materialize(source, self.cfg.dim, self.cfg.dtype)

    def apply(self, step: Step, side: str) -> None:
        """Perform one step on the module or the oracle."""
        target, args, act = self.sides[side], step.args, step.action
        observed = self.observed[side]
        if act in ("train", "eval", "reset_running_stats", "reset_parameters"):
            getattr(target, act)()
        elif act == "set":
            for k, v in args.values.items():
                target.set_attribute(k, v)
        elif act == "forward":
            observed.clear()
            observed["output"] = target.forward(self.array(args.input))
        elif act == "backward":
            grads = target.backward(self.array(args.grad))
            observed.update({f"grad_{k}": v for k, v in grads.items()})
        elif act == "state_dict":
            self.saved[side][args.save_as] = target.state_dict()
        elif act == "load_state_dict":
            target.load_state_dict(self._load_values(args, self.saved[side]), strict=args.strict)
        elif act == "requires_grad":
            for k in ("weight", "bias"):
                if getattr(args, k) is not None:
                    target.set_requires_grad(k, getattr(args, k))

    def _load_values(self, args: Any, saved: dict[str, dict]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if args.from_ is not None:
            if args.from_ not in saved:
                raise _SpecInconsistent(f"load_state_dict from {args.from_!r}, which no state_dict step saved")
            values.update({k: v for k, v in saved[args.from_].items() if k not in args.drop})
        for k, v in args.values.items():
            if k == "num_batches_tracked":
                values[k] = np.asarray(int(v), dtype=np.int64)
            else:
                values[k] = np.asarray(v, dtype=np.float64).astype(self.cfg.dtype)
        return values

    # -- expectations -----------------------------------------------------------------
    def value(self, side: str, quantity: str) -> Any:
        if quantity in self.observed[side]:
            return self.observed[side][quantity]
        if quantity == "output" or quantity.startswith("grad_"):
            raise _SpecInconsistent(f"expects {quantity} but no step produced it")
        return self.sides[side].get(quantity)

    def check(self, step: Step, index: int) -> Optional[str]:
        exp = step.expect
        if exp is None:
            return None
        wanted: dict[str, Any] = dict(exp.values)
        if exp.all_oracle:
            for q in ORACLE_DEFAULTS.get(step.action, STATE):
                wanted.setdefault(q, "oracle")
        problems = []
        tol = self.case.tolerance
        for q in QUANTITIES:
            if q not in wanted:
                continue
            source = "oracle" if wanted[q] == "oracle" else "golden"
            expected = self.value("oracle", q) if source == "oracle" else wanted[q]
            diff = mismatch(q, expected, self.value("module", q), tol)
            if diff:
                problems.append(f"{q} differs after {_describe(step, index)} [expected: {source}, {self.cfg.dtype}]\n  {diff}")
        if exp.state_dict_keys is not None:
            keys = list(self.sides["module"].state_dict().keys())
            if keys != list(exp.state_dict_keys):
                problems.append(
                    f"state_dict keys differ after {_describe(step, index)}: expected {exp.state_dict_keys}, got {keys}"
                )
        return "\n".join(problems) or None


def _init(run: _Run) -> None:
    for name, source in run.case.init.items():
        value = int(np.asarray(source).item()) if name == "num_batches_tracked" else run.array(source)
        try:
            run.sides["oracle"].assign(name, value)
        except OracleError as exc:
            raise _SpecInconsistent(f"init sets {name}, which the reference does not have ({exc})") from None
        run.sides["module"].assign(name, value)


def _error_step(step: Step, index: int, oracle_exc: Optional[OracleError], module_exc: Optional[BaseException]) -> Optional[str]:
    """Check a step that must raise. Returns a failure text, or None when it raised as specified."""
    want = step.expect.error  # type: ignore[union-attr]
    where = _describe(step, index)
    if oracle_exc is None:
        raise _SpecInconsistent(f"{where} expects {want.type}, but the reference does not raise there")
    if oracle_exc.kind != want.type:
        raise _SpecInconsistent(f"{where} expects {want.type}, but the reference raises {oracle_exc.kind}")
    if module_exc is None:
        return f"error expected at {where}: {want.type} matching /{want.match}/, but nothing was raised"
    if not _is_type(module_exc, want.type):
        return f"wrong exception at {where}: expected {want.type} matching /{want.match}/, got {_exception_text(module_exc)}"
    if want.match and not re.search(want.match, str(module_exc)):
        return f"wrong message at {where}: expected {want.type} matching /{want.match}/, got {_exception_text(module_exc)}"
    return None


def run_case(case: Case, backend: Backend, backend_name: Optional[str] = None) -> Outcome:
    """Execute `case` on `backend`; never raises for a backend's fault."""
    name = backend_name or backend.name
    missing = sorted(case.requires - backend.capabilities.provides())
    if missing:
        return Outcome("skipped", f"{name} does not declare: {', '.join(missing)}")
    reason = unavailable_reason(backend)
    if reason:
        return Outcome("skipped", f"{name} unavailable: {reason}")
    repro = f"reproduce: {reproduce_command(case, name)}"
    try:
        module = backend.create(case.config)
    except BackendUnavailable as exc:
        return Outcome("skipped", f"{name} unavailable: {exc}")
    except Exception as exc:
        return Outcome("error", f"{name} could not build the module: {_exception_text(exc)}\n{repro}")
    run = _Run(case, module)
    step_index = 0
    try:
        try:
            _init(run)
        except _SpecInconsistent:
            raise
        except Exception as exc:
            return Outcome("error", f"{name} could not set the initial values: {_exception_text(exc)}\n{repro}")
        steps = list(case.steps)
        if not case.config.training:
            steps.insert(0, Step.model_validate("eval"))
        offset = 0 if case.config.training else 1
        for i, step in enumerate(steps):
            step_index = i + 1 - offset
            oracle_exc: Optional[OracleError] = None
            module_exc: Optional[BaseException] = None
            try:
                run.apply(step, "oracle")
            except OracleError as exc:
                oracle_exc = exc
            try:
                run.apply(step, "module")
            except _SpecInconsistent:
                raise
            except Exception as exc:  # the backend's own failure
                module_exc = exc
            if step.expect is not None and step.expect.error is not None:
                failure = _error_step(step, step_index, oracle_exc, module_exc)
                if failure:
                    return Outcome("failed", f"{failure}\n{repro}")
            else:
                if oracle_exc is not None:
                    raise _SpecInconsistent(
                        f"{_describe(step, step_index)}: the reference raises {oracle_exc.kind} ({oracle_exc}) "
                        "but the spec expects no error"
                    )
                if module_exc is not None:
                    tb = "".join(traceback.format_exception(module_exc)[-3:]).rstrip()
                    return Outcome(
                        "failed",
                        f"{_describe(step, step_index)} raised {_exception_text(module_exc)} where the reference "
                        f"does not raise\n{tb}\n{repro}",
                    )
            problem = run.check(step, step_index)
            if problem:
                return Outcome("failed", f"{problem}\n{repro}")
    except _SpecInconsistent as exc:
        return Outcome("error", f"spec error in {case.source} ({case.id}): {exc}")
    except Exception as exc:  # a backend returning something unreadable, say
        tb = "".join(traceback.format_exception(exc)[-3:]).rstrip()
        return Outcome("error", f"harness error at step {step_index} on {name}: {_exception_text(exc)}\n{tb}\n{repro}")
    return Outcome("passed")


def tolerance_label(case: Case) -> str:
    return f"rtol={case.tolerance.rtol:g} atol={case.tolerance.atol:g} ({case.config.dtype})"


