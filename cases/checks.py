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
    for name, source in case.init.items():
        key = f"init.{name}"
        if name in AFFINE and not cfg.affine:
            raise CaseProblem(key, f"sets {name}, which a module with affine=False does not have")
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
            self._forward(index, args.input, f"{key}.input", expects_error)
        elif act == "backward":
            self._backward(args.grad, f"{key}.grad", expects_error)
        elif act == "state_dict":
            self.saved_names.add(args.save_as)
        elif act == "load_state_dict":
            self._load(args, key, expects_error)
        if step.expect is not None and not expects_error:
            self._expect(index, step)

    def _forward(self, index: int, source: Any, key: str, expects_error: bool) -> None:
        shape = source_shape(source, self.dim, key, self.limits)
        self.observable = {}  # a forward clears what the last one showed, even when it raises
        if expects_error:  # error specs feed wrong shapes on purpose
            return
        if len(shape) not in RANKS[self.dim]:
            raise CaseProblem(key, f"shape {_fmt(shape)} is {len(shape)}-D; BatchNorm{self.dim}d takes "
                                   f"{RANK_NAMES[self.dim]} (or say the step expects an error)")
        # The channel count is checked against the weight, or the buffers when they are used.
        checked = self.case.config.affine or (self.has_buffers and (not self.training or self.tracking))
        if checked and shape[1] != self.c:
            raise CaseProblem(key, f"shape {_fmt(shape)} has C={shape[1]}, not num_features={self.c} "
                                   "(or say the step expects an error)")
        self.saved = (shape, index)
        self.observable = {"output": shape}

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
            if quantity == "output" or quantity.startswith("grad_"):
                if quantity not in self.observable:
                    made_by = "a forward" if quantity == "output" else "a backward after the last forward"
                    raise CaseProblem(key, f"expects {quantity}, but no step before it makes it observable ({made_by})")
            if value is None or isinstance(value, str) or quantity == "num_batches_tracked":
                continue  # oracle, None, or an integer (schema.py)
            shape = tuple(np.shape(value))
            if quantity in ("output", "grad_input"):
                want, what = self.observable[quantity], "the input's shape at this step"
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
