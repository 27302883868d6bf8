"""pytest-benchmark cases for `bnconform bench`: every backend x shape x phase, plus a copy.

Not part of the test suite (pytest's testpaths do not include it); `bnconform bench` runs it
explicitly. Each backend is timed the way its users call it: torch through `nn.BatchNorm`
on tensors, the others through their module (bnconform.runners.backends.protocol). The copy of the largest
tensor measures this machine's memory bandwidth in the same run.
"""
from __future__ import annotations

import numpy as np
import pytest

from bnconform.runners.bench.workloads import PHASES, SHAPES, copy_callable, phase_callable, set_threads, shape_id


def _cells(config: pytest.Config) -> list[tuple[str, tuple[int, ...], str]]:
    names = config.getoption("bnconform_backend") or ["torch"]
    wanted = config.getoption("bnconform_shape")
    shapes = [s for s in SHAPES if not wanted or shape_id(s) in wanted]
    # Backends side by side for each shape and phase: same input arrays, same machine state.
    return [(b, s, p) for s in shapes for p in PHASES for b in names]


@pytest.fixture(scope="module", autouse=True)
def _threads(request: pytest.FixtureRequest) -> None:
    n = request.config.getoption("bnconform_threads")
    if n:
        set_threads(n)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_cell" in metafunc.fixturenames:
        cells = _cells(metafunc.config)
        metafunc.parametrize("bench_cell", cells, ids=[f"{b}-{shape_id(s)}-{p}" for b, s, p in cells])


def test_copy_bandwidth(benchmark) -> None:
    fn, nbytes = copy_callable(max(SHAPES, key=lambda s: int(np.prod(s))))
    benchmark.extra_info.update({"backend": "copy", "shape": "", "phase": "copy", "bytes": nbytes})
    benchmark(fn)


def test_phase(benchmark, bench_cell) -> None:
    backend, shape, phase = bench_cell
    fn, nbytes, skip = phase_callable(backend, shape, phase)
    if skip:
        pytest.skip(skip)
    benchmark.extra_info.update({"backend": backend, "shape": shape_id(shape), "phase": phase, "bytes": nbytes})
    benchmark(fn)
