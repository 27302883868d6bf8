"""Drive a case's steps on a module and on the oracle (or on the oracle alone).

One dispatch serves both sides, since the oracle follows the module protocol. Used by the
executor (module beside the reference) and by the diagnosis (the oracle with a deviation).
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

from bnconform.cases import layouts
from bnconform.cases.dtypes import dtype_name, numpy_dtype
from bnconform.cases.inputs import materialize
from bnconform.cases.layers import apply_layer
from bnconform.cases.model import Case
from bnconform.cases.oracle import Oracle, OracleError
from bnconform.cases.schema import QUANTITIES, Step
from bnconform.runners.engine import contract
from bnconform.runners.engine.mismatch import mismatch

# What `expect: oracle` checks after each kind of step.
ORACLE_DEFAULTS = {
    "forward": ("output", "running_mean", "running_var", "num_batches_tracked"),
    "backward": ("grad_input", "grad_weight", "grad_bias"),
    "double_backward": ("gradgrad_input", "gradgrad_weight", "gradgrad_output"),
    "fold": ("fused_weight", "fused_bias", "fused_output"),
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
        self.layout = "contiguous"  # the last forward's input layout: an upstream gradient gets it too

    def array(self, source: Any, dtype: Optional[str] = None, layout: str = "contiguous") -> np.ndarray:
        """A source as the module's dtype (or `dtype`) in `layout`."""
        return materialize(source, self.cfg.dim, dtype or self.cfg.dtype, layout)

    def data(self, source: Any, layout: str = "contiguous") -> np.ndarray:
        """An input-side array: the input's dtype (input_dtype, else the module's)."""
        return self.array(source, self.cfg.data_dtype, layout)

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
            self.layout = args.layout
            if args.shards is not None:
                shards = [self.data(source, args.layout) for source in args.shards]
                outputs = target.forward_shards(shards)
                if side == "module":
                    contract.shard_outputs(outputs, shards, layouts.output_layout(args.layout))
                observed["output"] = np.concatenate(outputs, axis=0)
            else:
                x = self.data(args.input, args.layout)
                if args.grad_mode == "enabled":
                    observed["output"] = target.forward(x)
                else:
                    observed["output"] = target.forward_with_grad_mode(x, args.grad_mode)
                if side == "module":
                    contract.array("forward() returned an output that", observed["output"], None, x.shape)
        elif act == "backward":
            g = self.data(args.grad, self.layout)
            grads = target.backward(g)
            if side == "module":
                contract.grads("backward()", grads, g.shape, self.cfg.num_features)
            # a key left out means None ("absent"), on both sides
            observed.update({f"grad_{k}": grads.get(k) for k in ("input", "weight", "bias")})
        elif act == "double_backward":
            g, probe = self.data(args.grad, self.layout), self.data(args.probe, self.layout)
            grads = target.double_backward(g, probe)
            if side == "module":
                contract.grads("double_backward()", grads, g.shape, self.cfg.num_features, ("input", "weight", "output"))
            observed.update({f"gradgrad_{k}": grads.get(k) for k in ("input", "weight", "output")})
        elif act == "fold":
            weight = self.array(args.weight)
            bias = None if args.bias is None else self.array(args.bias)
            folded = target.fold(args.layer, weight, bias)
            if side == "module" and not (isinstance(folded, tuple) and len(folded) == 2):
                raise contract.ContractViolation(f"fold() returned {type(folded).__name__}; expected (weight, bias)")
            fused_w, fused_b = folded
            if side == "module":
                contract.array("fold() returned a weight that", fused_w, None, weight.shape)
                contract.array("fold() returned a bias that", fused_b, None, (weight.shape[0],))
            observed.update({"fused_weight": fused_w, "fused_bias": fused_b})
            if args.input is not None:
                x = self.array(args.input)
                observed["fused_output"] = (apply_layer(args.layer, x, fused_w, fused_b) if side == "module"
                                            else target.unfolded(args.layer, weight, bias, x))
        elif act == "state_dict":
            self.saved[side][args.save_as] = target.state_dict()
            if side == "module":
                contract.state("state_dict()", self.saved[side][args.save_as], numpy_dtype(self.cfg.dtype),
                               self.cfg.num_features)
        elif act == "load_state_dict":
            values = self._load_values(args, self.saved[side])
            if args.version == "current":
                target.load_state_dict(values, strict=args.strict)
            else:  # an older checkpoint, or one without version metadata
                target.load_state_dict(values, strict=args.strict, version=args.version)
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
                values[k] = self.array(v)
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
            contract.array(f"get('{quantity}')", value, None, (self.cfg.num_features,), allow_none=True)
        return value

    def compare(self, quantity: str, expected: Any, actual: Any) -> Optional[str]:
        """How `actual` differs from `expected` (values within the tolerance of the quantity's
        dtype), and from the dtype and layout the oracle says torch gives it; None if it does not."""
        oracle = self.sides["oracle"]
        want_dtype = oracle.dtype_of(quantity)
        if want_dtype is not None and isinstance(expected, np.ndarray):
            expected = _in_range_of(expected, want_dtype)
        diff = mismatch(quantity, expected, actual, self.case.tolerance_for(want_dtype or self.cfg.dtype, quantity))
        if diff is not None or not isinstance(actual, np.ndarray):
            return diff
        if want_dtype is not None and dtype_name(actual.dtype) != want_dtype:
            return f"dtype differs: expected {want_dtype}, got {dtype_name(actual.dtype)}"
        want_layout = oracle.layout_of(quantity)
        if want_layout is not None and actual.ndim > 1 and not layouts.matches(actual, want_layout):
            return f"layout differs: expected {want_layout}, got {layouts.describe(actual)}"
        return None

    def check(self, step: Step, position: int, index: int) -> Optional[str]:
        """Compare the module with the step's expectations (logging what it showed)."""
        exp = step.expect
        if exp is None:
            return None
        wanted: dict[str, Any] = dict(exp.values)
        if exp.all_oracle:
            for q in ORACLE_DEFAULTS.get(step.action, STATE):
                if q == "fused_output" and q not in self.observed["oracle"]:
                    continue  # a fold without `input` has no fused output
                wanted.setdefault(q, "oracle")
        problems = []
        for q in QUANTITIES:
            if q not in wanted:
                continue
            source = "oracle" if wanted[q] == "oracle" or self.deviations else "golden"
            expected = self.value("oracle", q) if source == "oracle" else wanted[q]
            actual = self.value("module", q)
            self.log.append((position, q, None if actual is None else np.array(actual, copy=True)))
            diff = self.compare(q, expected, actual)
            if diff:
                where = describe_step(step, index)
                dtype = self.sides["oracle"].dtype_of(q) or self.cfg.dtype
                problems.append(f"{q} differs after {where} [expected: {source}, {dtype}]\n  {diff}")
                tol = self.case.tolerance_for(dtype, q)
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


def _in_range_of(expected: np.ndarray, dtype: str) -> np.ndarray:
    """The expectation as a `dtype` array holds it: a value beyond the type's largest rounds to
    infinity, as IEEE rounding does (a float16 grad_bias of 131072 is inf), the rest unchanged."""
    finite_max = float(np.finfo(numpy_dtype(dtype)).max)
    with np.errstate(invalid="ignore"):
        beyond = np.abs(expected) > finite_max
    if not beyond.any():
        return expected
    with np.errstate(over="ignore"):
        rounded = expected.astype(numpy_dtype(dtype)).astype(np.float64)
    return np.where(beyond, rounded, expected)


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


