"""The reference implementation itself: torch.nn.BatchNorm{1,2,3}d, on CPU or CUDA."""
from __future__ import annotations

from typing import Any, Optional, cast

import numpy as np

from bnconform.cases.dtypes import DTYPES as DTYPE_NAMES
from bnconform.cases.dtypes import numpy_dtype
from bnconform.cases.layouts import copy_keeping_strides
from bnconform.runners.backends.protocol import Array, BackendUnavailable, Capabilities, ModuleConfig
from bnconform.runners.engine.contract import ContractViolation

FEATURES = frozenset(
    {
        "backward",
        "toggle_track_running_stats",
        "set_momentum",
        "momentum_none",
        "momentum_decay",
        "state_dict",
        "reset",
        "requires_grad",
        "init",
        "errors",
        "untracked",
        "mixed_precision",
        "channels_last",
        "strided",
        "double_backward",
        "grad_modes",
        "shards",
        "fold",
        "lazy",
        "no_bias",
        "state_dict_version",
    }
)
DTYPES = frozenset(DTYPE_NAMES)
_LAZY = {1: "LazyBatchNorm1d", 2: "LazyBatchNorm2d", 3: "LazyBatchNorm3d"}


def to_tensor(torch: Any, a: Array) -> Any:
    """A CPU tensor with `a`'s values, dtype and strides, a sliced view's included (bfloat16
    through its bits: torch reads no ml_dtypes array)."""
    if a.dtype.name == "bfloat16" and a.dtype == numpy_dtype("bfloat16"):
        return torch.from_numpy(copy_keeping_strides(a.view(np.uint16))).view(torch.bfloat16)
    return torch.from_numpy(copy_keeping_strides(a))


def to_numpy(t: Any) -> Optional[Array]:
    """A tensor's values as an array of its dtype, in its layout (copy(order='K') keeps the strides)."""
    if t is None:
        return None
    t = t.detach().cpu()
    import torch

    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(numpy_dtype("bfloat16")).copy(order="K")
    return t.numpy().copy(order="K")


def _value_text(t: Any) -> str:
    """One element as its dtype prints it (1.0, 0.1, nan)."""
    import torch

    v = t.item()
    if t.dtype == torch.float32:
        return str(np.float32(v))
    if t.dtype == torch.float16:
        return str(np.float16(v))
    return repr(float(v))


def _bits(t: Any) -> Any:
    """A float tensor's elements as integers of their width: equality that sees NaN and -0.0."""
    import torch

    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def written(before: Any, after: Any) -> Optional[str]:
    """What was written into `after` (a tensor the module was handed) since `before` (its clone as
    handed), e.g. `12 of 24 elements changed, first at index (0, 1): 1.0 -> 2.0`; None if nothing."""
    import torch

    if after.shape != before.shape or after.dtype != before.dtype:
        return f"it changed from {tuple(before.shape)} {before.dtype} to {tuple(after.shape)} {after.dtype}"
    with torch.no_grad():
        a, b = _bits(before.detach()), _bits(after.detach())
        if torch.equal(a, b):
            return None
        changed = a != b
        first = tuple(int(i) for i in changed.nonzero()[0])
        return (f"{int(changed.sum())} of {changed.numel()} elements changed, first at index {first}: "
                f"{_value_text(before[first])} -> {_value_text(after.detach()[first])}")


class HandedTensors:
    """The tensors an adapter hands a torch module (the input, grad_output, the probe, the shards,
    a state dict's values), each with one clone taken as handed. A module may read them, never
    write into them: `check()` after every call compares each with its clone, so a write during
    the call, or during a later one (forward's input kept and written in backward), fails the
    cell with a ContractViolation saying what was written. (The worker checks the NumPy arrays a
    backend is given; the adapter's tensors are copies of those, so only this sees the module.)"""

    def __init__(self) -> None:
        self.held: list[tuple[str, str, Any, Any]] = []

    def hand(self, what: str, method: str, t: Any) -> Any:
        """Keep `t` (handed to the module by `method`) and a clone of it as handed; return `t`."""
        self.held.append((what, method, t, t.detach().clone()))
        return t

    def check(self, during: str) -> None:
        for what, method, t, before in self.held:
            change = written(before, t)
            if change is None:
                continue
            if method == during:
                raise ContractViolation(f"{method}() wrote into the {what} it was handed: {change}")
            raise ContractViolation(f"{during}() wrote into the {what} that {method}() had handed the module: {change}")


def _checked(method: Any) -> Any:
    """Run a TorchModule method, then check that no handed tensor was written into (also when the
    call raised: a write is reported before whatever the module raised after it)."""
    import functools

    name = method.__name__

    @functools.wraps(method)
    def call(self: "TorchModule", *args: Any, **kwargs: Any) -> Any:
        try:
            result = method(self, *args, **kwargs)
        except ContractViolation:
            raise
        except Exception:
            self.handed.check(name)
            raise
        self.handed.check(name)
        return result

    return call


class TorchModule:
    """The protocol over any torch module that behaves like nn.BatchNorm{dim}d."""

    def __init__(self, config: ModuleConfig, device: str, factory: Optional[Any] = None) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.dtype = getattr(torch, config.dtype)
        self.decay = config.momentum_convention == "decay"
        kwargs: dict[str, Any] = dict(
            eps=config.eps,
            momentum=self._torch_momentum(config.momentum),
            affine=config.affine,
            track_running_stats=config.track_running_stats,
        )
        if not config.bias:
            kwargs["bias"] = False  # keyword-only since torch 2.x; left out by default for older factories
        if factory is None and config.lazy:
            module = getattr(torch.nn, _LAZY[config.dim])(**kwargs)
        elif factory is None:
            cls = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}[config.dim]
            module = cls(config.num_features, **kwargs)
        elif isinstance(factory, type):  # a BatchNorm class of one dimension
            module = factory(config.num_features, **kwargs)
        else:
            module = factory(config.num_features, dim=config.dim, **kwargs)
        self.m = module.to(device=device, dtype=self.dtype)
        self.handed = HandedTensors()  # what the module is given, checked after every call
        self._x: Any = None
        self._y: Any = None

    def _tensor(self, a: Array) -> Any:
        """The array as a tensor of its own dtype and strides on the device."""
        return to_tensor(self.torch, a).to(device=self.device)

    @staticmethod
    def _numpy(t: Any) -> Optional[Array]:
        return to_numpy(t)

    def _call(self, x: Any) -> Any:
        """The module applied to a tensor: every forward goes through here (a compiler column
        replaces it with the compiled module: runners/backends/torch_compilers.py)."""
        return self.m(x)

    @_checked
    def train(self) -> None:
        self.m.train()

    @_checked
    def eval(self) -> None:
        self.m.eval()

    def _torch_momentum(self, m: Optional[float]) -> Optional[float]:
        """A decay-convention momentum (weight of the old value) as torch's 1 - m."""
        if m is None or not self.decay:
            return m
        return 1.0 - m

    @_checked
    def set_attribute(self, name: str, value: object) -> None:
        if name == "momentum":
            value = self._torch_momentum(cast(Optional[float], value))  # a SetStep momentum
        setattr(self.m, name, value)

    @_checked
    def forward(self, x: Array) -> Array:
        self._x = self.handed.hand("input tensor", "forward", self._tensor(x).requires_grad_(True))
        self._y = self._call(self._x)
        return cast(Array, self._numpy(self._y))  # the module's output tensor

    @_checked
    def forward_with_grad_mode(self, x: Array, mode: str) -> Array:
        context = self.torch.no_grad() if mode == "no_grad" else self.torch.inference_mode()
        with context:
            self._x = self.handed.hand("input tensor", "forward_with_grad_mode", self._tensor(x))
            self._y = self._call(self._x)
            return cast(Array, self._numpy(self._y))

    @_checked
    def forward_shards(self, shards: list[Array]) -> list[Array]:
        """torch's semantics of a sharded batch: BatchNorm over the concatenation."""
        x = self.handed.hand(f"input tensor (its {len(shards)} shards concatenated)", "forward_shards",
                             self.torch.cat([self._tensor(s) for s in shards]))
        y = self._call(x)
        self._y = None
        return [cast(Array, self._numpy(part)) for part in self.torch.split(y, [s.shape[0] for s in shards])]

    @_checked
    def backward(self, grad_output: Array) -> dict[str, Optional[Array]]:
        for p in (self.m.weight, self.m.bias):
            if p is not None:
                p.grad = None
        self._y.backward(self.handed.hand("grad_output tensor", "backward", self._tensor(grad_output)))
        grads = {
            "input": self._numpy(self._x.grad),
            "weight": self._numpy(None if self.m.weight is None else self.m.weight.grad),
            "bias": self._numpy(None if self.m.bias is None else self.m.bias.grad),
        }
        self._y = None
        return grads

    @_checked
    def double_backward(self, grad_output: Array, probe: Array) -> dict[str, Optional[Array]]:
        """Gradients of sum(dx * probe), dx = d<y, grad_output>/dx, w.r.t. x, weight and grad_output."""
        torch = self.torch
        dy = self.handed.hand("grad_output tensor", "double_backward", self._tensor(grad_output).requires_grad_(True))
        weight = self.m.weight if self.m.weight is not None and self.m.weight.requires_grad else None
        (dx,) = torch.autograd.grad(self._y, self._x, dy, create_graph=True)
        loss = (dx * self.handed.hand("probe tensor", "double_backward", self._tensor(probe))).sum()
        wrt = [self._x, dy] + ([weight] if weight is not None else [])
        grads = torch.autograd.grad(loss, wrt, allow_unused=True, materialize_grads=True)
        self._y = None
        return {"input": self._numpy(grads[0]), "output": self._numpy(grads[1]),
                "weight": self._numpy(grads[2]) if weight is not None else None}

    @_checked
    def fold(self, layer: str, weight: Array, bias: Optional[Array]) -> tuple[Array, Array]:
        """torch.nn.utils.fusion's fuse_{linear,conv}_bn_eval on a layer holding `weight` and `bias`."""
        torch = self.torch
        from torch.nn.utils import fusion

        out_c, in_c = weight.shape[:2]
        if layer == "linear":
            lin = torch.nn.Linear(in_c, out_c, bias=bias is not None)
        else:
            dim = weight.ndim - 2
            lin = getattr(torch.nn, f"Conv{dim}d")(in_c, out_c, weight.shape[2:], bias=bias is not None)
        lin = lin.to(device=self.device, dtype=self.dtype).eval()
        with torch.no_grad():
            lin.weight.copy_(self._tensor(weight))
            if bias is not None:
                lin.bias.copy_(self._tensor(bias))
        fused = (fusion.fuse_linear_bn_eval if layer == "linear" else fusion.fuse_conv_bn_eval)(lin, self.m)
        return cast(Array, self._numpy(fused.weight)), cast(Array, self._numpy(fused.bias))

    @_checked
    def get(self, name: str) -> Optional[Array | int]:
        t = getattr(self.m, name)
        if t is None:
            return None
        if name == "num_batches_tracked":
            return int(t.item())
        return self._numpy(t)

    @_checked
    def assign(self, name: str, value: Array | int) -> None:
        with self.torch.no_grad():
            target = getattr(self.m, name)
            source = self._tensor(np.asarray(value)) if not isinstance(value, int) else self.torch.tensor(value)
            target.copy_(source)

    @_checked
    def state_dict(self) -> dict[str, Array]:
        return {k: cast(Array, self._numpy(v)) for k, v in self.m.state_dict().items()}

    @_checked
    def load_state_dict(self, state: dict[str, Array], strict: bool = True, version: object = "current") -> None:
        """`version`: "current" (nn.BatchNorm's _version), an older number, or "none" (no metadata)."""
        from collections import OrderedDict

        sd = OrderedDict((k, self.handed.hand(f"state dict's {k!r} tensor", "load_state_dict", self._tensor(np.asarray(v))))
                         for k, v in state.items())
        # Protocol dicts are current-version ones unless said otherwise: without this metadata
        # torch takes the dict for a pre-num_batches_tracked one and fills the missing counter in.
        if version != "none":
            number = type(self.m)._version if version == "current" else version
            sd._metadata = OrderedDict({"": {"version": number}})  # type: ignore[attr-defined]
        self.m.load_state_dict(sd, strict=strict)

    @_checked
    def reset_running_stats(self) -> None:
        self.m.reset_running_stats()

    @_checked
    def reset_parameters(self) -> None:
        self.m.reset_parameters()

    @_checked
    def set_requires_grad(self, name: str, flag: bool) -> None:
        getattr(self.m, name).requires_grad_(flag)


class TorchBackend:
    """torch.nn.BatchNorm on `device` ("cpu" or "cuda")."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.name = "torch" if device == "cpu" else f"torch-{device}"
        self.capabilities = Capabilities(dtypes=DTYPES, features=FEATURES)

    def version(self) -> str:
        try:
            import torch
        except ImportError:
            return "not installed"
        return torch.__version__

    def available(self) -> Optional[str]:
        """None when usable here, else the reason it is not."""
        from bnconform.runners.backends import TORCH_MISSING

        try:
            import torch
        except ImportError:
            return TORCH_MISSING
        if self.device == "cuda" and not torch.cuda.is_available():
            return "CUDA is not available on this machine"
        return None

    def create(self, config: ModuleConfig) -> TorchModule:
        reason = self.available()
        if reason:
            raise BackendUnavailable(reason)
        return TorchModule(config, self.device)
