"""Deliberately broken plugin backends: each is the NumPy backend with one way of going wrong
that must cost only its own cells (tests/test_isolation.py). Loaded as
`--backend tests.broken_backends:NAME` from the repository root."""
from __future__ import annotations

import ctypes
import os
import time

import numpy as np

from bnconform import KernelModule, ModuleConfig
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


segfault = Segfault()
exit_zero = ExitZero()
system_exit = RaisesSystemExit()
keyboard_interrupt = RaisesKeyboardInterrupt()
hangs = Hangs()
slow = Slow()
malformed_capabilities = MalformedCapabilities()
pollutes = Pollutes()


class _TwoBugs(mutants._BiasedRunningVar, mutants._EpsOutsideSqrt):
    """Bessel's correction forgotten (the bug a manifest may declare) and eps outside the root (another)."""


two_bugs = NumpyBackend(_TwoBugs(threads=1), name="two-bugs")
