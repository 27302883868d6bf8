"""Deliberately broken plugin backends: each is the NumPy backend with one way of going wrong
that must cost only its own cells (tests/test_isolation.py). Loaded as
`--backend tests.broken_backends:NAME` from the repository root."""
from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

import numpy as np

from bnconform import Capabilities, Conventions, KernelModule, ModuleConfig
from bnconform.runners.backends import mutants
from bnconform.runners.backends.numpy_backend import NumpyBackend, NumpyKernel


class _Breaks(NumpyBackend):
    """Every module it builds does `act()` in its forward call."""

    def act(self) -> None:
        raise NotImplementedError

    def create(self, config: ModuleConfig) -> KernelModule:
        module = KernelModule(config, NumpyKernel(threads=1))
        forward, act = module.forward, self.act

        def breaking_forward(x: np.ndarray) -> np.ndarray:
            act()
            return forward(x)

        module.forward = breaking_forward  # type: ignore[method-assign]
        return module


class Segfault(_Breaks):
    def act(self) -> None:
        ctypes.string_at(0)  # reads address 0: SIGSEGV


class NoisyThenSegfault(_Breaks):
    """Writes to its stderr (as a C++ library does, straight to fd 2), then crashes."""

    def act(self) -> None:
        os.write(2, b"noisy backend: a C++ warning on fd 2\n")
        ctypes.string_at(0)


class ExitZero(_Breaks):
    def act(self) -> None:
        os._exit(0)


class RaisesSystemExit(_Breaks):
    def act(self) -> None:
        raise SystemExit(3)


class RaisesKeyboardInterrupt(_Breaks):
    def act(self) -> None:
        raise KeyboardInterrupt


class Hangs(_Breaks):
    def act(self) -> None:
        time.sleep(3600)


class Slow(_Breaks):
    """Not broken, only slow: half a second per forward (for interrupting a run mid-way)."""

    def act(self) -> None:
        time.sleep(0.5)


class MalformedCapabilities(NumpyBackend):
    def __init__(self) -> None:
        super().__init__()
        self.capabilities = "everything"  # type: ignore[assignment]


class UnknownFeature(NumpyBackend):
    def __init__(self) -> None:
        super().__init__()
        self.capabilities = Capabilities(features=frozenset({"backwards", "state_dict"}))  # a typo of backward


class CreatesNothing(NumpyBackend):
    def create(self, config: ModuleConfig) -> KernelModule:
        return None  # type: ignore[return-value]


class BadConventions(NumpyBackend):
    conventions = Conventions(momentum="keras")


class _Returns(NumpyBackend):
    """The NumPy backend with what its module returns passed through `output` and `value`."""

    def create(self, config: ModuleConfig) -> KernelModule:
        module = super().create(config)
        forward, get = module.forward, module.get
        module.forward = lambda x: self.output(forward(x), x)  # type: ignore[method-assign]
        module.get = lambda name: self.value(name, get(name))  # type: ignore[method-assign]
        return module

    def output(self, out: np.ndarray, x: np.ndarray) -> object:
        return out

    def value(self, name: str, value: object) -> object:
        return value


class Upcasts(_Returns):
    def output(self, out: np.ndarray, x: np.ndarray) -> object:
        return out.astype(np.float64)


class ReturnsList(_Returns):
    def output(self, out: np.ndarray, x: np.ndarray) -> object:
        return out.tolist()


class ReturnsTensor(_Returns):
    def output(self, out: np.ndarray, x: np.ndarray) -> object:
        import torch

        return torch.from_numpy(out)


class ModifiesInput(_Returns):
    def output(self, out: np.ndarray, x: np.ndarray) -> object:
        x[...] = out  # normalised in place, over the caller's array
        return x


class CounterArray(_Returns):
    def value(self, name: str, value: object) -> object:
        return np.asarray(value) if name == "num_batches_tracked" else value


class OwnWords(NumpyBackend):
    """Raises the exception types torch raises, in words of its own."""

    def create(self, config: ModuleConfig) -> KernelModule:
        module = super().create(config)
        methods = {name: getattr(module, name) for name in ("forward", "load_state_dict", "set_attribute")}

        def reworded(method):  # type: ignore[no-untyped-def]
            def call(*args, **kwargs):  # type: ignore[no-untyped-def]
                try:
                    return method(*args, **kwargs)
                except Exception as exc:
                    raise type(exc)("bad input") from None
            return call

        for name, method in methods.items():
            setattr(module, name, reworded(method))
        return module


class OwnWordsDeclared(OwnWords):
    conventions = Conventions(messages="own")


class OwnWordsBiased(OwnWords):
    """Own words (declared) and Bessel's correction forgotten (the bug a manifest may name)."""

    conventions = Conventions(messages="own")

    def __init__(self) -> None:
        super().__init__(mutants._BiasedRunningVar(threads=1), name="own-words-biased")


class OwnWordsNoCounter(OwnWords):
    """Own words and no num_batches_tracked, both declared (as Paddle's adapter does)."""

    conventions = Conventions(messages="own", counter=False)

    def create(self, config: ModuleConfig) -> KernelModule:
        module = super().create(config)
        get = module.get
        module.get = lambda name: None if name == "num_batches_tracked" else get(name)  # type: ignore[method-assign]
        return module


class WrongErrorType(NumpyBackend):
    """Raises RuntimeError where torch raises ValueError."""

    def create(self, config: ModuleConfig) -> KernelModule:
        module = super().create(config)
        forward = module.forward

        def call(x: np.ndarray) -> np.ndarray:
            try:
                return forward(x)
            except ValueError as exc:
                raise RuntimeError(str(exc)) from None

        module.forward = call  # type: ignore[method-assign]
        return module


class CannotBuild3d(NumpyBackend):
    """Builds no BatchNorm3d: those cells are errors ("could not build the module"), not failures."""

    def create(self, config: ModuleConfig) -> KernelModule:
        if config.dim == 3:
            raise RuntimeError("no 3-d kernel")
        return super().create(config)


class ShipsManifest(NumpyBackend):
    """The biased-variance bug, declared in a manifest the backend ships (as the framework adapters do)."""

    manifest = str(Path(__file__).parent / "data" / "biased-known.yaml")


class Pollutes(NumpyBackend):
    """Changes process-wide state that another backend would notice if it shared the process."""

    def create(self, config: ModuleConfig) -> KernelModule:
        import torch

        np.seterr(all="raise")
        np.random.seed(1234)
        torch.set_default_dtype(torch.float64)
        torch.set_num_threads(1)
        torch.manual_seed(1234)
        torch.set_grad_enabled(False)
        return super().create(config)


class AllocatesPerCall(NumpyBackend):
    """Not broken: the NumPy backend whose module, as called, also allocates and first-touches
    256 MB per forward, as an allocator without reuse would; its kernel is numpy's own
    (tests/test_timing.py: the kernel comparison must not see the allocation)."""

    def create(self, config: ModuleConfig) -> KernelModule:
        module = super().create(config)
        forward = module.forward

        def allocating_forward(x: np.ndarray) -> np.ndarray:
            np.ones(64 << 20, np.float32)  # 256 MB: mapped, page-faulted in, released
            return forward(x)

        module.forward = allocating_forward  # type: ignore[method-assign]
        return module


class CountsForwards(NumpyBackend):
    """Not broken: the NumPy backend that counts its modules' forwards in counters(), as a compiler
    column counts its graphs (the engine reports each cell's difference, summed per column)."""

    forwards = 0

    def create(self, config: ModuleConfig) -> KernelModule:
        module = super().create(config)
        forward = module.forward

        def counting_forward(x: np.ndarray) -> np.ndarray:
            type(self).forwards += 1
            return forward(x)

        module.forward = counting_forward  # type: ignore[method-assign]
        return module

    def counters(self) -> dict[str, int]:
        return {"forwards": type(self).forwards, "never": 0}


class BadCounters(NumpyBackend):
    """counters() that breaks the protocol (a negative count): ignored, its cells still judged."""

    def counters(self) -> dict[str, int]:
        return {"forwards": -1}


segfault = Segfault()
noisy_then_segfault = NoisyThenSegfault()
exit_zero = ExitZero()
system_exit = RaisesSystemExit()
keyboard_interrupt = RaisesKeyboardInterrupt()
hangs = Hangs()
slow = Slow()
malformed_capabilities = MalformedCapabilities()
unknown_feature = UnknownFeature()
creates_nothing = CreatesNothing()
bad_conventions = BadConventions()
pollutes = Pollutes()
upcasts = Upcasts()
returns_list = ReturnsList()
returns_tensor = ReturnsTensor()
modifies_input = ModifiesInput()
counter_array = CounterArray()
own_words = OwnWords()
own_words_declared = OwnWordsDeclared()
own_words_no_counter = OwnWordsNoCounter()
own_words_biased = OwnWordsBiased()
wrong_error_type = WrongErrorType()
cannot_build_3d = CannotBuild3d()
ships_manifest = ShipsManifest(mutants._BiasedRunningVar(threads=1), name="ships-manifest")


class _TwoBugs(mutants._BiasedRunningVar, mutants._EpsOutsideSqrt):
    """Bessel's correction forgotten (the bug a manifest may declare) and eps outside the root (another)."""


two_bugs = NumpyBackend(_TwoBugs(threads=1), name="two-bugs")
# Bessel's correction forgotten, and track_running_stats assigned after construction ignored: where
# both show, the first failing step shows only the first bug.
biased_flip_ignored = mutants._backend("biased-flip-ignored", kernel=mutants._BiasedRunningVar(threads=1),
                                       module=mutants._FlipIgnored)


class WritesIntoHeldInput(_Returns):
    """Keeps forward's input and normalises it in place later, in backward."""

    def create(self, config: ModuleConfig) -> KernelModule:
        module = super().create(config)
        forward, backward = module.forward, module.backward
        held: list[np.ndarray] = []

        def keep(x: np.ndarray) -> np.ndarray:
            held.append(x)
            return forward(x)

        def spoil(dy: np.ndarray) -> dict:
            grads = backward(dy)
            held[-1][...] = 0
            return grads

        module.forward, module.backward = keep, spoil  # type: ignore[method-assign]
        return module


class ReturnsMasked(_Returns):
    def output(self, out: np.ndarray, x: np.ndarray) -> object:
        return np.ma.masked_array(out)


class StateInFloat64(NumpyBackend):
    def create(self, config: ModuleConfig) -> KernelModule:
        module = super().create(config)
        state_dict = module.state_dict
        module.state_dict = lambda: {k: (v.astype(np.float64) if v.dtype.kind == "f" else v)  # type: ignore[method-assign]
                                     for k, v in state_dict().items()}
        return module


class PopsStateKeys(NumpyBackend):
    def create(self, config: ModuleConfig) -> KernelModule:
        module = super().create(config)
        load = module.load_state_dict

        def consume(state: dict, strict: bool = True) -> None:
            state.pop("num_batches_tracked", None)
            load(dict(state), strict=False)

        module.load_state_dict = consume  # type: ignore[method-assign]
        return module


class NotABackendAtAll:
    name = "not-a-backend"


writes_into_held_input = WritesIntoHeldInput()
returns_masked = ReturnsMasked()
state_in_float64 = StateInFloat64()
pops_state_keys = PopsStateKeys()
not_a_backend = NotABackendAtAll()


class ContiguousOutput(_Returns):
    """Right values, but a channels_last input gets a contiguous (NCHW) output."""

    def output(self, out: np.ndarray, x: np.ndarray) -> object:
        return np.ascontiguousarray(out)


class OutputInFloat32(_Returns):
    """Right values, but float16/bfloat16 input gets float32 output (the module's dtype)."""

    def output(self, out: np.ndarray, x: np.ndarray) -> object:
        return out.astype(np.float32)


class IgnoresStrides(NumpyBackend):
    """Reads the input's memory as if it were C-contiguous, whatever its strides."""

    def create(self, config: ModuleConfig) -> KernelModule:
        module = super().create(config)
        forward = module.forward

        def contiguous_view(x: np.ndarray) -> np.ndarray:
            strides, step = [], x.itemsize
            for size in reversed(x.shape):
                strides.insert(0, step)
                step *= size
            return forward(np.lib.stride_tricks.as_strided(x, strides=tuple(strides)).copy())

        module.forward = contiguous_view  # type: ignore[method-assign]
        return module


contiguous_output = ContiguousOutput()
output_in_float32 = OutputInFloat32()
ignores_strides = IgnoresStrides()
allocates_per_call = AllocatesPerCall(name="allocates_per_call")


class OrderDependent(NumpyBackend):
    """A backend with global state: once its process has built a BatchNorm3d, every BatchNorm1d
    it runs is off by 1e-3 (as a compile cache or a thread pool left behind can do), so a dim=1
    case fails only after a dim=3 one in the same worker (tests/test_order_dependence.py). A
    3-channel module is off always: a bug of its own, whatever ran before. With
    $BNCONFORM_TEST_ORDER_LOG set, each forward appends "PID DIM CHANNELS" to that file."""

    def create(self, config: ModuleConfig) -> KernelModule:
        global _BUILT_3D
        _BUILT_3D = _BUILT_3D or config.dim == 3
        module = super().create(config)
        forward, off = module.forward, self.off

        def shifted_forward(x: np.ndarray) -> np.ndarray:
            log = os.environ.get("BNCONFORM_TEST_ORDER_LOG")
            if log:
                with open(log, "a", encoding="utf-8") as f:
                    f.write(f"{os.getpid()} {config.dim} {config.num_features}\n")
            out = forward(x)
            return out + np.asarray(1e-3, out.dtype) if off(config) else out

        module.forward = shifted_forward  # type: ignore[method-assign]
        return module

    def off(self, config: ModuleConfig) -> bool:
        return (_BUILT_3D and config.dim == 1) or config.num_features == 3


class FlakyOnce(OrderDependent):
    """Off by 1e-3 in the first dim=1 forward it ever runs: a marker file (the path in
    $BNCONFORM_TEST_FLAKY) that does not exist yet, created then; never again after."""

    def off(self, config: ModuleConfig) -> bool:
        marker = Path(os.environ.get("BNCONFORM_TEST_FLAKY", os.devnull))
        if config.dim != 1 or marker == Path(os.devnull) or marker.exists():
            return False
        marker.touch()
        return True


_BUILT_3D = False
order_dependent = OrderDependent(name="order-dependent")
flaky_once = FlakyOnce(name="flaky-once")
counts_forwards = CountsForwards()
bad_counters = BadCounters()
