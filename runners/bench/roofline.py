"""This machine's reachable memory bound, measured in the same run and with the same threads as
the cells it bounds, by STREAM-style C kernels compiled like the C backend (same compiler flags,
the same instruction set chosen at run time, the same OpenMP team) on buffers far beyond the
last-level cache: sum (read), dot (two reads), fill (write), copy, scale (y = a*x), add and triad
(y = x + a*z).

A write costs what the machine makes it cost: each writing kernel is timed with plain stores
(which read each line for ownership first) and with streaming stores (which do not), and the
faster one is taken; each kernel's time is its best round's (a bound is optimistic by design; the
median of a shared machine is not).

A phase's bound is the sum of the kernels whose traffic it matches, scaled by the tensor's bytes:
- compulsory: the least traffic any kernel needs, x read and y written once (a scale), and in the
  backward dy and x read and dx written once (a triad);
- algorithmic: the passes a kernel that normalises by batch statistics needs once x no longer
  fits a cache: a sum pass for the statistics before the scale pass, and in the backward a dot
  pass (sum dy and sum dy*x) before the triad. This one is reachable: "% of bound" is against it.
A cell whose data fits the last-level cache, or that beats its algorithmic bound, did not stream
from memory: it is marked cache-resident, its percentage shown but left out of the verdicts.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from bnconform.runners.bench.timer import interleaved

BUFFER_BYTES = 256 << 20  # float32 values worth 256 MB per array: beyond any L3 here
# Values read and written per element, for each STREAM kernel (float32, 4 bytes each).
KERNELS: dict[str, tuple[int, int]] = {"sum": (1, 0), "dot": (2, 0), "fill": (0, 1), "copy": (1, 1),
                                       "scale": (1, 1), "add": (2, 1), "triad": (2, 1)}
WRITING = tuple(k for k, (_, w) in KERNELS.items() if w)
# Per phase, the kernels whose traffic its passes match (module docstring).
COMPULSORY: dict[str, tuple[str, ...]] = {"train_fwd": ("scale",), "eval_fwd": ("scale",),
                                          "train_fwd_bwd": ("scale", "triad")}
ALGORITHMIC: dict[str, tuple[str, ...]] = {"train_fwd": ("sum", "scale"), "eval_fwd": ("scale",),
                                           "train_fwd_bwd": ("sum", "scale", "dot", "triad")}


def last_level_cache_bytes() -> Optional[int]:
    """The largest CPU cache, from Linux's sysfs (None elsewhere): data that fits it need not stream."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip().upper()
        unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        try:
            sizes.append(int(text.rstrip("KMG")) * unit)
        except ValueError:
            continue
    return max(sizes) if sizes else None


def _candidates(threads: int) -> tuple[dict[str, Callable[[], Any]], Any]:
    """The STREAM kernels on three 256 MB buffers; writing ones with plain and streaming stores."""
    from bnconform.runners.backends.cffi_backend import _load

    ffi, lib = _load()
    n = BUFFER_BYTES // 4
    x, z, y = np.ones(n, np.float32), np.full(n, 2.0, np.float32), np.zeros(n, np.float32)
    px, pz, py = (ffi.from_buffer("float[]", a) for a in (x, z, y))
    out = ffi.new("double *")
    calls: dict[str, Callable[[int], int]] = {
        "fill": lambda nt: lib.bn_stream_fill(py, n, 1.0, nt, threads),
        "copy": lambda nt: lib.bn_stream_copy(px, py, n, nt, threads),
        "scale": lambda nt: lib.bn_stream_scale(px, py, n, 3.0, nt, threads),
        "add": lambda nt: lib.bn_stream_add(px, pz, py, n, nt, threads),
        "triad": lambda nt: lib.bn_stream_triad(px, pz, py, n, 3.0, nt, threads),
    }
    candidates: dict[str, Callable[[], Any]] = {
        "sum": lambda: lib.bn_stream_sum(px, n, out, threads),
        "dot": lambda: lib.bn_stream_dot(px, pz, n, out, threads),
    }
    for name, call in calls.items():
        for stores, flag in (("plain", 0), ("streaming", 1)):
            candidates[f"{name}/{stores}"] = functools.partial(call, flag)
    return candidates, (x, z, y)


def unavailable() -> Optional[str]:
    """Why the STREAM kernels cannot run here (they are the C extension's), or None."""
    from bnconform.runners.backends.cffi_backend import CffiBackend

    return CffiBackend().available()


def measure(max_time: float, threads: int) -> dict[str, Any]:
    """The roofline record: each kernel's best time and rate, the stores it was fastest with."""
    from bnconform.runners.backends.cffi_backend import isa

    why = unavailable()
    if why:
        return {"unavailable": f"the STREAM kernels are the C extension's: {why}"}
    candidates, buffers = _candidates(threads)
    timings = interleaved(candidates, max_time)
    del buffers
    best = {k: min(v) for k, v in timings.rounds.items()}
    kernels = {}
    for name, (reads, writes) in KERNELS.items():
        if name in WRITING:
            stores = min(("plain", "streaming"), key=lambda s: best[f"{name}/{s}"])
            t = best[f"{name}/{stores}"]
            extra = {"stores": stores, "plain_s": best[f"{name}/plain"], "streaming_s": best[f"{name}/streaming"]}
        else:
            t, extra = best[name], {}
        kernels[name] = {"best_s": t, "gbs": (reads + writes) * BUFFER_BYTES / t / 1e9,
                         "s_per_byte": t / BUFFER_BYTES, **extra}
    return {"buffer_bytes": BUFFER_BYTES, "cache_bytes": last_level_cache_bytes(), "threads": threads,
            "isa": isa(), "kernels": kernels, "rounds": {k: timings.stats(k) for k in timings.rounds}}


def bounds_s(roofline: dict[str, Any], phase: str, tensor_bytes: float) -> tuple[float, float]:
    """(compulsory, algorithmic) least times of a phase on a tensor of `tensor_bytes` bytes."""
    rate = {k: v["s_per_byte"] for k, v in roofline["kernels"].items()}
    return (tensor_bytes * sum(rate[k] for k in COMPULSORY[phase]),
            tensor_bytes * sum(rate[k] for k in ALGORITHMIC[phase]))
