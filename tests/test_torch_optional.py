"""torch is an extra: what the engine says about the torch columns when torch is missing or is
another release (the fresh venv without torch is tests/test_install.py's)."""
from __future__ import annotations

import importlib.util

import pytest

from bnconform.runners import backends
from bnconform.runners.backends import TORCH_RELEASE, default_backends, torch_release_warning, uses_torch
from bnconform.runners.backends.torch_backend import TorchBackend


@pytest.mark.parametrize(("version", "warns"), [
    (f"{TORCH_RELEASE}+cpu", False), (TORCH_RELEASE, False), (f"torch {TORCH_RELEASE} (mutated)", False),
    ("2.14.1+cpu", True), ("torch 2.9.1 (mutated)", True), ("mypkg 1.0 (torch 2.12.0)", True),
    ("numpy 2.4.6", False), ("not installed", False),
])
def test_another_torch_release_is_warned_about(version: str, warns: bool) -> None:
    warning = torch_release_warning("torch", version)
    assert (warning is not None) == warns, warning
    if warning:
        assert TORCH_RELEASE in warning and "backend torch" in warning


def test_which_columns_are_built_on_torch() -> None:
    assert all(uses_torch(t) for t in ("torch", "torch-cuda", "torch-module:pkg.m:f", "mutant:reset_noop"))
    assert not any(uses_torch(t) for t in ("numpy", "cffi", "onnxruntime", "mypkg.bn:backend"))


def test_without_torch_the_default_columns_keep_torch_to_read_it_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    monkeypatch.setattr(backends, "_nvidia_device", lambda: True)  # even with a GPU: no torch, no torch-cuda
    assert default_backends() == ["torch", "numpy", "cffi"]


def test_the_torch_backend_says_how_to_get_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_torch(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    backend = TorchBackend()
    assert backend.available() == backends.TORCH_MISSING and "bnconform[torch]" in backend.available()
    assert backend.version() == "not installed"
