"""Framework adapters: skipped with the reason when missing; judged by their profile when present."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnconform.cases.layouts import arrange
from bnconform.cases.loader import BUILTIN_SPECS, load_cases
from bnconform.runners.backends import FRAMEWORKS, resolve, unavailable_reason
from bnconform.runners.backends.frameworks import MANIFESTS
from bnconform.runners.backends.frameworks.tensorflow_backend import _channels_first, _channels_last
from bnconform.runners.engine.execute import run_case
from bnconform.runners.engine.manifest import load
from tests.helpers import bnconform

# The top-level packages each adapter needs (installed: the adapter must run, not skip).
PACKAGES = {"onnxruntime": ["onnx", "onnxruntime"], "keras": ["keras"], "keras-tf": ["keras", "tensorflow"],
            "flax": ["flax"], "tinygrad": ["tinygrad"], "paddle": ["paddle"], "tensorflow": ["tensorflow"],
            "equinox": ["equinox", "jax"], "haiku": ["haiku", "jax"], "mlx": ["mlx"]}
CASES = {c.id: c for c in load_cases([BUILTIN_SPECS])}
# bessel/nc_golden: the biased-variance frameworks deviate by declaration; tinygrad, TensorFlow's
# fused op and MLX use the unbiased variance, as torch does.
EXPECTED = {"onnxruntime": "deviates", "keras": "deviates", "keras-tf": "deviates", "flax": "deviates",
            "tinygrad": "passed", "paddle": "deviates", "tensorflow": "passed", "equinox": "deviates",
            "haiku": "deviates", "mlx": "passed"}


@pytest.fixture(scope="module")
def nc_golden(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """bessel/nc_golden on every adapter, each in its own worker process as in any matrix run:
    frameworks never meant to share a process can break each other there (Paddle imported after
    JAX and TensorFlow segfaults; Keras keeps the backend it was first imported with)."""
    out = tmp_path_factory.mktemp("nc_golden")
    names = [a for name in sorted(FRAMEWORKS) for a in ("--backend", name)]
    proc, report = bnconform(*names, "--allow-unavailable", "--case", "bessel/nc_golden", out=out)
    assert report is not None, proc.stderr
    return {r["backend"]: r for r in report["results"]}


@pytest.mark.parametrize("name", sorted(FRAMEWORKS))
def test_adapter_is_skipped_with_reason_or_judged_by_its_profile(name: str, nc_golden: dict[str, dict]) -> None:
    result = nc_golden[name]
    if not all(importlib.util.find_spec(m) for m in PACKAGES[name]):  # looked up, not imported
        assert result["outcome"] == "skipped" and "pip install" in result["message"], result["message"]
    else:
        assert result["outcome"] == EXPECTED[name], result["message"]


@pytest.mark.parametrize("name", sorted(FRAMEWORKS))
def test_adapter_declares_conventions_and_ships_a_valid_manifest(name: str) -> None:
    backend = resolve(name)
    assert backend.conventions.describe()
    entries = load([backend.manifest])
    assert entries and all(e.reason and e.backend == name for e in entries)


def test_one_pass_variance_is_found_in_flax() -> None:
    backend = resolve("flax")
    if unavailable_reason(backend):
        pytest.skip("flax is not installed here (tox -e flax runs this)")
    result = run_case(CASES["stability/offset_1e4_golden"], backend, "flax")
    assert result.outcome == "failed" and "one_pass_variance" in result.diagnosis


def test_tinygrad_names_its_device() -> None:
    """DEV=PYTHON where there is no clang (tinygrad 0.14 refuses PYTHON=1); the version says which."""
    backend = resolve("tinygrad")
    reason = unavailable_reason(backend)
    if reason:
        pytest.skip(f"tinygrad is not installed here (tox -e tinygrad runs this): {reason}")
    info = backend.version()
    assert "device CPU" in info or "device PYTHON" in info or "DEV set by the caller" in info, info
    assert backend.manifest.endswith("tinygrad-python.yaml" if "device PYTHON" in info else "tinygrad.yaml")


def test_tinygrad_python_device_manifest_is_the_cpu_one_but_its_device_findings() -> None:
    """The two tinygrad manifests say the same, but for each device's float32 summation findings
    (each sums a channel in its own order): the entries about the offset and magnitude cases."""
    cpu = load([MANIFESTS / "tinygrad.yaml"])
    python = load([MANIFESTS / "tinygrad-python.yaml"])
    key = lambda e: (e.backend, e.case, e.reason, e.diagnosis, e.message, e.outcome, e.link)
    own = lambda e: e.case.startswith(("stability/offset_1e4", "magnitudes/"))
    assert [key(e) for e in python if not own(e)] == [key(e) for e in cpu if not own(e)]
    assert any(own(e) for e in cpu) and any(own(e) for e in python)
    # neither expects an error cell: the tox envs' --timeout 600 lets DEV=PYTHON's largest cases finish
    assert all(e.outcome != "error" for e in cpu + python)


@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 5), (2, 3, 4, 5), (2, 3, 2, 4, 5)])
def test_tensorflow_layout_views_keep_each_channel_and_need_no_copy_for_channels_last(shape: tuple[int, ...]) -> None:
    """The TensorFlow column hands FusedBatchNormV3 NHWC/NDHWC views of (N, C, *S) data: every
    channel's values stay that channel's, the way back is a view of the same memory, and a
    channels_last array is already the op's contiguous layout (no copy)."""
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    t = _channels_last(x)
    assert t.ndim == (5 if len(shape) == 5 else 4) and t.shape[-1] == shape[1]
    for k in range(shape[1]):
        assert sorted(t[..., k].ravel()) == sorted(x[:, k].ravel())
    back = _channels_first(t, x)
    assert back.shape == x.shape and np.shares_memory(back, x) and (back == x).all()
    if len(shape) >= 4:
        cl = arrange(x, "channels_last" if len(shape) == 4 else "channels_last_3d")
        assert _channels_last(cl).flags.c_contiguous


def test_keras_column_refuses_tensorflow_and_names_keras_tf(monkeypatch: pytest.MonkeyPatch) -> None:
    """KERAS_BACKEND=tensorflow would turn the keras column into a copy of keras-tf judged by
    keras.yaml (Keras on torch): it is refused instead, saying which column that is."""
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    reason = unavailable_reason(resolve("keras"))
    assert reason is not None and "keras-tf" in reason


def test_keras_tf_chooses_tensorflow_whatever_the_environment_says(tmp_path: Path) -> None:
    """In a fresh process with KERAS_BACKEND=torch (as `tox -e frameworks` sets it for `keras`),
    keras-tf's version(), asked first as a worker does, must not let TensorFlow's import bring
    Keras in on torch (importing tensorflow imports keras)."""
    if not all(importlib.util.find_spec(m) for m in PACKAGES["keras-tf"]):
        pytest.skip("keras and tensorflow are not installed here (tox -e tensorflow runs this)")
    code = ("from bnconform.runners.backends import resolve\n"
            "b = resolve('keras-tf')\nv = b.version()\nr = b.available()\nimport keras\n"
            "print(v, '|', r, '|', keras.backend.backend())\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": "torch"})
    assert done.returncode == 0, done.stderr[-2000:]
    version, reason, backend = (part.strip() for part in done.stdout.strip().splitlines()[-1].split("|"))
    assert "KERAS_BACKEND=tensorflow" in version and reason == "None" and backend == "tensorflow", done.stdout
