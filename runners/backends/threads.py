"""How many threads a backend uses when it is not told: torch's count, without importing torch.

torch's CPU default is one thread per CPU this process may run on (OMP_NUM_THREADS when set);
the C and NumPy backends use the same, so that every column of a run works with the same
threads. Importing torch only to ask would cost seconds in processes that never use it (the
run's controller, the numpy and cffi workers); where torch is already loaded, it is asked.
"""
from __future__ import annotations

import os
import sys


def default_threads() -> int:
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        return int(torch.get_num_threads())
    try:
        requested = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        requested = 0
    if requested > 0:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1
