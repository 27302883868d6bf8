"""What can be checked of a case without a backend, at load time.

The schema (schema.py) checks each spec on its own; a case also has a config (its grid point),
and with it every array's shape is known: the input of each forward, the upstream gradient of
each backward, the init values, and the shape each golden must have. `check_case` walks the
steps once, tracking only what the shapes depend on (mode, tracking flag, the last forward's
input), and raises CaseProblem with the key path of the first mistake. Whatever would make the
reference itself refuse a step is left to a step that says it expects an error.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from .layouts import RANK_OF
from .model import Case
from .oracle import RANKS
from .schema import Generated, Limits, Step

AFFINE = ("weight", "bias")
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
RANK_NAMES = {1: "(N, C) or (N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}

Shape = tuple[int, ...]


class CaseProblem(Exception):
    """A mistake in a case: `key` is its path in the spec (`steps[2].forward.input`)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _fmt(shape: Shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def source_shape(source: Any, dim: int, key: str, limits: Limits) -> Shape:
    """The shape an array source has in a case of `dim`; CaseProblem if it has none or is too big."""
    if isinstance(source, Generated):
        shape_spec = source.random.shape
        if isinstance(shape_spec, dict):
            if dim not in shape_spec:
                raise CaseProblem(f"{key}.random.shape", f"no shape for dim={dim} (shapes are given for dim "
                                                         f"{', '.join(str(d) for d in sorted(shape_spec))})")
            shape = tuple(shape_spec[dim])
            where = f"{key}.random.shape.{dim}"
        elif isinstance(shape_spec, str):  # loader._shaped makes it concrete before any check
            raise CaseProblem(f"{key}.random.shape", f"shape {shape_spec!r} was not made concrete")
        else:
            shape = tuple(shape_spec)
            where = f"{key}.random.shape"
        count = math.prod(shape)
    else:
        shape = tuple(np.shape(source))
        count = math.prod(shape)
        where = key
    if count > limits.max_elements:
        raise CaseProblem(where, f"{count} elements, more than the limit of {limits.max_elements} per array "
                                 "(a spec file raises it with `limits: {max_elements: N}`)")
    return shape


def _per_channel(shape: Shape, c: int, key: str, what: str) -> None:
    if shape != (c,):
        raise CaseProblem(key, f"{what} has shape {_fmt(shape)}; it is one value per channel, "
                               f"shape ({c},) for num_features={c}")


def _check_init(case: Case, limits: Limits) -> None:
    cfg = case.config
    if cfg.lazy and case.init:
        raise CaseProblem("init", "a lazy module has no parameters or buffers to set before its first forward")
    for name, source in case.init.items():
        key = f"init.{name}"
        if name in AFFINE and not cfg.affine:
            raise CaseProblem(key, f"sets {name}, which a module with affine=False does not have")
        if name == "bias" and not cfg.bias:
            raise CaseProblem(key, "sets bias, which a module built with bias=False does not have")
        if name in BUFFERS and not cfg.track_running_stats:
            raise CaseProblem(key, f"sets {name}, which a module with track_running_stats=False does not have")
        if name == "num_batches_tracked":
            continue  # a non-negative integer (schema.py)
        _per_channel(source_shape(source, cfg.dim, key, limits), cfg.num_features, key, f"init {name}")


class _Walk:
    """What the shapes of a case depend on, step by step, as the reference would see it."""

    def __init__(self, case: Case, limits: Limits) -> None:
        cfg = case.config
        self.case, self.limits = case, limits
        self.dim, self.c = cfg.dim, cfg.num_features
        self.training = cfg.training
        self.tracking = cfg.track_running_stats  # the flag, which `set` can flip
        self.has_buffers = cfg.track_running_stats  # the buffers exist from construction on, or never
        self.saved: Optional[tuple[Shape, int]] = None  # the input (and its step) a backward goes through
        self.observable: dict[str, Shape] = {}  # output and grads the last forward/backward made observable
        self.saved_names: set[str] = set()

    def step(self, index: int, step: Step) -> None:
        expects_error = step.expect is not None and step.expect.error is not None
        act, args, key = step.action, step.args, f"steps[{index}].{step.action}"
        if act == "train":
            self.training = True
        elif act == "eval":
            self.training = False
        elif act == "set":
            if "track_running_stats" in args.values:
                self.tracking = bool(args.values["track_running_stats"])
        elif act == "forward":
            if args.shards is not None:
                self._shards(index, args, key, expects_error)
            else:
                self._forward(index, args.input, f"{key}.input", expects_error, args.layout, args.grad_mode)
        elif act == "backward":
            self._backward(args.grad, f"{key}.grad", expects_error)
        elif act == "double_backward":
            self._double_backward(args, key, expects_error)
        elif act == "fold":
            self._fold(args, key, expects_error)
        elif act == "state_dict":
            self.saved_names.add(args.save_as)
        elif act == "load_state_dict":
            self._load(args, key, expects_error)
        if step.expect is not None and not expects_error:
            self._expect(index, step)

    def _forward(self, index: int, source: Any, key: str, expects_error: bool, layout: str = "contiguous",
                 grad_mode: str = "enabled") -> None:
        shape = source_shape(source, self.dim, key, self.limits)
        self.observable = {}  # a forward clears what the last one showed, even when it raises
        self.saved = None
        wanted_rank = RANK_OF.get(layout)
        if wanted_rank is not None and len(shape) != wanted_rank:
            raise CaseProblem(key.rsplit(".", 1)[0] + ".layout",
                              f"layout {layout} is for {wanted_rank}-D input; this input is {len(shape)}-D")
        if layout == "strided" and not shape:
            raise CaseProblem(key.rsplit(".", 1)[0] + ".layout", "a 0-D input has no strided layout")
        if expects_error:  # error specs feed wrong shapes on purpose
            return
        if len(shape) not in RANKS[self.dim]:
            raise CaseProblem(key, f"shape {_fmt(shape)} is {len(shape)}-D; BatchNorm{self.dim}d takes "
                                   f"{RANK_NAMES[self.dim]} (or say the step expects an error)")
        # The channel count is checked against the weight, or the buffers when they are used.
        checked = self.case.config.affine or (self.has_buffers and (not self.training or self.tracking))
        if checked and shape[1] != self.c and math.prod(shape) > 0:  # an empty input is not checked (semantics.md)
            raise CaseProblem(key, f"shape {_fmt(shape)} has C={shape[1]}, not num_features={self.c} "
                                   "(or say the step expects an error)")
        self.saved = (shape, index) if grad_mode == "enabled" else None  # no graph under no_grad
        self.observable = {"output": shape}

    def _shards(self, index: int, args: Any, key: str, expects_error: bool) -> None:
        shapes = [source_shape(s, self.dim, f"{key}.shards[{i}]", self.limits) for i, s in enumerate(args.shards)]
        for i, shape in enumerate(shapes):
            self._forward(index, args.shards[i], f"{key}.shards[{i}]", expects_error, args.layout)
            if not expects_error and shape[1:] != shapes[0][1:]:
                raise CaseProblem(f"{key}.shards[{i}]", f"shape {_fmt(shape)} differs from shards[0]'s "
                                                        f"{_fmt(shapes[0])} beyond the batch axis")
        self.saved = None  # a backward through shards is not part of the language
        self.observable = {} if expects_error else {"output": (sum(s[0] for s in shapes),) + shapes[0][1:]}

    def _double_backward(self, args: Any, key: str, expects_error: bool) -> None:
        shapes = [source_shape(getattr(args, k), self.dim, f"{key}.{k}", self.limits) for k in ("grad", "probe")]
        if expects_error:
            return
        if self.saved is None:
            raise CaseProblem(f"{key}.grad", "no forward (with a graph) before this double_backward")
        for k, shape in zip(("grad", "probe"), shapes):
            if shape != self.saved[0]:
                raise CaseProblem(f"{key}.{k}", f"shape {_fmt(shape)} is not the input's shape {_fmt(self.saved[0])}")
        self.observable.update({"gradgrad_input": self.saved[0], "gradgrad_weight": (self.c,),
                                "gradgrad_output": self.saved[0]})
        self.saved = None

    def _fold(self, args: Any, key: str, expects_error: bool) -> None:
        w = source_shape(args.weight, self.dim, f"{key}.weight", self.limits)
        if expects_error:
            return
        want_rank = 2 if args.layer == "linear" else self.dim + 2
        if len(w) != want_rank or w[0] != self.c:
            raise CaseProblem(f"{key}.weight", f"shape {_fmt(w)}: a {args.layer} weight before BatchNorm{self.dim}d is "
                                               f"{want_rank}-D with num_features={self.c} output channels first")
        if args.bias is not None:
            _per_channel(source_shape(args.bias, self.dim, f"{key}.bias", self.limits), self.c, f"{key}.bias", "bias")
        self.observable.update({"fused_weight": w, "fused_bias": (self.c,)})
        if args.input is not None:
            x = source_shape(args.input, self.dim, f"{key}.input", self.limits)
            if len(x) != want_rank or x[1] != w[1] or (args.layer == "conv" and any(
                    a < k for a, k in zip(x[2:], w[2:]))):
                raise CaseProblem(f"{key}.input", f"shape {_fmt(x)} does not fit the {args.layer} weight {_fmt(w)}")
            out = (x[0], self.c) + tuple(a - k + 1 for a, k in zip(x[2:], w[2:]))
            self.observable["fused_output"] = out

    def _backward(self, source: Any, key: str, expects_error: bool) -> None:
        shape = source_shape(source, self.dim, key, self.limits)
        if expects_error:
            return
        if self.saved is None:
            raise CaseProblem(key, "no forward before this backward (one backward per forward; or say the step "
                                   "expects an error)")
        forward_shape, forward_index = self.saved
        if shape != forward_shape:
            raise CaseProblem(key, f"shape {_fmt(shape)} is not the shape of the output it flows back through, "
                                   f"{_fmt(forward_shape)} (the input of steps[{forward_index}])")
        self.saved = None
        self.observable.update({"grad_input": forward_shape, "grad_weight": (self.c,), "grad_bias": (self.c,)})

    def _load(self, args: Any, key: str, expects_error: bool) -> None:
        if args.from_ is not None and args.from_ not in self.saved_names:
            raise CaseProblem(f"{key}.from", f"no state_dict step before this one saves {args.from_!r}")
        if expects_error:
            return
        for name, value in args.values.items():
            where = f"{key}.values.{name}"
            if name == "num_batches_tracked":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise CaseProblem(where, f"num_batches_tracked is a non-negative integer, not {value!r}")
            elif (name in AFFINE and self.case.config.affine) or (name in BUFFERS and self.has_buffers):
                _per_channel(source_shape(value, self.dim, where, self.limits), self.c, where, name)

    def _expect(self, index: int, step: Step) -> None:
        assert step.expect is not None
        for quantity, value in step.expect.values.items():
            key = f"steps[{index}].expect.{quantity}"
            if quantity == "output" or quantity.startswith(("grad_", "gradgrad_", "fused_")):
                if quantity not in self.observable:
                    made_by = {"o": "a forward", "g": "a backward after the last forward", "f": "a fold"}[quantity[0]]
                    if quantity.startswith("gradgrad_"):
                        made_by = "a double_backward after the last forward"
                    raise CaseProblem(key, f"expects {quantity}, but no step before it makes it observable ({made_by})")
            if value is None or isinstance(value, str) or quantity == "num_batches_tracked":
                continue  # oracle, None, or an integer (schema.py)
            shape = tuple(np.shape(value))
            if quantity in self.observable and quantity not in ("grad_weight", "grad_bias", "gradgrad_weight"):
                want, what = self.observable[quantity], "its shape at this step"
            else:
                want, what = (self.c,), f"one value per channel, num_features={self.c}"
            if shape != want:
                raise CaseProblem(key, f"golden has shape {_fmt(shape)}, but {quantity} has shape {_fmt(want)} ({what})")


def check_case(case: Case, limits: Limits) -> None:
    """Raise CaseProblem for the first thing in `case` that cannot work, whatever the backend."""
    _check_init(case, limits)
    walk = _Walk(case, limits)
    for index, step in enumerate(case.steps):
        walk.step(index, step)
