"""Reproduce a bnconform fuzz finding with only the backend and NumPy.

The module is built with the backend named below (as `bnconform --backend` resolves it: a
built-in name, `mutant:NAME`, `torch-module:pkg.module:factory` or `pkg.module:attr`) and driven
through the module protocol of bnconform's docs/backends.md, step by step. The inputs are
regenerated here with the same PCG64 raw-stream code as bnconform's cases/inputs.py (the same
bytes on every machine); the expected values are the float64 oracle's, stored in the .npz file
beside this script, with the tolerance the spec uses. It prints what differs and exits 1, or
exits 0 when the backend now matches on every step.

    python SCRIPT.py [--backend NAME]

(The template bnconform fuzz copies: the block between the FINDING markers is replaced by the
finding's data, and this paragraph left out.)
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

# -- FINDING ---------------------------------------------------------------------------------
BACKEND = "numpy"
CONFIG: dict[str, Any] = {"dim": 1, "num_features": 2}
INIT: dict[str, Any] = {}
STEPS: list[dict[str, Any]] = []
EXPECTED = "expected.npz"
# -- END OF FINDING --------------------------------------------------------------------------

BUILTIN = {
    "torch": "bnconform.runners.backends.torch_backend:TorchBackend",
    "numpy": "bnconform.runners.backends.numpy_backend:NumpyBackend",
    "cffi": "bnconform.runners.backends.cffi_backend:CffiBackend",
    "onnxruntime": "bnconform.runners.backends.frameworks.onnxruntime_backend:OnnxRuntimeBackend",
    "keras": "bnconform.runners.backends.frameworks.keras_backend:KerasBackend",
    "keras-tf": "bnconform.runners.backends.frameworks.keras_backend:KerasTfBackend",
    "tensorflow": "bnconform.runners.backends.frameworks.tensorflow_backend:TensorFlowBackend",
    "flax": "bnconform.runners.backends.frameworks.flax_backend:FlaxBackend",
    "tinygrad": "bnconform.runners.backends.frameworks.tinygrad_backend:TinygradBackend",
    "paddle": "bnconform.runners.backends.frameworks.paddle_backend:PaddleBackend",
}
MUTANTS = "bnconform.runners.backends.mutants"
CONFIG_DEFAULTS: dict[str, Any] = {"dim": 2, "num_features": 3, "eps": 1e-5, "momentum": 0.1,
                                   "momentum_convention": "torch", "affine": True, "track_running_stats": True,
                                   "training": True, "dtype": "float32", "input_dtype": None, "bias": True,
                                   "lazy": False}


def load_backend(target: str) -> Any:
    """The backend object `target` names (ALIAS=TARGET: the target)."""
    alias, sep, rest = target.partition("=")
    if sep and alias and ":" not in alias:
        target = rest
    if target.startswith("torch-module:"):
        module = importlib.import_module("bnconform.runners.backends.torch_module")
        return module.TorchModuleBackend(target.removeprefix("torch-module:"))
    if target.startswith("mutant:"):
        target = f"{MUTANTS}:{target.removeprefix('mutant:')}"
    target = BUILTIN.get(target, target)
    if ":" not in target:  # a plugin registered under the bnconform.backends entry point
        from importlib.metadata import entry_points

        target = {ep.name: ep.value for ep in entry_points(group="bnconform.backends")}[target]
    module_name, _, attr = target.partition(":")
    obj = getattr(importlib.import_module(module_name), attr)
    return obj() if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "create")) else obj


def numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes  # bfloat16 as a NumPy dtype, as bnconform passes it

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def uniform01(seed: int, count: int) -> np.ndarray:
    """`count` float64 values in [0, 1), each k / 2**53 exactly (PCG64's raw stream)."""
    raw = np.random.PCG64(seed).random_raw(count)
    return (np.asarray(raw, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) / float(2**53)


def generate(spec: dict[str, Any]) -> np.ndarray:
    """A {random: ...} source as float64: normal is the Irwin-Hall sum of 12 uniforms minus 6."""
    shape = tuple(spec["shape"])
    count = int(np.prod(shape, dtype=np.int64))
    distribution = spec.get("distribution", "normal")
    if distribution == "normal":
        u = uniform01(spec["seed"], 12 * count).reshape(count, 12)
        base = u[:, 0].copy()
        for k in range(1, 12):  # fixed order: the same rounding everywhere
            base += u[:, k]
        base -= 6.0
    elif distribution == "uniform":
        base = uniform01(spec["seed"], count)
    elif distribution == "arange":
        base = np.arange(count, dtype=np.float64)
    else:  # constant
        base = np.ones(count, dtype=np.float64)
    return (base * spec.get("scale", 1.0) + spec.get("offset", 0.0)).reshape(shape)


def arrange(a: np.ndarray, layout: str) -> np.ndarray:
    """`a`'s values in the memory layout a spec names (channels_last: C innermost; strided: every
    other element of a buffer twice as long in the last axis, the rest NaN)."""
    if layout == "contiguous":
        return a.copy(order="C")
    if layout in ("channels_last", "channels_last_3d"):
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, -1)), -1, 1)
    wide = np.full(a.shape[:-1] + (2 * a.shape[-1],), np.nan, dtype=a.dtype)
    view = wide[..., ::2]
    view[...] = a
    return view


def array(source: Any, dtype: str, layout: str = "contiguous") -> np.ndarray:
    values = generate(source["random"]) if isinstance(source, dict) else np.asarray(source, dtype=np.float64)
    return arrange(values.astype(numpy_dtype(dtype)), layout)


def make_config(values: dict[str, Any]) -> Any:
    """The ModuleConfig a backend's create() takes (bnconform's, or a stand-in with its fields)."""
    try:
        from bnconform import ModuleConfig

        return ModuleConfig(**values)
    except ImportError:
        import types

        full = {**CONFIG_DEFAULTS, **values}
        full["data_dtype"] = full["input_dtype"] or full["dtype"]
        return types.SimpleNamespace(**full)


def matches(a: np.ndarray, layout: str) -> bool:
    """Whether `a` is laid out as `layout` (size-1 axes can make an array both contiguous and channels_last)."""
    if layout == "contiguous":
        return bool(a.flags.c_contiguous)
    if layout in ("channels_last", "channels_last_3d"):
        return a.ndim == (4 if layout == "channels_last" else 5) and bool(np.moveaxis(a, 1, -1).flags.c_contiguous)
    return not a.flags.c_contiguous


def differs(name: str, want: dict[str, Any], expected: Optional[np.ndarray], actual: Any) -> Optional[str]:
    """What differs between the backend's value and the oracle's, as bnconform compares them."""
    if expected is None or actual is None:
        return None if expected is None and actual is None else f"{name}: expected {expected}, got {actual}"
    if name == "num_batches_tracked":
        count = int(np.asarray(actual))
        return None if count == int(expected) else f"{name}: expected {int(expected)}, got {count} (exact)"
    a = np.asarray(actual)
    dtype_name = "bfloat16" if a.dtype.name == "bfloat16" else str(a.dtype)
    e, got = np.asarray(expected, dtype=np.float64), a.astype(np.float64)
    if e.shape != got.shape:
        return f"{name}: shape differs: expected {e.shape}, got {got.shape}"
    if e.size:
        with np.errstate(invalid="ignore"):
            same = (np.isnan(e) & np.isnan(got)) | (np.isinf(e) & (got == e))
            err = np.where(same, 0.0, np.abs(got - e))
        err = np.where(np.isnan(err), np.inf, err)
        bad = err > want["atol"] + want["rtol"] * np.abs(np.nan_to_num(e))
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            return (f"{name}: max abs error {err.max():.3e} (atol {want['atol']:g}, rtol {want['rtol']:g}); "
                    f"{int(bad.sum())} of {bad.size} elements outside; first at {first}: "
                    f"expected {e[first]:.10g}, got {got[first]:.10g}")
    if want.get("dtype") and dtype_name != want["dtype"]:
        return f"{name}: dtype differs: expected {want['dtype']}, got {dtype_name}"
    if want.get("layout") and a.ndim > 1 and not matches(a, want["layout"]):
        return f"{name}: layout differs: expected {want['layout']}, strides {a.strides}"
    return None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", default=BACKEND, help=f"the backend to run (default: {BACKEND})")
    args = parser.parse_args(argv)
    expected = np.load(Path(__file__).with_name(EXPECTED))
    backend = load_backend(args.backend)
    config = {**CONFIG}
    conventions = getattr(backend, "conventions", None)
    decay = getattr(conventions, "momentum", "torch") == "decay" and config.get("momentum_convention", "torch") == "torch"
    if decay:  # the backend takes momentum as the weight of the old value
        config["momentum_convention"] = "decay"
        config["momentum"] = None if config.get("momentum", 0.1) is None else 1.0 - config.get("momentum", 0.1)
    full = {**CONFIG_DEFAULTS, **CONFIG}
    module_dtype, data_dtype = full["dtype"], full["input_dtype"] or full["dtype"]
    module = backend.create(make_config(config))
    print(f"backend {args.backend}, {len(STEPS)} steps")
    if not full["training"]:
        module.eval()
    for name, source in INIT.items():
        module.assign(name, int(source) if name == "num_batches_tracked" else array(source, module_dtype))
    saved: dict[str, Any] = {}
    observed: dict[str, Any] = {}
    layout = "contiguous"
    for index, step in enumerate(STEPS, start=1):
        action, raised = step["action"], None
        try:
            if action in ("train", "eval", "reset_running_stats", "reset_parameters"):
                getattr(module, action)()
            elif action == "set":
                for key, value in step["values"].items():
                    if key == "momentum" and decay and value is not None:
                        value = 1.0 - value
                    module.set_attribute(key, value)
            elif action == "forward":
                observed = {}
                layout = step.get("layout", "contiguous")
                x = array(step["input"], data_dtype, layout)
                mode = step.get("grad_mode", "enabled")
                observed["output"] = module.forward(x) if mode == "enabled" else module.forward_with_grad_mode(x, mode)
            elif action == "backward":
                grads = module.backward(array(step["grad"], data_dtype, layout))
                observed.update({f"grad_{k}": grads.get(k) for k in ("input", "weight", "bias")})
            elif action == "state_dict":
                saved[step["save_as"]] = module.state_dict()
            elif action == "load_state_dict":
                module.load_state_dict(dict(saved[step["from"]]), strict=True)
        except Exception as exc:  # the backend raised
            raised = exc
        what = f"step {index} ({action})"
        kinds = [cls.__name__ for cls in type(raised).__mro__] if raised is not None else []
        if step.get("error"):
            if raised is None:
                print(f"{what}: expected {step['error']}, nothing was raised")
                return 1
            if step["error"] not in kinds:
                print(f"{what}: expected {step['error']}, got {kinds[0]}: {raised}")
                return 1
            continue
        if raised is not None:
            print(f"{what} raised {kinds[0]}: {raised} where the reference does not raise")
            return 1
        problems = []
        for name, want in step["expect"].items():
            actual = observed[name] if name in observed else module.get(name)
            key = f"{index}:{name}"
            problem = differs(name, want, None if want.get("none") else expected[key], actual)
            if problem:
                problems.append(problem)
        if problems:
            print(f"{what} differs from the reference:")
            for problem in problems:
                print(f"  {problem}")
            return 1
    print(f"the backend matches the reference on all {len(STEPS)} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
