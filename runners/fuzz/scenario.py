"""A drawn scenario made into a spec that the reference agrees with, before any backend runs it.

The oracle runs the spec alone first (a dry run, as the diagnosis replays it). That run decides
three things a spec writer would decide by hand:

- where the reference raises (one value per channel in training, say), the step expects that
  exception type instead of `oracle` (for a backend that declares `errors`; otherwise the
  scenario is not used), so a generated spec is never a "spec error";
- the tolerance: the defaults of cases/model.py hold for well-conditioned data, and a float32
  kernel's error grows with the condition of what it computes (an offset of 1e4 over a spread of
  1 costs four digits of the output, a sum of 65536 gradients of about 1 costs the digits of
  65536). The error bound of each quantity is estimated from the values the oracle sees
  (`_Errors`), and the spec's `tolerance:` widens a dtype's default to cover it;
- scenarios whose reference values leave the range of their dtype (a float16 gradient sum past
  65504 is +inf in torch and 65536 in float64), or sit at the edge where float32 squares
  overflow, are not used: no tolerance can say what rounding decides there.
"""
from __future__ import annotations

import copy
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from bnconform.cases.checks import check_case
from bnconform.cases.dtypes import UNIT_ROUNDOFF, numpy_dtype
from bnconform.cases.inputs import materialize
from bnconform.cases.loader import expand
from bnconform.cases.model import DEFAULT_TOLERANCE, Case
from bnconform.cases.oracle import OracleError
from bnconform.cases.schema import Limits, Spec, Step
from bnconform.runners.engine.scenario import ORACLE_DEFAULTS, STATE, Run, init, steps_of
from bnconform.runners.fuzz.strategies import MAX_ELEMENTS, Offer

FAMILY = "fuzz"
# How many times the estimated error bound a tolerance allows (calibrated on torch, numpy and
# cffi over 1000 drawn scenarios: their largest error was 1.3 times the bound, most below 0.25).
SAFETY = 8.0
# Within this factor of float32's largest value a sum of squares may or may not overflow,
# depending on the order a kernel adds in: such a scenario is not used.
OVERFLOW_MARGIN = 8.0
# A bound up to this fraction of the value it bounds is a relative tolerance, beyond it an absolute one.
RELATIVE = 1e-2
# Past this (absolute or relative) a tolerance checks nothing: the scenario is not used.
LIMIT = 0.05
LIMITS = Limits(max_elements=MAX_ELEMENTS)


class Unusable(Exception):
    """The scenario cannot be checked against the oracle on this backend (the reason says why):
    hypothesis is told to draw another."""


@dataclass(frozen=True)
class Prepared:
    """A spec dict ready to run, its Case, and how many steps it runs."""

    spec: dict[str, Any]
    case: Case

    @property
    def steps(self) -> int:
        return len(self.case.steps)


def build_case(spec: dict[str, Any], path: Path) -> Case:
    """The one Case of a spec dict, validated and checked as the loader does a spec file."""
    model = Spec.model_validate(spec)
    [case] = expand(path, FAMILY, model, {})
    check_case(case, LIMITS)
    return case


def prepare(raw: dict[str, Any], offer: Offer, path: Path = Path("fuzz.yaml")) -> Prepared:
    """The drawn spec with error expectations and tolerances from the oracle's dry run.

    Raises Unusable for a scenario this backend cannot be checked on. Any other exception is a
    bug of the generator (a spec the loader refuses, an oracle that cannot run it)."""
    spec = copy.deepcopy(raw)
    spec.pop("tolerance", None)
    for _ in range(len(spec["steps"]) + 1):
        case = build_case(spec, path)
        raised, errors = _dry_run(case)
        if raised is None:
            break
        index, kind = raised
        if not offer.has("errors"):
            raise Unusable(f"the reference raises {kind} at step {index + 1} and the backend does not declare errors")
        spec["steps"][index]["expect"] = {"error": {"type": kind}}
        if "forward" in spec["steps"][index] and index + 1 < len(spec["steps"]) and "backward" in spec["steps"][index + 1]:
            del spec["steps"][index + 1]  # no graph to go back through
    else:  # pragma: no cover - each pass fixes one step
        raise AssertionError("the dry run did not settle")
    errors.check_limits()
    tolerance = errors.tolerances()
    if tolerance:
        spec["tolerance"] = tolerance
    return Prepared(spec, build_case(spec, path))


def _dry_run(case: Case) -> tuple[Optional[tuple[int, str]], _Errors]:
    """Run the case on the oracle alone: the first raising spec step (index, exception type),
    or None, and the error bounds of what it computed. Unusable if a value leaves its dtype."""
    run = Run(case)
    init(run)
    errors = _Errors(case)
    offset = 0 if case.config.training else 1  # steps_of puts an eval() first
    for position, step in enumerate(steps_of(case)):
        oracle = run.sides["oracle"]
        before = _State.of(oracle)
        try:
            run.apply(step, "oracle")
        except OracleError as exc:
            if step.expect is not None and step.expect.error is not None:
                continue  # expected already (a later pass)
            return (position - offset, exc.kind), errors
        if step.action == "forward":
            errors.forward(run, step, before)
        elif step.action == "backward":
            errors.backward(run, step)
        errors.in_range(run, step)
    return None, errors


@dataclass(frozen=True)
class _State:
    """What a forward's error depends on, from before the forward."""

    training: bool
    running_mean: Optional[np.ndarray]
    running_var: Optional[np.ndarray]
    weight: Optional[np.ndarray]
    bias: Optional[np.ndarray]
    eps: float

    @classmethod
    def of(cls, oracle: Any) -> _State:
        def copy_of(name: str) -> Optional[np.ndarray]:
            v = getattr(oracle, name)
            return None if v is None else np.array(v, dtype=np.float64)

        return cls(oracle.training, copy_of("running_mean"), copy_of("running_var"), copy_of("weight"),
                   copy_of("bias"), float(oracle.eps))


@dataclass
class _Forward:
    """The last forward with a graph, and the errors of what it computed, for the backward."""

    x: np.ndarray
    centre: np.ndarray  # the mean used (batch or running), broadcastable
    denom: np.ndarray  # sqrt(var + eps), broadcastable
    centre_err: np.ndarray  # per channel: the error of the mean used
    elem_err: np.ndarray  # per channel: the rounding of one centred element
    scale_err: float  # relative error of invstd
    held: float  # the unit roundoff the statistics (and torch's backward sums) are held in
    weight: float
    batch: bool


def _per_channel_max(a: np.ndarray) -> np.ndarray:
    axes = (0,) + tuple(range(2, a.ndim))
    return np.max(np.abs(a), axis=axes)


def _finite(a: Any) -> np.ndarray:
    return np.nan_to_num(np.asarray(a, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


class _Errors:
    """Error bounds of what a correct kernel computes, per dtype, from the values the oracle sees.

    u is the unit roundoff of the arithmetic torch uses: float32 for float32 and 16-bit data,
    float64 for float64. The mean a kernel centres with is off by its own rounding (in the
    module's dtype: torch holds a 16-bit module's batch mean in 16 bits) and its accumulation
    error; each centred element by u * |x|; normalising divides both by sqrt(var + eps). A sum
    of n terms is off by about u * acc times their root sum of squares: acc = log2(n) for a
    pairwise or wide accumulation (torch's forward on contiguous planes), sqrt(n) for one value
    after another in float32 (its channels_last, strided and row kernels, and every backward
    sum). A bound (times SAFETY) becomes a relative tolerance where it is at most
    RELATIVE of the value it bounds, an absolute one elsewhere; the dtype's tolerance is the
    widest of its quantities'. Past LIMIT either way the check would say nothing (the output is
    normalised to about 1) and the scenario is not used.
    """

    def __init__(self, case: Case) -> None:
        cfg = case.config
        self.case = case
        self.data, self.module = cfg.data_dtype, cfg.dtype
        self.u = UNIT_ROUNDOFF["float64" if self.data == "float64" else "float32"]
        self.u_module = UNIT_ROUNDOFF[self.module]
        self.u_held = max(self.u, self.u_module)  # what the module holds its statistics in
        self.atol: dict[str, float] = defaultdict(float)
        self.rtol: dict[str, float] = defaultdict(float)
        self.updates = 0
        self.last: Optional[_Forward] = None

    def _widen(self, dtype: str, atol: float = 0.0, rtol: float = 0.0) -> None:
        if math.isfinite(atol):
            self.atol[dtype] = max(self.atol[dtype], atol)
        if math.isfinite(rtol):
            self.rtol[dtype] = max(self.rtol[dtype], rtol)

    def _bound(self, dtype: str, bound: Any, expected: Any, relative: float = 0.0) -> None:
        """Widen `dtype`'s tolerance to `bound` (per channel, or per element) on the values `expected`,
        plus `relative` times each value."""
        self._widen(dtype, rtol=SAFETY * relative)
        if expected is None:
            return
        values = np.asarray(expected, dtype=np.float64)
        if values.size == 0:
            return
        b = SAFETY * _finite(bound)
        if b.ndim == 1 and values.ndim > 1:  # per channel, against (N, C, ...)
            b = b.reshape((1, -1) + (1,) * (values.ndim - 2))
        b = np.broadcast_to(b, values.shape)
        finite = np.isfinite(values)  # an infinity or a NaN compares exactly
        e = np.abs(np.where(finite, values, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = finite & (e > 0) & (b <= RELATIVE * e)
            if scaled.any():
                self._widen(dtype, rtol=float((b[scaled] / e[scaled]).max()))
        absolute = finite & ~scaled
        if absolute.any():
            self._widen(dtype, atol=float(b[absolute].max()))

    def forward(self, run: Run, step: Step, before: _State) -> None:
        self.last = None
        if step.args.shards is not None:
            return
        x = np.asarray(materialize(step.args.input, self.case.config.dim, self.data), dtype=np.float64)
        if x.size == 0 or x.ndim < 2:
            return
        axes = (0,) + tuple(range(2, x.ndim))
        shape = [1] * x.ndim
        shape[1] = x.shape[1]
        n = x.size // x.shape[1]
        log_n = math.log2(n + 2)
        # torch accumulates in float32 on its channels_last and strided paths and over the rows of
        # (N, C) and (N, C, 1, 1) inputs (which it reduces as channels_last: measured 0.2-2.8 u*n
        # in grad_weight at N = 16384 and 2^20), and float64 data in float64 (float32 data in
        # float64 otherwise): there sums grow errors like sqrt(n)
        rows = math.prod(x.shape[2:]) == 1
        plain_sums = step.args.layout != "contiguous" or self.data == "float64" or rows
        batch = before.training or before.running_mean is None
        # torch's 16-bit data paths apply the statistics as x * a + b with a and b in 16 bits
        # (measured: an offset of 1000 costs 16-bit rounding of the mean), as a 16-bit module does;
        # its backward sums are 16-bit for a 16-bit module or a strided 16-bit input
        u, held = self.u, max(self.u_held, UNIT_ROUNDOFF[self.data])
        held_sums = held if step.args.layout == "strided" else self.u_held
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            big = _per_channel_max(x)
            rms = np.sqrt((x * x).mean(axis=axes))
            if batch:
                centre = x.mean(axis=axes, keepdims=True)
                squares = ((x - centre) ** 2).sum(axis=axes, keepdims=True)
                if self.data != "float64":  # float32 accumulation: at the edge, rounding decides overflow
                    limit = float(np.finfo(np.float32).max)
                    if np.any((squares > limit / OVERFLOW_MARGIN) & (squares < limit * OVERFLOW_MARGIN)):
                        raise Unusable("a sum of squares at the edge of float32's range")
                var = squares / n
                spread = np.sqrt(var.ravel())
                accumulated = u * rms * (math.sqrt(n) if plain_sums else log_n / math.sqrt(n))
                centre_err = held * np.abs(centre.ravel()) + accumulated
                centre_back = held_sums * np.abs(centre.ravel()) + accumulated  # what the backward centres with
                scale_err = float(_finite(u * (log_n + big / spread)).max()) + held / 2
            else:
                assert before.running_var is not None and before.running_mean is not None
                centre = before.running_mean.reshape(shape)
                var = before.running_var.reshape(shape)
                centre_err = (held + self.u_module) * np.abs(centre.ravel())
                centre_back = (u + self.u_module) * np.abs(centre.ravel())
                scale_err = u + self.u_module / 2
            denom = np.sqrt(var + before.eps)
            invstd = _finite(1.0 / denom.ravel())
            elem_err = u * big
        weight = max(1.0, float(np.max(np.abs(before.weight)))) if before.weight is not None else 1.0
        bias = float(np.max(np.abs(before.bias))) if before.bias is not None else 0.0
        oracle = run.sides["oracle"]
        # invstd's relative error scales xhat * weight: relative to the output, but for the bias
        output = weight * _finite((centre_err + elem_err) * invstd) + (u + scale_err) * bias
        self._bound(self.data, output, run.observed["oracle"].get("output"), relative=scale_err)
        updated = before.training and oracle.track_running_stats and before.running_mean is not None
        if updated and batch and n > 0:
            assert before.running_var is not None
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                moved = np.abs(np.asarray(oracle.running_mean) - before.running_mean)
                factor = float(_finite(np.clip(moved / np.abs(centre.ravel() - before.running_mean), 0, 1)).max())
            # the mean, weighted by the update; the variance relative (every term of an update is
            # positive), and a constant channel's (u * max|x|)^2 from a mean off by its rounding
            self._bound(self.module, factor * _finite(centre_err), oracle.running_mean)
            self._bound(self.module, _finite(centre_err) ** 2 * n / max(n - 1, 1), oracle.running_var, relative=scale_err)
            self.updates += 1
            if self.module in ("float16", "bfloat16"):  # rounded to the module's dtype at every update
                self._widen(self.module, rtol=(self.updates + 1) * self.u_module)
        if step.args.grad_mode == "enabled":
            self.last = _Forward(x, centre, denom, _finite(centre_back), _finite(elem_err), scale_err, held_sums,
                                 weight, batch)

    def backward(self, run: Run, step: Step) -> None:
        f, self.last = self.last, None
        if f is None:
            return
        dy = np.asarray(materialize(step.args.grad, self.case.config.dim, self.data), dtype=np.float64)
        axes = (0,) + tuple(range(2, dy.ndim))
        n = max(dy.size // dy.shape[1], 1)
        u = self.u
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            invstd = _finite(1.0 / f.denom.ravel())
            xhat = _finite((f.x - f.centre) / f.denom)
            xhat_max = _per_channel_max(xhat)
            sum_dy = np.abs(dy.sum(axis=axes))
            sum_dy_xhat = np.abs((dy * xhat).sum(axis=axes))
            rss_dy = np.sqrt((dy * dy).sum(axis=axes))
            rss_dy_xhat = np.sqrt(((dy * xhat) ** 2).sum(axis=axes))
        biggest = _per_channel_max(dy)
        # torch's backward sums over n one value after another on every path, in float32: errors
        # like sqrt(n) (measured: 0.2 u*n on float32 planes of 2^20, 2.3-2.8 u*n over rows). For
        # 16-bit data eight times that: with a constant upstream gradient, where grad_weight is
        # exactly 0, torch 2.13 gave 8-36 u*n (float16 and bfloat16, planes of 16384 and (16384, 8);
        # float32 data 0.16-0.59); a 16-bit module's (or a strided 16-bit input's) sums are held
        # in 16 bits by torch
        acc = math.sqrt(n) * (8.0 if self.data in ("float16", "bfloat16") else 1.0)
        grad_bias = f.held * acc * rss_dy
        # sum(dy * xhat): the sum's own error, the mean's error (common to the channel) times
        # sum(dy), each element's centring error, and invstd's relative error
        grad_weight = f.held * acc * rss_dy_xhat + f.centre_err * invstd * sum_dy + f.elem_err * invstd * rss_dy
        if f.batch:
            # torch computes a 16-bit module's dx from its sums held in the module's dtype
            held = f.held / 2
            grad_input = f.weight * invstd * (u * biggest + (grad_bias + held * sum_dy) / n
                                              + xhat_max * (grad_weight + held * sum_dy_xhat) / n
                                              + (f.centre_err + f.elem_err) * invstd * sum_dy_xhat / n)
        else:
            grad_input = f.weight * invstd * biggest * u
        observed = run.observed["oracle"]
        self._bound(self.module, grad_bias, observed.get("grad_bias"))
        self._bound(self.module, grad_weight, observed.get("grad_weight"), relative=f.scale_err)
        # invstd scales dx once, and xhat * mean(dy * xhat) twice
        self._bound(self.data, grad_input, observed.get("grad_input"), relative=2 * f.scale_err + u)

    def check_limits(self) -> None:
        for dtype in set(self.atol) | set(self.rtol):
            if self.atol[dtype] > LIMIT or self.rtol[dtype] > LIMIT:
                raise Unusable(f"no tolerance of {dtype} both covers a correct kernel and checks anything here")

    def in_range(self, run: Run, step: Step) -> None:
        """Unusable if a value the step makes observable is finite in float64 but past what its
        dtype holds (torch's value is then +-inf)."""
        oracle = run.sides["oracle"]
        quantities = ORACLE_DEFAULTS.get(step.action, STATE)
        for q in quantities:
            value = run.observed["oracle"].get(q) if q in run.observed["oracle"] else (
                oracle.get(q) if q in STATE else None)
            dtype = oracle.dtype_of(q)
            if value is None or dtype is None or q == "num_batches_tracked":
                continue
            a = np.asarray(value, dtype=np.float64)
            finite = a[np.isfinite(a)]
            if finite.size and float(np.abs(finite).max()) > float(np.finfo(numpy_dtype(dtype)).max) / 2:
                raise Unusable(f"{q} leaves the range of {dtype}")

    def tolerances(self) -> dict[str, dict[str, float]]:
        """`tolerance:` entries for the dtypes whose default is too narrow here."""
        out = {}
        for dtype in sorted(set(self.atol) | set(self.rtol)):
            default = DEFAULT_TOLERANCE[dtype]
            atol, rtol = max(default.atol, self.atol[dtype]), max(default.rtol, self.rtol[dtype])
            if atol > default.atol or rtol > default.rtol:
                out[dtype] = {"rtol": _round_up(rtol), "atol": _round_up(atol)}
        return out


def _round_up(x: float) -> float:
    """x rounded up to two significant digits (a tolerance that reads well in YAML)."""
    if x <= 0:
        return 0.0
    exponent = math.floor(math.log10(x)) - 1
    return float(f"{math.ceil(x / 10.0**exponent)}e{exponent}")
