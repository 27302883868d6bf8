"""This machine's memory bandwidth, measured in the same run and with the same threads as the
cells it bounds: a read (a sum), a write (a fill) and a copy, on a buffer far beyond the caches.

Each rate is the best round's (a bound is optimistic by design; the median of a shared machine
is not). Reads and writes proceed together, so a cell's least time is the longer of its reads
at the read rate and its writes at the write rate; the copy, one read and one write per
element, checks that model. A cell whose tensor fits the last-level cache, or that beats its
bound, did not stream from memory: it is marked cache-resident, not celebrated, and left out
of a backend's roofline verdict.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from bnconform.runners.bench.timer import interleaved

BUFFER_BYTES = 256 << 20  # float32 elements worth 256 MB: beyond any L3 here


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


def measure(max_time: float) -> dict[str, Any]:
    import torch

    n = BUFFER_BYTES // 4
    src, dst = torch.ones(n), torch.zeros(n)
    timings = interleaved({"read": src.sum, "write": lambda: dst.fill_(1.0), "copy": lambda: dst.copy_(src)},
                          max_time)
    best = {k: min(v) for k, v in timings.rounds.items()}
    read, write = BUFFER_BYTES / best["read"], BUFFER_BYTES / best["write"]
    model_copy_s = max(BUFFER_BYTES / read, BUFFER_BYTES / write)
    return {
        "buffer_bytes": BUFFER_BYTES,
        "cache_bytes": last_level_cache_bytes(),
        "threads": torch.get_num_threads(),
        "read_gbs": read / 1e9,
        "write_gbs": write / 1e9,
        "copy_gbs": 2 * BUFFER_BYTES / best["copy"] / 1e9,  # one read and one write per element
        "copy_model_s": model_copy_s,
        "copy_measured_s": best["copy"],
        "rounds": {k: timings.stats(k) for k in timings.rounds},
    }


def bound_s(roofline: dict[str, Any], bytes_read: float, bytes_written: float) -> float:
    """The least time a cell's traffic takes at the measured rates (reads and writes overlap)."""
    return max(bytes_read / (roofline["read_gbs"] * 1e9), bytes_written / (roofline["write_gbs"] * 1e9))
