"""Scenarios as composable hypothesis strategies, each producing a spec dict in the YAML format.

What is drawn is what the spec language can say (docs/spec-format.md): a module configuration,
an input shape, seeded `{random: ...}` sources and a sequence of steps, each step `expect:
oracle`. Only what the backend declares is used (`Offer`), so no scenario is skipped.

The weights put the corners where kernels change code paths or run out of arithmetic often
enough to be met within a two-minute budget: channel counts around the blocks of 8, 16, 32
and 64 and values per channel at the boundaries of cases/shapes.py (and between them),
channels_last, offsets that cancel a one-pass variance, magnitudes whose squares overflow
float32, 16-bit sums past 65504, constant channels, empty axes.

Shrinking is what makes a failure readable, and hypothesis shrinks the sequence of choices a
scenario was drawn from. So every choice shrinks towards the plainest value (each weighted
draw lists its plainest alternative first), and the same choices are drawn in the same order
whatever the earlier ones were: a choice that does not apply (the bias flag of a module
without affine parameters, a channels_last layout for a 2-D input, an overflow offset for
float16 data) is drawn anyway and mapped to what does apply. Then lowering one choice leaves
the meaning of every later one alone.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import strategies as st

from bnconform.cases.shapes import (
    CHANNEL_COUNTS,
    OFFSETS,
    OVERFLOW_SCALES,
    UNDERFLOW_SCALES,
    VALUES_PER_CHANNEL,
    WIDE_CHANNEL_COUNTS,
)

T = TypeVar("T")

MAX_ELEMENTS = 2_000_000  # elements of one array: keeps a scenario well under a second on the oracle
MAX_SCENARIO_ELEMENTS = 4_000_000  # summed over every array a scenario feeds
MAX_STEPS = 8
LOW_PRECISION = ("float16", "bfloat16")
FLOAT16_MAX = 65504.0
# Values of 16-bit data whose sums pass float16's largest value 65504 after a few hundred values.
HALF_SUM_OFFSETS = (100.0, 300.0, 1000.0)
# Offsets of float32 data whose squares overflow float32 (|x| above ~1.8e19) with a small spread.
OVERFLOW_OFFSETS = (2.0e19, 1.0e25, 1.0e30)


@dataclass(frozen=True)
class Offer:
    """What the backend declares (`Capabilities.provides()`), as the strategies read it."""

    provides: frozenset[str]

    def has(self, feature: str) -> bool:
        return feature in self.provides

    @property
    def dims(self) -> list[int]:
        return sorted(int(p.split("=", 1)[1]) for p in self.provides if p.startswith("dim="))

    @property
    def dtypes(self) -> list[str]:
        order = ("float32", "float64", "float16", "bfloat16")
        return [d for d in order if f"dtype={d}" in self.provides]


# -- drawing ----------------------------------------------------------------------------
@st.composite
def _pick(draw: st.DrawFn, choices: tuple[tuple[int, st.SearchStrategy[Any]], ...]) -> Any:
    k = draw(st.integers(0, sum(w for w, _ in choices) - 1))
    for w, strategy in choices:
        if k < w:
            return draw(strategy)
        k -= w
    raise AssertionError("unreachable")


def weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """One of the strategies, drawn with the given weights (weight 0: left out). Shrinks towards
    the first, so it comes first: the plainest alternative."""
    return _pick(tuple((w, s) for w, s in choices if w > 0))


@functools.lru_cache(maxsize=None)
def chance(percent: int) -> st.SearchStrategy[bool]:
    """True `percent` times in a hundred; shrinks to False."""
    return weighted((100 - percent, st.just(False)), (percent, st.just(True)))


@functools.lru_cache(maxsize=None)
def one_of(weights: tuple[tuple[Any, int], ...]) -> st.SearchStrategy[Any]:
    """One of the values, (value, weight) pairs, the first the plainest."""
    return weighted(*((w, st.just(v)) for v, w in weights))


@st.composite
def _bits(draw: st.DrawFn, lo: int, hi: int) -> int:
    bits = draw(st.integers(max(lo, 1).bit_length(), hi.bit_length()))
    return draw(st.integers(max(lo, 1 << (bits - 1)), min(hi, (1 << bits) - 1)))


@functools.lru_cache(maxsize=None)
def log_between(lo: int, hi: int) -> st.SearchStrategy[int]:
    """An integer in [lo, hi], about uniform in its number of bits (sizes between the boundaries)."""
    return _bits(lo, hi)


_SEED = st.integers(0, 9999)
_FRACTION = st.integers(0, 255)  # a position in a list known only later (a divisor of n)
_SMALL = st.integers(1, 3)


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


# -- the module -------------------------------------------------------------------------
_EPS = weighted((60, st.just(1e-5)), (25, st.sampled_from([1e-3, 0.1, 1.0, 1e-8])),
                (15, st.integers(0, 12).map(lambda k: float(f"1e-{k}"))))
_MOMENTUM = weighted((50, st.just(0.1)), (15, st.none()), (20, st.sampled_from([0.0, 1.0, 0.5, 0.01, 0.9])),
                     (15, st.integers(0, 1000).map(lambda k: k / 1000)))
# 16-bit modules hold their statistics in 16 bits (torch's too): offsets leave little to check there
_DTYPE_WEIGHTS = {"float32": 55, "float64": 15, "float16": 18, "bfloat16": 12}


@st.composite
def configs(draw: st.DrawFn, offer: Offer) -> dict[str, Any]:
    """A module configuration (config keys at their defaults are left out of the spec)."""
    cfg: dict[str, Any] = {}
    cfg["dim"] = draw(one_of(tuple((d, {1: 30, 2: 45, 3: 25}[d]) for d in offer.dims)))
    eps, momentum = draw(_EPS), draw(_MOMENTUM)
    decay, no_affine, no_bias, untracked, in_eval = (draw(chance(p)) for p in (10, 20, 15, 20, 15))
    dtype = draw(one_of(tuple((d, _DTYPE_WEIGHTS[d]) for d in offer.dtypes)))
    mixed, half = draw(chance(40)), draw(one_of((("float16", 2), ("bfloat16", 1))))
    if eps != 1e-5:
        cfg["eps"] = eps
    if momentum is None and not offer.has("momentum_none"):
        momentum = 0.1
    if decay and momentum is not None and offer.has("momentum_decay"):
        cfg["momentum_convention"] = "decay"  # the same module: the decay weight is 1 - torch's
        momentum = round(1.0 - momentum, 6)
    if momentum != 0.1:
        cfg["momentum"] = momentum
    if no_affine:
        cfg["affine"] = False
    elif no_bias and offer.has("no_bias"):
        cfg["bias"] = False
    if untracked and offer.has("untracked"):
        cfg["track_running_stats"] = False
    if in_eval:
        cfg["training"] = False
    if dtype != "float32":
        cfg["dtype"] = dtype
    elif mixed and offer.has("mixed_precision") and f"dtype={half}" in offer.provides:
        cfg["input_dtype"] = half  # 16-bit data into a float32 module
    return cfg


# -- the input shape --------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """The input shape of a scenario (every forward feeds this shape) and the layouts it allows."""

    dim: int
    shape: tuple[int, ...]
    layouts: frozenset[str]

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


VALUES = weighted((50, st.sampled_from(VALUES_PER_CHANNEL)), (20, log_between(2, 70000)), (4, st.just(0)),
                  (3, st.just(1)), (12, st.sampled_from([v for v in VALUES_PER_CHANNEL if v >= 16384] + [16385, 65537])),
                  )  # N * spatial size: the boundaries, sizes between, empty, one value, and large planes
# Past 4096 values per channel, at most this many elements in most arrays (long channels are what
# large planes test: a few of them are enough, and cheaper).
LONG_CHANNELS = 2**19
CHANNELS = weighted((30, st.sampled_from([c for c in CHANNEL_COUNTS if c <= 17])),
                    (45, st.sampled_from(CHANNEL_COUNTS)), (20, log_between(1, 300)),
                    (5, st.sampled_from(WIDE_CHANNEL_COUNTS)))  # C: the block boundaries, between, wide
_RANK_1D = one_of(((2, 60), (3, 40)))  # BatchNorm1d: (N, C) or (N, C, L)


@st.composite
def problems(draw: st.DrawFn, offer: Offer, dim: int) -> Problem:
    """An input shape for BatchNorm{dim}d: (N, C) or (N, C, L), (N, C, H, W), (N, C, D, H, W),
    with n = N * spatial size and C * n at most MAX_ELEMENTS."""
    n, c, rank = draw(VALUES), draw(CHANNELS), draw(_RANK_1D)
    rank = {2: 4, 3: 5}.get(dim, rank)
    c = max(1, min(c, MAX_ELEMENTS // max(n, 1), max(17, LONG_CHANNELS // max(n, 1))))
    positions = [draw(_FRACTION) for _ in range(3)]  # N, then spatial sizes (or the empty axis)
    smalls = [draw(_SMALL) for _ in range(4)]
    if n == 0:  # an empty axis: N, or one of the spatial ones
        sizes = smalls[:rank - 1]
        sizes[positions[0] * (rank - 1) // 256] = 0
    else:
        sizes, rest = [], n
        for k in range(rank - 2):
            divisors = _divisors(rest)
            sizes.append(divisors[positions[k] * len(divisors) // 256])
            rest //= sizes[-1]
        sizes.append(rest)
    layouts = {"contiguous"}
    if offer.has("channels_last") and rank in (4, 5):
        layouts.add("channels_last" if rank == 4 else "channels_last_3d")
    if offer.has("strided"):
        layouts.add("strided")
    return Problem(dim, (sizes[0], c, *sizes[1:]), frozenset(layouts))


_LAYOUT = one_of((("contiguous", 55), ("channels_last", 35), ("strided", 15)))


def layout_for(problem: Problem, drawn: str) -> str:
    """A drawn layout as this input takes it (channels_last_3d for 5-D; contiguous where not declared)."""
    if drawn == "channels_last" and len(problem.shape) == 5:
        drawn = "channels_last_3d"
    return drawn if drawn in problem.layouts else "contiguous"


# -- values -----------------------------------------------------------------------------
def _source(distribution: str = "normal", scale: float = 1.0, offset: float = 0.0) -> dict[str, Any]:
    """The fields of a {random: ...} source other than seed and shape (defaults left out)."""
    out: dict[str, Any] = {}
    if distribution != "normal":
        out["distribution"] = distribution
    if scale != 1.0:
        out["scale"] = scale
    if offset != 0.0:
        out["offset"] = offset
    return out


_SIGN = one_of(((1.0, 1), (-1.0, 1)))
# (kind, magnitude index, spread index, sign): fixed choices, read by fit_values()
DATA = st.tuples(
    one_of((("plain", 34), ("scaled", 10), ("offset", 20), ("overflow", 6), ("raw_squares", 8), ("half_sums", 8),
            ("constant", 6), ("underflow", 4), ("uniform", 5), ("arange", 3))),
    st.integers(0, 5), st.integers(0, 2), _SIGN)
_SCALES = (0.5, 2.0, 10.0, 100.0, 1000.0, 0.001)
_SPREADS = (1.0, 0.1, 10.0)


_ULP = {"float16": 2.0**-10, "bfloat16": 2.0**-7}  # the 16-bit dtypes: spacing of their values, relative


def fit_values(drawn: tuple[str, int, int, float], dtype: str, layout: str, module: str = "float32") -> dict[str, Any]:
    """How a forward input is distributed, for data of `dtype` in `layout` into a module of
    `module`: plain N(0, 1), then the magnitudes where arithmetic runs out (cases/shapes.py:
    OFFSETS, OVERFLOW_SCALES, UNDERFLOW_SCALES; float16 sums past 65504), constant channels, and
    other distributions, each kept where a correct kernel can still be checked:

    - float16 data within its range (an overflow or underflow corner becomes an offset, or plain
      data);
    - 16-bit data, or a 16-bit module, at offsets of at most 4 spreads: torch applies the
      statistics in 16 bits there, so a larger offset costs the output its digits, in torch too;
    - channels_last and strided data within an offset of 1e4 times its spread and without
      squares that overflow: torch's kernels for them accumulate in float32 (and do not overflow
      where the contiguous one does), and past that the reference itself is not accurate."""
    kind, magnitude, spread_index, sign = drawn
    half, channels_last = dtype == "float16", layout != "contiguous"
    spread = _SPREADS[spread_index]
    if (half or channels_last) and kind == "overflow":
        kind, magnitude = "scaled", 4
    if half and kind == "raw_squares":
        kind, magnitude = "offset", 0
    if half and kind == "underflow":
        kind = "plain"
    if kind in ("offset", "raw_squares", "half_sums"):
        if kind == "offset":
            offset = 1e4 if half or channels_last else OFFSETS[magnitude % len(OFFSETS)]
            spread = max(spread, 1.0) if channels_last else spread
        elif kind == "raw_squares":
            # channels_last and strided: 2e19 only, whose centred squares (a spread of 2e16) stay
            # in range for 70000 values; at 1e25 and 1e30 a spread of 1e-3 of it overflows too
            offset = OVERFLOW_OFFSETS[0 if channels_last else magnitude % len(OVERFLOW_OFFSETS)]
            spread = offset * (1e-3 if channels_last else (1e-4, 1e-3, 1e-5)[spread_index])
        else:
            offset, spread = HALF_SUM_OFFSETS[magnitude % len(HALF_SUM_OFFSETS)], (1.0, 10.0)[spread_index % 2]
        if module in _ULP or dtype in _ULP:
            offset = min(offset, 4 * spread)
        return _source(scale=spread, offset=sign * offset if kind != "half_sums" else offset)
    if kind == "scaled":
        return _source(scale=_SCALES[magnitude])
    if kind == "overflow":
        return _source(scale=OVERFLOW_SCALES[magnitude % len(OVERFLOW_SCALES)])
    if kind == "constant":
        value = (0.0, 1.0, 3.5, -2.0, 10000.0, 0.5)[magnitude]
        return _source("constant", scale=value)
    if kind == "underflow":
        return _source(scale=UNDERFLOW_SCALES[magnitude % len(UNDERFLOW_SCALES)])
    if kind == "uniform":
        width = (1.0, 4.0)[magnitude % 2]
        return _source("uniform", scale=width, offset=(0.0, -0.5)[spread_index % 2] * width)
    if kind == "arange":
        return _source("arange", scale=(1.0, 0.001)[magnitude % 2])
    return _source()


GRADS = weighted(  # an upstream gradient: N(0, 1), about 1 everywhere (its sums grow with the count:
    (50, st.just(_source())),  # past 65504 in float16 after 65536 values), large, constant, small
    (16, st.sampled_from([0.01, 0.1]).map(lambda s: _source(scale=s, offset=1.0))),
    (12, st.sampled_from([100.0, 1000.0, 10000.0]).map(lambda s: _source(scale=s))),
    (6, st.sampled_from([1.0, -2.0, 0.5]).map(lambda v: _source("constant", scale=v))),
    (4, st.just(_source(scale=0.001))),
)


def _random(seed: int, shape: tuple[int, ...] | list[int], fields: dict[str, Any]) -> dict[str, Any]:
    return {"random": {"seed": seed, "shape": list(shape), **fields}}


# -- steps ------------------------------------------------------------------------------
_MOMENTA = weighted((60, st.sampled_from([0.1, 0.5, 1.0, 0.0])), (20, st.none()),
                    (20, st.integers(0, 100).map(lambda k: k / 100)))
_FORWARD = st.tuples(_SEED, _LAYOUT, DATA).map(lambda t: {"kind": "forward", "seed": t[0], "layout": t[1], "values": t[2]})


@functools.lru_cache(maxsize=None)
def steps(offer: Offer) -> st.SearchStrategy[dict[str, Any]]:
    """One abstract step (an action and what it draws); `spec_steps` makes them a valid sequence."""
    def word(kind: str) -> st.SearchStrategy[dict[str, Any]]:
        return st.just({"kind": kind})

    return weighted(
        (40, _FORWARD),
        (35 if offer.has("backward") else 0, st.tuples(_SEED, GRADS).map(
            lambda t: {"kind": "backward", "seed": t[0], "values": t[1]})),
        (6, word("eval")),
        (5, word("train")),
        (5 if offer.has("toggle_track_running_stats") else 0,
         st.booleans().map(lambda b: {"kind": "set", "values": {"track_running_stats": b}})),
        (5 if offer.has("set_momentum") else 0, _MOMENTA.map(lambda m: {"kind": "set", "values": {"momentum": m}})),
        (4 if offer.has("state_dict") else 0, word("state_dict")),
        (4 if offer.has("state_dict") else 0, word("load_state_dict")),
        (3 if offer.has("reset") else 0, word("reset_running_stats")),
        (2 if offer.has("reset") else 0, word("reset_parameters")),
        (3 if offer.has("grad_modes") else 0, _FORWARD.map(lambda d: {**d, "grad_mode": "no_grad"})),
    )


def spec_steps(drawn: list[dict[str, Any]], problem: Problem, dtype: str, offer: Offer,
               module: str = "float32") -> list[dict[str, Any]]:
    """The drawn steps as a valid spec sequence, each expecting the oracle: a forward first if
    there is none, a backward only right after a forward with a graph (else dropped), a load
    only after a save (else a save), a `set: {momentum: null}` only where declared, and no more
    data than MAX_SCENARIO_ELEMENTS."""
    if not any(d["kind"] == "forward" for d in drawn):
        drawn = [{"kind": "forward", "seed": 0, "layout": "contiguous", "values": ("plain", 0, 0, 1.0)}, *drawn]
    out: list[dict[str, Any]] = []
    graph = False  # the last step was a forward with a graph
    saves = 0
    budget = MAX_SCENARIO_ELEMENTS
    for d in drawn:
        kind = d["kind"]
        if kind in ("forward", "backward"):
            if kind == "backward" and not graph:
                continue
            if problem.elements > budget:
                break
            budget -= problem.elements
        if kind == "forward":
            layout = layout_for(problem, d["layout"])
            values = fit_values(d["values"], dtype, layout, module)
            args: dict[str, Any] = {"input": _random(d["seed"], problem.shape, values)}
            if layout != "contiguous":
                args["layout"] = layout
            if d.get("grad_mode", "enabled") != "enabled":
                args["grad_mode"] = d["grad_mode"]
            out.append({"forward": args, "expect": "oracle"})
            graph = "grad_mode" not in args
            continue
        graph = False
        if kind == "backward":
            out.append({"backward": {"grad": _random(d["seed"], problem.shape, d["values"])}, "expect": "oracle"})
        elif kind == "set":
            values = dict(d["values"])
            if values.get("momentum", 0.0) is None and not offer.has("momentum_none"):
                values["momentum"] = 0.1
            out.append({"set": values, "expect": "oracle"})
        elif kind == "state_dict" or (kind == "load_state_dict" and not saves):
            saves += 1
            out.append({"state_dict": {"save_as": f"s{saves}"}, "expect": "oracle"})
        elif kind == "load_state_dict":
            out.append({"load_state_dict": {"from": f"s{saves}"}, "expect": "oracle"})
        else:  # train, eval, reset_running_stats, reset_parameters
            out.append({kind: None, "expect": "oracle"})
    return out


_INIT = st.tuples(*(st.tuples(chance(50), _SEED) for _ in range(4)))  # weight, bias, running_mean, running_var


def inits(drawn: tuple[tuple[bool, int], ...], cfg: dict[str, Any], c: int) -> dict[str, Any]:
    """Initial parameter and buffer values (only those the module has): N(0, 1) weights and
    means, running variances uniform in [0.5, 1.5)."""
    affine, tracked = cfg.get("affine", True), cfg.get("track_running_stats", True)
    has = {"weight": affine, "bias": affine and cfg.get("bias", True), "running_mean": tracked, "running_var": tracked}
    out: dict[str, Any] = {}
    for name, (wanted, seed) in zip(("weight", "bias", "running_mean", "running_var"), drawn):
        if wanted and has[name]:
            out[name] = _random(seed, [c], _source("uniform", offset=0.5) if name == "running_var" else {})
    return out


@st.composite
def scenarios(draw: st.DrawFn, offer: Offer) -> dict[str, Any]:
    """A spec dict (one spec of family `fuzz`): config, optional init, steps each `expect: oracle`."""
    cfg = draw(configs(offer))
    problem = draw(problems(offer, cfg["dim"]))
    cfg["num_features"] = problem.shape[1]
    with_init, init_values = draw(chance(25)), draw(_INIT)
    drawn: list[dict[str, Any]] = draw(st.lists(steps(offer), min_size=1, max_size=MAX_STEPS))
    spec: dict[str, Any] = {"id": "scenario", "description": "drawn by bnconform fuzz", "config": cfg}
    init = inits(init_values, cfg, problem.shape[1]) if with_init and offer.has("init") else {}
    if init:
        spec["init"] = init
    module = cfg.get("dtype", "float32")
    spec["steps"] = spec_steps(drawn, problem, cfg.get("input_dtype") or module, offer, module)
    return spec

