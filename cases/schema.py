"""The spec language, as pydantic models.

A spec file is validated against these models right after safe YAML loading, so every
mistake is reported with its key path before anything runs. `docs/spec-format.md` is the
prose version of this module; keep the two in step.
"""
from __future__ import annotations

import math
import re
from typing import Any, Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

QUANTITIES = (
    "output",
    "running_mean",
    "running_var",
    "num_batches_tracked",
    "weight",
    "bias",
    "grad_input",
    "grad_weight",
    "grad_bias",
    "gradgrad_input",
    "gradgrad_weight",
    "gradgrad_output",
    "fused_weight",
    "fused_bias",
    "fused_output",
)
DTYPE_NAMES = Literal["float16", "bfloat16", "float32", "float64"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _error_at(title: str, loc: tuple[Union[str, int], ...], value: Any, message: str) -> ValidationError:
    """A ValidationError at `loc` below the model being validated (raised from a before-validator,
    pydantic appends it to the enclosing key path: `steps[2].expect.running_mean`)."""
    return ValidationError.from_exception_data(
        title, [{"type": "value_error", "loc": loc, "input": value, "ctx": {"error": ValueError(message)}}]
    )


def _prefixed(exc: ValidationError, *prefix: Union[str, int]) -> ValidationError:
    """`exc` with `prefix` put in front of every error's key path."""
    details: list[Any] = []
    for err in exc.errors():
        detail = {"type": err["type"], "loc": (*prefix, *err["loc"]), "input": err["input"]}
        if "ctx" in err:
            detail["ctx"] = err["ctx"]
        details.append(detail)
    return ValidationError.from_exception_data(exc.title, details)


class ModuleConfig(Strict):
    """Constructor arguments of nn.BatchNorm{dim}d, plus the initial mode and dtype."""

    dim: Literal[1, 2, 3] = 2
    num_features: int = Field(default=3, ge=1)
    eps: float = 1e-5
    momentum: Optional[float] = 0.1
    # "torch": momentum is the weight of the new batch. "decay": it is the weight of the
    # old value (Keras, Flax, ONNX); only backends that declare that convention run it.
    momentum_convention: Literal["torch", "decay"] = "torch"
    affine: bool = True
    track_running_stats: bool = True
    training: bool = True
    # The module's dtype (parameters and buffers) and the input's; input_dtype null means the
    # module's. torch takes float16/bfloat16 input into a float32 module (cases/dtypes.py).
    dtype: DTYPE_NAMES = "float32"
    input_dtype: Optional[DTYPE_NAMES] = None
    # torch 2.13's keyword-only `bias`: False keeps the weight and drops the bias.
    bias: bool = True
    # LazyBatchNorm{dim}d: num_features is taken from the first input (num_features here says
    # what that input will have, for the load-time checks).
    lazy: bool = False

    @property
    def data_dtype(self) -> str:
        """The dtype of the input arrays (and of the output and input gradient)."""
        return self.input_dtype or self.dtype


class RandomArray(Strict):
    """A seeded array: the same seed gives the same bytes on every machine (see inputs.py)."""

    seed: int = Field(ge=0)
    # A list, a list per dim, or a word: `problem` (the input shape of the case's problem, for a
    # spec that takes `shapes:`) or `channels` (one value per channel: (num_features,)).
    shape: Union[list[int], dict[int, list[int]], Literal["problem", "channels"]]
    distribution: Literal["normal", "uniform", "arange", "constant"] = "normal"
    scale: float = 1.0
    offset: float = 0.0

    @field_validator("shape")
    @classmethod
    def _dims_non_negative(cls, v: Any) -> Any:
        if isinstance(v, str):
            return v
        shapes = v.values() if isinstance(v, dict) else [v]
        for s in shapes:
            if any(d < 0 for d in s):
                raise ValueError("shape entries must be >= 0")
        if isinstance(v, dict) and not set(v) <= {1, 2, 3}:
            raise ValueError("a shape by dim has keys among 1, 2, 3")
        return v


class Generated(Strict):
    random: RandomArray


def _check_literal_array(v: Any) -> Any:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            float(v)
        except OverflowError:
            raise ValueError(f"{v} does not fit a float64") from None
        return v
    if isinstance(v, list):
        try:
            arr = np.asarray(v, dtype=np.float64)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"not a rectangular array of numbers ({exc})") from None
        if arr.dtype == object:
            raise ValueError("not a rectangular array of numbers")
        return v
    raise ValueError("expected a number, a (nested) list of numbers, or {random: {...}}")


def _check_golden(quantity: str, v: Any) -> Any:
    """A golden value: a literal array (or number) whose every element is finite; an integer
    for num_batches_tracked. A NaN or infinite golden is refused: where the semantics make a
    quantity NaN (an empty batch, say), the spec says `oracle`, which compares NaN with NaN."""
    if quantity == "num_batches_tracked":
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"num_batches_tracked is a non-negative integer, not {v!r}")
        return v
    _check_literal_array(v)
    if not np.isfinite(np.asarray(v, dtype=np.float64)).all():
        raise ValueError("a golden value must be finite (NaN or infinity found); write `oracle` where NaN is expected")
    return v


def _validate_source(v: Any) -> Any:
    if isinstance(v, (dict, Generated)):
        return v if isinstance(v, Generated) else Generated.model_validate(v)
    return _check_literal_array(v)


class ErrorExpectation(Strict):
    type: Literal["ValueError", "RuntimeError", "TypeError", "AttributeError", "AssertionError", "IndexError"]
    match: str = ""

    @field_validator("match")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return v


class Expect(Strict):
    """What must hold after a step.

    `values` maps a quantity (QUANTITIES) to a literal (golden: number, nested list, or null
    for None) or the word `oracle`. Written `expect: oracle`, every quantity the step makes
    observable is checked against the oracle.
    """

    values: dict[str, Any] = {}
    all_oracle: bool = False
    state_dict_keys: Optional[list[str]] = None
    error: Optional[ErrorExpectation] = None

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if data == "oracle":
            return {"all_oracle": True}
        if not isinstance(data, dict) or "values" in data or "all_oracle" in data:
            return data
        unknown = [k for k in data if k not in QUANTITIES and k not in ("state_dict_keys", "error")]
        if unknown:
            raise ValueError(f"unknown quantity {unknown}; known: {list(QUANTITIES)}, state_dict_keys, error")
        values = {}
        for k in QUANTITIES:
            if k in data:
                v = data[k]
                if v is None or v == "oracle":
                    values[k] = v
                    continue
                try:
                    values[k] = _check_golden(k, v)
                except ValueError as exc:
                    raise _error_at("Expect", (k,), v, str(exc)) from None
        return {"values": values, "state_dict_keys": data.get("state_dict_keys"), "error": data.get("error")}


class ForwardStep(Strict):
    """One forward call: `input`, or `shards` (a batch split across devices, SyncBatchNorm
    semantics: statistics over their concatenation). `layout` is the memory the backend
    receives (cases/layouts.py); `grad_mode` the autograd mode the call runs under."""

    input: Any = None
    shards: Optional[list[Any]] = None
    layout: Literal["contiguous", "channels_last", "channels_last_3d", "strided"] = "contiguous"
    grad_mode: Literal["enabled", "no_grad", "inference_mode"] = "enabled"

    @field_validator("input")
    @classmethod
    def _source(cls, v: Any) -> Any:
        return None if v is None else _validate_source(v)

    @field_validator("shards")
    @classmethod
    def _shard_sources(cls, v: Optional[list[Any]]) -> Optional[list[Any]]:
        if v is None:
            return v
        if not v:
            raise ValueError("shards needs at least one array")
        return [_validate_source(s) for s in v]

    @model_validator(mode="after")
    def _one_source(self) -> "ForwardStep":
        if (self.input is None) == (self.shards is None):
            raise ValueError("forward takes exactly one of `input` and `shards`")
        if self.shards is not None and self.grad_mode != "enabled":
            raise ValueError("a sharded forward runs with grad_mode enabled (the language has no sharded no_grad)")
        return self


class BackwardStep(Strict):
    grad: Any

    @field_validator("grad")
    @classmethod
    def _source(cls, v: Any) -> Any:
        return _validate_source(v)


class DoubleBackwardStep(Strict):
    """Second order: with g = the input gradient for upstream gradient `grad`, the gradients of
    L = sum(g * probe) w.r.t. the input, the weight and `grad` (gradgrad_input, _weight, _output)."""

    grad: Any
    probe: Any

    @field_validator("grad", "probe")
    @classmethod
    def _source(cls, v: Any) -> Any:
        return _validate_source(v)


class FoldStep(Strict):
    """Fold the (eval-mode) module into the layer before it: a `linear` (weight (C, in)) or a
    stride-1 `conv` of the module's dim (weight (C, in, *k)), with `bias` or none. Observable:
    fused_weight, fused_bias, and with `input`, fused_output (the folded layer applied to it)."""

    layer: Literal["linear", "conv"]
    weight: Any
    bias: Any = None
    input: Any = None

    @field_validator("weight")
    @classmethod
    def _source(cls, v: Any) -> Any:
        return _validate_source(v)

    @field_validator("bias", "input")
    @classmethod
    def _optional(cls, v: Any) -> Any:
        return None if v is None else _validate_source(v)


class SetStep(Strict):
    """Attributes assigned at run time (`momentum: null` sets None)."""

    values: dict[Literal["track_running_stats", "momentum"], Optional[Union[bool, float]]]

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, dict) and "values" not in data:
            if not data:
                raise ValueError("set needs track_running_stats and/or momentum")
            return {"values": data}
        return data


class StateDictStep(Strict):
    save_as: str = "saved"


class LoadStateDictStep(Strict):
    """Load a saved dict (`from`, optionally without some keys) or literal `values`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    from_: Optional[str] = Field(None, alias="from")
    drop: list[str] = []
    values: dict[str, Any] = {}
    strict: bool = True
    # The dict's version metadata (nn.BatchNorm's _version is 2): "current" as state_dict()
    # writes it, an older number, or "none" (a dict without metadata).
    version: Union[Literal["current", "none"], int] = "current"

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        if isinstance(v, bool) or not (v in ("current", "none") or (isinstance(v, int) and v >= 0)):
            raise ValueError(f"version is current, none or a non-negative integer, not {v!r}")
        return v

    @field_validator("values")
    @classmethod
    def _literal(cls, v: dict[str, Any]) -> dict[str, Any]:
        return {k: _check_literal_array(x) for k, x in v.items()}

    @model_validator(mode="after")
    def _one_source(self) -> "LoadStateDictStep":
        if self.from_ is None and not self.values:
            raise ValueError("load_state_dict needs `from` (a saved name) or `values`")
        return self


class RequiresGradStep(Strict):
    weight: Optional[bool] = None
    bias: Optional[bool] = None


class Empty(Strict):
    pass


ACTIONS: dict[str, type[Strict]] = {
    "train": Empty,
    "eval": Empty,
    "set": SetStep,
    "forward": ForwardStep,
    "backward": BackwardStep,
    "double_backward": DoubleBackwardStep,
    "fold": FoldStep,
    "state_dict": StateDictStep,
    "load_state_dict": LoadStateDictStep,
    "reset_running_stats": Empty,
    "reset_parameters": Empty,
    "requires_grad": RequiresGradStep,
    "check": Empty,
}


class Step(Strict):
    """One action on the module, then optional expectations.

    Written as a one-key mapping (`- forward: {...}`), with `expect` and `note` beside the
    action key; a bare word (`- train`) is an action without arguments.
    """

    action: str
    args: Any
    expect: Optional[Expect] = None
    note: str = ""

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {data: None}
        if not isinstance(data, dict):
            raise ValueError("a step is an action name or a mapping with one action key")
        if "action" in data and "args" in data:
            return data
        actions = [k for k in data if k in ACTIONS]
        others = [k for k in data if k not in ACTIONS and k not in ("expect", "note")]
        if others:
            raise ValueError(f"unknown step key(s) {others}; actions are {sorted(ACTIONS)}")
        if len(actions) != 1:
            raise ValueError(f"a step has exactly one action key, got {actions or 'none'}")
        name = actions[0]
        raw = data[name] or {}
        try:
            args = ACTIONS[name].model_validate(raw)
        except ValidationError as exc:  # report it under the action: steps[1].forward.input
            raise _prefixed(exc, name) from None
        return {"action": name, "args": args, "expect": data.get("expect"), "note": data.get("note", "")}


class Tolerance(Strict):
    """|actual - expected| <= atol + per_value * n + rtol * |expected|, n a shaped case's values
    per channel: the error of a float32 sum accumulated one value after another grows with n."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    rtol: float = Field(ge=0)
    atol: float = Field(ge=0)
    per_value: float = Field(default=0.0, ge=0)

    def at(self, values_per_channel: int) -> "Tolerance":
        """This tolerance with its per-value part made absolute for `values_per_channel` values."""
        if not self.per_value:
            return self
        return Tolerance(rtol=self.rtol, atol=self.atol + self.per_value * values_per_channel)


class Spec(Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    description: str
    config: ModuleConfig = ModuleConfig()
    grid: dict[str, list[Any]] = {}
    init: dict[str, Any] = {}
    steps: list[Step] = Field(min_length=1)
    tolerance: dict[DTYPE_NAMES, Tolerance] = {}
    # The tolerance of grad_weight and grad_bias, sums over all of a channel's values (not means):
    # their float32 rounding error grows with the count (`per_value`). Without it, `tolerance`'s.
    sum_tolerance: dict[DTYPE_NAMES, Tolerance] = {}
    requires: list[str] = []
    # Shape batches of the shapes library (cases/shapes.py): one case per problem (and grid
    # point), with dim and num_features set from the problem and `shape: problem` its shape.
    shapes: list[str] = []

    @field_validator("shapes")
    @classmethod
    def _known_batches(cls, v: list[str]) -> list[str]:
        from .shapes import BATCHES

        unknown = [name for name in v if name not in BATCHES]
        if unknown:
            raise ValueError(f"unknown shape batch {unknown}; batches: {', '.join(BATCHES)}")
        return v

    @field_validator("grid")
    @classmethod
    def _grid_keys(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if key not in ModuleConfig.model_fields:
                raise ValueError(f"grid key {key!r} is not a config field ({sorted(ModuleConfig.model_fields)})")
            if not values:
                raise ValueError(f"grid key {key!r} has no values")
        return v

    @field_validator("init")
    @classmethod
    def _init_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        allowed = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
        for key, value in v.items():
            if key not in allowed:
                raise ValueError(f"init key {key!r} is not one of {sorted(allowed)}")
            if key == "num_batches_tracked":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise _error_at("Spec", (key,), value, f"num_batches_tracked is a non-negative integer, not {value!r}")
                continue
            try:
                v[key] = _validate_source(value)
            except ValidationError as exc:
                raise _prefixed(exc, key) from None
            except ValueError as exc:
                raise _error_at("Spec", (key,), value, str(exc)) from None
        return v


# Generous bounds on what one spec file may ask for; a file raises them with `limits:`.
DEFAULT_MAX_ELEMENTS = 10**7  # elements of one array (an input, an upstream gradient, an init value)
DEFAULT_MAX_CASES = 10**4  # cases of one spec after grid expansion


class Limits(Strict):
    """`limits:` at the top of a spec file: raise these when a spec really needs more."""

    max_elements: int = Field(default=DEFAULT_MAX_ELEMENTS, ge=1)
    max_cases: int = Field(default=DEFAULT_MAX_CASES, ge=1)


def grid_size(grid: dict[str, list[Any]]) -> int:
    """The number of cases a grid expands to, counted without expanding it."""
    return math.prod(len(values) for values in grid.values())


class SpecFile(Strict):
    family: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str
    description: str = ""
    # Config values shared by every spec of the file; a spec's own config wins.
    defaults: dict[str, Any] = {}
    # A place for YAML anchors (&name) shared by several specs; not read otherwise.
    anchors: Any = None
    limits: Limits = Limits()
    specs: list[dict[str, Any]] = Field(min_length=1)
