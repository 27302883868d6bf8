"""`bnconform bench` as pytest cases: the roofline first, then one test per shape x phase in
which every backend is timed in both modes (kernel, as called), interleaved round by round;
with --sweep, the kernels again against tensor size and against the thread count.

Not part of the test suite (pytest's testpaths do not include it); `bnconform bench` runs it
explicitly and names, in BNCONFORM_BENCH_RAW, the file each test appends its record to (one
JSON line per test, so an interrupted run keeps what it measured). A backend that cannot be
built or raises is recorded as skipped in its cell with the reason; the other backends run.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import pytest

from bnconform.runners.bench import roofline
from bnconform.runners.bench.timer import interleaved
from bnconform.runners.bench.workloads import (
    MODES,
    PHASES,
    SWEEP_SHAPES,
    THREAD_SWEEP_SHAPE,
    TRAFFIC,
    callable_for,
    cell_id,
    set_threads,
    shape_id,
    timing_set,
    traffic_bytes,
)

RAW_ENV = "BNCONFORM_BENCH_RAW"


def _record(entry: dict[str, Any]) -> None:
    with open(os.environ[RAW_ENV], "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def _cells(config: pytest.Config) -> list[tuple[tuple[int, ...], str, str]]:
    return [(s, v, p) for s, v in timing_set(config.getoption("bnconform_shape")) for p in PHASES]


@pytest.fixture(scope="module", autouse=True)
def _threads(request: pytest.FixtureRequest) -> None:
    n = request.config.getoption("bnconform_threads")
    if n:
        set_threads(n)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_cell" in metafunc.fixturenames:
        cells = _cells(metafunc.config)
        metafunc.parametrize("bench_cell", cells, ids=[f"{cell_id(s, v)}-{p}" for s, v, p in cells])
    sweep = metafunc.config.getoption("bnconform_sweep")
    if "size_cell" in metafunc.fixturenames:
        sizes = [(s, p) for s in SWEEP_SHAPES for p in PHASES] if sweep else []
        metafunc.parametrize("size_cell", sizes, ids=[f"{shape_id(s)}-{p}" for s, p in sizes])
    if "threads_cell" in metafunc.fixturenames:
        counts = [(n, p) for n in range(1, (os.cpu_count() or 1) + 1) for p in PHASES] if sweep else []
        metafunc.parametrize("threads_cell", counts, ids=[f"{n}threads-{p}" for n, p in counts])


def test_roofline(request: pytest.FixtureRequest) -> None:
    import torch

    threads = request.config.getoption("bnconform_threads") or torch.get_num_threads()
    _record({"kind": "roofline", **roofline.measure(request.config.getoption("bnconform_max_time"), threads)})


def test_cell(request: pytest.FixtureRequest, bench_cell: tuple[tuple[int, ...], str, str]) -> None:
    shape, variant, phase = bench_cell
    _record(_timed(request.config, shape, phase, MODES, variant))


def test_size_sweep(request: pytest.FixtureRequest, size_cell: tuple[tuple[int, ...], str]) -> None:
    shape, phase = size_cell
    _record({**_timed(request.config, shape, phase, ("kernel",)), "kind": "sweep_size"})


def test_threads_sweep(request: pytest.FixtureRequest, threads_cell: tuple[int, str]) -> None:
    threads, phase = threads_cell
    chosen = request.config.getoption("bnconform_threads") or threads
    set_threads(threads)
    try:
        _record({**_timed(request.config, THREAD_SWEEP_SHAPE, phase, ("kernel",)), "kind": "sweep_threads",
                 "threads": threads})
    finally:
        set_threads(chosen)


def _timed(config: pytest.Config, shape: tuple[int, ...], phase: str, modes: tuple[str, ...],
           variant: str = "float32") -> dict[str, Any]:
    """Every backend in `modes` on one shape and phase, interleaved: a cell record."""
    names = config.getoption("bnconform_backend") or ["torch"]
    candidates: dict[str, Callable[[], Any]] = {}
    skipped: dict[str, str] = {}
    for name in names:
        for mode in modes:
            label = f"{name}|{mode}"
            try:
                fn, why = callable_for(name, shape, phase, mode, variant)
                if fn is not None:
                    fn()  # a backend that raises is found here, before the timed rounds
            except (Exception, SystemExit) as exc:  # a Ctrl-C still stops the run
                fn, why = None, f"raised {type(exc).__name__}: {exc}"
            if fn is None:
                skipped[label] = why or "no callable"
            else:
                candidates[label] = fn
    bytes_read, bytes_written = traffic_bytes(shape, phase, variant)
    entry: dict[str, Any] = {"kind": "cell", "shape": cell_id(shape, variant), "phase": phase, "bytes_read": bytes_read,
                             "bytes_written": bytes_written, "tensor_bytes": bytes_written // TRAFFIC[phase][1],
                             "skipped": skipped, "results": {}}
    if candidates:
        timings = interleaved(candidates, config.getoption("bnconform_max_time"))
        entry["results"] = {label: timings.stats(label) for label in candidates}
    return entry
