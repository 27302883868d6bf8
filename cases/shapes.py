"""The shapes library: problems in named batches, as oneDNN benchdnn keeps its shape batches.

Real BatchNorm kernels take different code paths by shape and size: vector tails past a block
of channels, channel blocks of 8, 16, 32 or 64, per-thread partitions, a "large plane" path,
accumulators that overflow. The boundary lists below are where those paths change; a spec takes
a batch with `shapes: [NAME, ...]` (one case per problem, its dim and num_features filled in, and
every `shape: problem` source given the problem's shape), and `bnconform fuzz` draws its shapes
from the same lists and between them.

Every problem has a tier: `default` problems cross every boundary at moderate size (the default
run), `full` ones add the large sizes (`--tier full`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# Channel counts at and around the block sizes kernels vectorise by (8, 16, 32, 64, 128, 256).
CHANNEL_COUNTS = (1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 257)
# Wide (N, C) inputs: a linear layer's features.
WIDE_CHANNEL_COUNTS = (1000, 4096)
# Values per channel (N * spatial size) at and around the sizes kernels switch paths at: the
# smallest batches, vector widths, cache-sized planes, the 2^16 past which float16 sums overflow.
VALUES_PER_CHANNEL = (2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 257, 4095, 4096, 4097, 16384, 65536)
# ... and past 10^6 on the full tier.
FULL_VALUES_PER_CHANNEL = (2**20, 2**20 + 7)
# Magnitudes where arithmetic runs out: offsets that cancel a one-pass variance, float32 values
# whose squares overflow (above ~1.8e19) or underflow, float16 sums past its largest value 65504.
OFFSETS = (1e4, 1e6)
OVERFLOW_SCALES = (1e19, 1e25, 1e30)
UNDERFLOW_SCALES = (1e-20, 1e-30, 1e-38)
FLOAT16_MAX = 65504.0

TIERS = ("default", "full")


@dataclass(frozen=True)
class Problem:
    """One input shape: (N, C, *spatial), with the BatchNorm dim it is for and its tier."""

    dim: int
    shape: tuple[int, ...]
    tier: str = "default"

    @property
    def num_features(self) -> int:
        return self.shape[1]

    @property
    def values_per_channel(self) -> int:
        return self.shape[0] * math.prod(self.shape[2:])

    @property
    def label(self) -> str:
        """The problem in a case id: `2x65x3x5`."""
        return "x".join(str(d) for d in self.shape)


def _plane(n: int) -> tuple[int, int]:
    """A near-square (H, W) with H * W == n (n itself when it is prime)."""
    h = math.isqrt(n)
    while n % h:
        h -= 1
    return h, n // h


def _batches() -> dict[str, tuple[Problem, ...]]:
    full_blocks = (63, 64, 65, 127, 128, 129)
    return {
        # (N, C): every channel boundary, and wide inputs.
        "channels_nc": tuple(Problem(1, (4, c)) for c in CHANNEL_COUNTS + WIDE_CHANNEL_COUNTS),
        # (N, C, H, W): every channel boundary on a small plane; on the full tier on 100x100 planes
        # (apex#1768 was wrong for C=65 on 100x100 while right on 10x10).
        "channels_2d": tuple(Problem(2, (2, c, 3, 5)) for c in CHANNEL_COUNTS)
        + tuple(Problem(2, (2, c, 100, 100), "full") for c in full_blocks),
        # (N, C, D, H, W) around the first blocks.
        "channels_3d": tuple(Problem(3, (2, c, 2, 3, 2)) for c in (1, 7, 8, 9, 16, 17, 63, 64, 65)),
        # Values per channel: N = 1 with one long plane, and a large N with 1x1 planes.
        "values_plane": tuple(Problem(2, (1, 3, *_plane(n))) for n in VALUES_PER_CHANNEL)
        + tuple(Problem(2, (1, 3, *_plane(n)), "full") for n in FULL_VALUES_PER_CHANNEL),
        "values_batch": tuple(Problem(2, (n, 3, 1, 1)) for n in (2, 9, 17, 65, 257, 4097, 65536))
        + tuple(Problem(2, (n, 3, 1, 1), "full") for n in FULL_VALUES_PER_CHANNEL),
        "values_ncl": tuple(Problem(1, (2, 5, n // 2)) for n in (2, 16, 34, 130, 4096, 16384))
        + (Problem(1, (2, 3, 2**19), "full"),),
        "values_3d": tuple(Problem(3, (1, 2, 1, *_plane(n))) for n in (2, 17, 4097, 65536))
        + (Problem(3, (2, 2, 8, 256, 256), "full"),),
        # One value per channel: eval mode only (training raises).
        "single_value": (Problem(1, (1, 5)), Problem(2, (1, 9, 1, 1)), Problem(3, (1, 17, 1, 1, 1))),
        # Large planes for the magnitude specs (offsets, overflow): 2^14 values per channel by
        # default (past a "large plane" threshold), 2^20 on the full tier.
        "large_plane": (Problem(2, (1, 3, 128, 128)), Problem(2, (1, 3, 1024, 1024), "full")),
        "large_plane_channels": (Problem(2, (2, 65, 100, 100)),),
    }


BATCHES: dict[str, tuple[Problem, ...]] = _batches()


def problems(names: list[str] | tuple[str, ...]) -> list[Problem]:
    """The problems of the named batches, in order (a problem in two batches once)."""
    unknown = [n for n in names if n not in BATCHES]
    if unknown:
        raise ValueError(f"unknown shape batch {unknown}; batches: {', '.join(BATCHES)}")
    return list(dict.fromkeys(p for n in names for p in BATCHES[n]))
