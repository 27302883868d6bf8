"""Interleaved timing: every candidate of a cell timed once per round, in a shuffled order.

Drift on a shared machine (another process, the frequency governor, the page cache) then hits
all candidates of a round alike, and a ratio is taken round by round rather than between two
runs minutes apart. pytest-benchmark times one callable per test and pyperf one benchmark per
worker process; neither interleaves candidates, hence this small loop. Its statistics are
pytest-benchmark's (`Stats`), so timing.json keeps that schema.
"""
from __future__ import annotations

import gc
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pytest_benchmark.stats import Stats

# A percentile bootstrap of a median needs more than a handful of rounds to cover its 95%.
MIN_ROUNDS = 10
MAX_ROUNDS = 200
# A sample is at least this long: a tiny call is repeated `loops` times per round, so that the
# clock's resolution and the loop's own overhead stay below 1% of a sample.
MIN_SAMPLE_S = 2e-4


@dataclass
class Timings:
    """Per candidate: seconds per call in each round (index = round), and calls per sample."""

    rounds: dict[str, list[float]] = field(default_factory=dict)
    loops: dict[str, int] = field(default_factory=dict)

    def stats(self, name: str) -> dict[str, Any]:
        s = Stats()
        for t in self.rounds[name]:
            s.update(t)
        return {**s.as_dict(), "loops": self.loops[name], "data": list(self.rounds[name])}


def interleaved(candidates: dict[str, Callable[[], Any]], max_time: float, min_rounds: int = MIN_ROUNDS,
                seed: int = 0) -> Timings:
    """Time each candidate once per round, rounds until `max_time` seconds (at least `min_rounds`)."""
    out = Timings()
    for name, fn in candidates.items():
        fn()  # warm-up: first-touch page faults, thread pools, lazy initialisation
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-9)
        out.loops[name] = max(1, math.ceil(MIN_SAMPLE_S / once))
        out.rounds[name] = []
    order, rng = list(candidates), random.Random(seed)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        while len(out.rounds[order[0]]) < min_rounds or (
                time.perf_counter() - start < max_time and len(out.rounds[order[0]]) < MAX_ROUNDS):
            rng.shuffle(order)
            for name in order:
                fn, loops = candidates[name], out.loops[name]
                t0 = time.perf_counter()
                for _ in range(loops):
                    fn()
                out.rounds[name].append((time.perf_counter() - t0) / loops)
    finally:
        if was_enabled:
            gc.enable()
    return out
