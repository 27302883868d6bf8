"""Drive a case's steps on a module and on the oracle (or on the oracle alone).

One dispatch serves both sides, since the oracle follows the module protocol. Used by the
executor (module beside the reference) and by the diagnosis (the oracle with a deviation).
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

from bnconform.cases.inputs import materialize
from bnconform.cases.model import Case
from bnconform.cases.oracle import Oracle, OracleError
from bnconform.cases.schema import QUANTITIES, Step
from bnconform.runners.engine import contract
from bnconform.runners.engine.mismatch import mismatch

# What `expect: oracle` checks after each kind of step.
ORACLE_DEFAULTS = {
    "forward": ("output", "running_mean", "running_var", "num_batches_tracked"),
    "backward": ("grad_input", "grad_weight", "grad_bias"),
}
STATE = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class SpecInconsistent(Exception):
    """The spec contradicts the reference (oracle): a spec bug, reported as an error."""


def describe_step(step: Step, index: int) -> str:
    return f"step {index} ({step.action}{': ' + step.note if step.note else ''})"


def type_names(exc: BaseException) -> list[str]:
    """The names of an exception's classes, most derived first (also for one raised in a backend's worker)."""
    return list(getattr(exc, "type_names", None) or [cls.__name__ for cls in type(exc).__mro__])


def exception_text(exc: BaseException) -> str:
    return f"{type_names(exc)[0]}: {exc}".strip()


def is_type(exc: BaseException, name: str) -> bool:
    return name in type_names(exc)


class Run:
    """State of one case run: the module and the oracle, driven by the same steps.

    The oracle follows the module protocol too (in float64 internally), so one dispatch
    serves both sides; each side keeps what its steps made observable and what it saved.
    """

    def __init__(self, case: Case, module: Any = None, deviations: Iterable[str] = (), decay_driven: bool = False) -> None:
        self.case = case
        self.cfg = case.config
        self.decay_driven = decay_driven  # the module takes momentum as the weight of the old value
        # With deviations (a declared profile), the switched oracle replaces golden numbers too.
        self.deviations = frozenset(deviations)
        self.sides = {"oracle": Oracle(case.config, deviations)}
        if module is not None:
            self.sides["module"] = module
        # What the module showed, step by step: (step position, quantity or "error" or
        # "state_dict_keys", value). Only read when a case fails, to diagnose it.
        self.log: list[tuple[int, str, Any]] = []
        self.observed: dict[str, dict[str, Any]] = {"module": {}, "oracle": {}}
        self.messages_own = False  # the backend declares its own error messages (Conventions.messages)
        self.own_messages: list[str] = []  # right exception type, other words: what the declaration covered
        self.message_only = False  # the failure is a message mismatch alone (nothing to diagnose)
        self.spec_suspect = False  # a golden the module failed contradicts the oracle too
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
                if side == "module" and k == "momentum" and self.decay_driven and v is not None:
                    v = 1.0 - v
                target.set_attribute(k, v)
        elif act == "forward":
            observed.clear()
            x = self.array(args.input)
            observed["output"] = target.forward(x)
            if side == "module":
                contract.array("forward() returned an output that", observed["output"], x.dtype, x.shape)
        elif act == "backward":
            g = self.array(args.grad)
            grads = target.backward(g)
            if side == "module":
                contract.grads("backward()", grads, g.dtype, g.shape, self.cfg.num_features)
            # a key left out means None ("absent"), on both sides
            observed.update({f"grad_{k}": grads.get(k) for k in ("input", "weight", "bias")})
        elif act == "state_dict":
            self.saved[side][args.save_as] = target.state_dict()
            if side == "module":
                contract.state("state_dict()", self.saved[side][args.save_as], np.dtype(self.cfg.dtype),
                               self.cfg.num_features)
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
                raise SpecInconsistent(f"load_state_dict from {args.from_!r}, which no state_dict step saved")
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
            raise SpecInconsistent(f"expects {quantity} but no step produced it")
        value = self.sides[side].get(quantity)
        if side == "module" and quantity == "num_batches_tracked":
            contract.counter("get('num_batches_tracked')", value)
        elif side == "module":
            contract.array(f"get('{quantity}')", value, np.dtype(self.cfg.dtype), (self.cfg.num_features,), allow_none=True)
        return value

    def check(self, step: Step, position: int, index: int) -> Optional[str]:
        """Compare the module with the step's expectations (logging what it showed)."""
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
            source = "oracle" if wanted[q] == "oracle" or self.deviations else "golden"
            expected = self.value("oracle", q) if source == "oracle" else wanted[q]
            actual = self.value("module", q)
            self.log.append((position, q, None if actual is None else np.array(actual, copy=True)))
            diff = mismatch(q, expected, actual, tol)
            if diff:
                where = describe_step(step, index)
                problems.append(f"{q} differs after {where} [expected: {source}, {self.cfg.dtype}]\n  {diff}")
                if source == "golden" and mismatch(q, expected, self.value("oracle", q), tol) is not None:
                    self.spec_suspect = True
        if exp.state_dict_keys is not None:
            keys = list(self.sides["module"].state_dict().keys())
            self.log.append((position, "state_dict_keys", keys))
            want = list(self.sides["oracle"].state_dict()) if self.deviations else list(exp.state_dict_keys)
            if keys != want and list(self.sides["oracle"].state_dict()) != want:
                self.spec_suspect = True
            if keys != want:
                problems.append(
                    f"state_dict keys differ after {describe_step(step, index)}: expected {want}, got {keys}"
                )
        return "\n".join(problems) or None


def init(run: Run) -> None:
    for name, source in run.case.init.items():
        value = int(np.asarray(source).item()) if name == "num_batches_tracked" else run.array(source)
        try:
            run.sides["oracle"].assign(name, value)
        except OracleError as exc:
            raise SpecInconsistent(f"init sets {name}, which the reference does not have ({exc})") from None
        if "module" in run.sides:
            run.sides["module"].assign(name, value)


def steps_of(case: Case) -> list[Step]:
    """The steps as run: an eval() first when the case starts in eval mode."""
    steps = list(case.steps)
    if not case.config.training:
        steps.insert(0, Step.model_validate("eval"))
    return steps


