"""Adapters for real, independently written BatchNorm implementations (optional packages).

Each is skipped, with the reason, when its package is missing; each declares its conventions
from its framework's own documentation and source, cited in its docstring.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from bnconform.runners.backends.kernel_module import KernelModule, kernel_capabilities
from bnconform.runners.backends.protocol import Capabilities, ModuleConfig

MANIFESTS = Path(__file__).parent / "manifests"
# What KernelModule itself would do for an operator adapter, rather than the operator: left
# undeclared (each skipped with this reason) so that a pass there credits the framework's kernel.
KERNEL_MODULE_ONLY = {
    "strided": "KernelModule copies strided input to a contiguous array before the operator sees it",
    "fold": "folding is KernelModule's NumPy arithmetic, not the framework's",
    "grad_modes": "no_grad/inference_mode are KernelModule's bookkeeping, not the framework's",
}


def operator_capabilities(backward: bool, dtypes: frozenset[str], shards: bool = False,
                          without: Mapping[str, str] = KERNEL_MODULE_ONLY) -> Capabilities:
    """Capabilities of a framework operator run as a kernel under KernelModule: KernelModule's,
    but those in `without` (feature -> why not), whose cells are skipped with that reason."""
    caps = kernel_capabilities(backward=backward, dtypes=dtypes, shards=shards)
    return Capabilities(dims=caps.dims, dtypes=caps.dtypes, features=caps.features - set(without),
                        reasons={**caps.reasons, **without})


class FrameworkBackend:
    """What every adapter shares: its shipped manifest, and an import probe as skip reason.

    Subclasses set `name` (also the manifest's file name), `conventions`, `capabilities`,
    `install_hint`, and `probe` (imports the framework, raising when it cannot).
    """

    name: str
    install_hint: str
    probe: Callable[[], Any]

    @property
    def manifest(self) -> str:
        """What bnconform found beyond the declared conventions, each entry with its evidence."""
        return str(MANIFESTS / f"{self.name}.yaml")

    def available(self) -> Optional[str]:
        try:
            type(self).probe()
        except Exception as exc:
            return f"{self.name} is not importable ({type(exc).__name__}: {exc}); {self.install_hint}"
        return None


class OperatorBackend(FrameworkBackend):
    """A framework's BatchNorm operator run as a kernel under KernelModule (ONNX Runtime,
    TensorFlow): one kernel object per backend, built at the first module (the framework is
    imported only then), and torch's one-value check only where the profile declares it."""

    kernel_type: Callable[[], Any]
    _kernel: Any = None

    def create(self, config: ModuleConfig) -> KernelModule:
        if self._kernel is None:
            self._kernel = type(self).kernel_type()
        module = KernelModule(config, self._kernel)
        module.raises_on_single_value = self.conventions.one_value_raises  # type: ignore[attr-defined]
        return module


class FrameworkModule:
    """What the module side of every adapter shares: the train/eval flag, read at call time, and
    the protocol's methods for what these frameworks do not have (their capabilities do not
    declare them, so no case calls them; a call says so)."""

    training = True

    def train(self) -> None:
        self.training = True

    def eval(self) -> None:
        self.training = False

    def _undeclared(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} has no {what} (the capability is not declared)")

    def state_dict(self) -> dict:
        raise self._undeclared("state_dict")

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        raise self._undeclared("load_state_dict")

    def reset_running_stats(self) -> None:
        raise self._undeclared("reset_running_stats")

    def reset_parameters(self) -> None:
        raise self._undeclared("reset_parameters")

    def set_requires_grad(self, name: str, flag: bool) -> None:
        raise self._undeclared("set_requires_grad")

    # Parameters and buffers by torch's names: a subclass maps a name to its framework's variable
    # (`_variable`, None when absent) and reads and writes one (`_read`, `_write`); `config` is
    # the module's ModuleConfig. No framework here keeps a batch counter.
    config: Any

    def _variable(self, name: str) -> Any:
        raise self._undeclared(name)

    def _read(self, var: Any) -> np.ndarray:
        raise NotImplementedError

    def _write(self, var: Any, value: np.ndarray) -> None:
        raise NotImplementedError

    def get(self, name: str) -> Optional[np.ndarray | int]:
        if name == "num_batches_tracked":
            return None
        var = self._variable(name)
        return None if var is None else np.array(self._read(var))

    def assign(self, name: str, value: np.ndarray | int) -> None:
        var = self._variable(name)
        if var is None:
            raise AttributeError(f"{name} is None")
        self._write(var, np.asarray(value, dtype=self.config.dtype).reshape(var.shape))


class LayerModule(FrameworkModule):
    """A framework module holding a layer object with train()/eval() of its own (Paddle, MLX):
    the mode is set on both."""

    layer: Any

    def train(self) -> None:
        super().train()
        self.layer.train()

    def eval(self) -> None:
        super().eval()
        self.layer.eval()


def jax_and(module: str) -> tuple[Any, Any]:
    """JAX with float64 on (jax_enable_x64: the float64 cases need it), and a JAX library imported
    after that switch (its module object: Equinox and Haiku have no type stubs)."""
    import importlib

    import jax

    jax.config.update("jax_enable_x64", True)
    return jax, importlib.import_module(module)


class JaxGradients:
    """backward and double_backward as `jax.vjp` of the last forward, for the JAX adapters
    (Equinox, Haiku): a subclass gives `_function()`, the last forward as a function of
    (x, weight, bias) from the state it started with, and its primals."""

    jax: Any
    dtype: np.dtype
    config: Any

    def _function(self) -> tuple[Callable, list]:
        raise NotImplementedError

    def backward(self, grad_output: np.ndarray) -> dict[str, Optional[np.ndarray]]:
        f, primals = self._function()
        _, vjp = self.jax.vjp(f, *primals)
        grads = vjp(np.asarray(grad_output, self.dtype))
        out = {"input": np.array(grads[0]), "weight": None, "bias": None}
        if self.config.affine:
            out["weight"], out["bias"] = np.array(grads[1]), np.array(grads[2])
        return out

    def double_backward(self, grad_output: np.ndarray, probe: np.ndarray) -> dict[str, Optional[np.ndarray]]:
        """Gradients of sum(dx * probe), dx the input gradient for grad_output, w.r.t. x, weight, grad_output."""
        f, primals = self._function()
        jnp = self.jax.numpy
        probe = jnp.asarray(probe, self.dtype)

        def loss(dy: Any, *args: Any) -> Any:
            _, vjp = self.jax.vjp(f, *args)
            return jnp.sum(vjp(dy)[0] * probe)

        grads = self.jax.grad(loss, argnums=tuple(range(len(primals) + 1)))(jnp.asarray(grad_output, self.dtype),
                                                                             *primals)
        return {"input": np.array(grads[1]), "output": np.array(grads[0]),
                "weight": np.array(grads[2]) if self.config.affine else None}
