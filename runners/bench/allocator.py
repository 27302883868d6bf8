"""glibc's allocator set per comparison, so that "kernel" times no allocator and "as called"
times the one a user gets.

Some kernels allocate inside themselves even through their `.out` variant: torch's
native_batch_norm_backward.out computes into temporaries and copies them out. With glibc's
defaults a block above the mmap threshold (at most 32 MB) is mapped on every call and
page-faulted in, which on 32x64x112x112 tripled torch's train_fwd_bwd "kernel" time. Before a
kernel sample mmap is switched off and the heap is never trimmed, so such temporaries are
reused after the warm-up; before an as-called sample the allocator is put back to the steady
state of its defaults (mmap above 32 MB, the dynamic threshold's ceiling; trim above 64 MB).
Elsewhere than glibc both are no-ops, and the report says so.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any, Optional

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
MMAP_CEILING = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
INT_MAX = 2**31 - 1


def _libc() -> Optional[Any]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


LIBC = _libc()


def managed() -> bool:
    """Whether this process's allocator can be set (glibc)."""
    return LIBC is not None


def for_kernel() -> None:
    if LIBC is not None:
        LIBC.mallopt(M_MMAP_MAX, 0)
        LIBC.mallopt(M_TRIM_THRESHOLD, INT_MAX)  # mallopt takes a C int: never trim below 2 GB


def as_called() -> None:
    if LIBC is not None:
        LIBC.mallopt(M_MMAP_MAX, 65536)
        LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_CEILING)
        LIBC.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_CEILING)
