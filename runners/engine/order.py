"""Order-dependent failures: a cell that fails only because of the cells its worker ran before.

A backend column keeps one worker process across many cells, so a backend with global state
(compile caches, RNG, thread pools, a module-level flag) can fail a cell only after certain
others. Its plain `reproduce:` line would then pass when run, which is a lie. The engine
(Cells.run) reruns such a failure alone in a fresh worker; when it passes there, the cells
that ran before it are bisected to the smallest prefix that still makes it fail, and the
message and reproduce line name that prefix (run with `--keep-order`). `fails(prefix)` is one
trial: a fresh worker runs the prefix (outcomes ignored), then the case.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generic, Optional, Sequence, TypeVar

T = TypeVar("T")
NOTE = "order-dependent"  # how the first line of such a cell's message starts
# The last line of every other failure's message, when failures are rerun alone: its failure is its own.
ALONE_TOO = "not order-dependent: it fails alone in a fresh worker too"
RAN_FIRST = "not order-dependent: it was the first cell of its worker"


def trial_bound(history: int) -> int:
    """Trials allowed for one cell (the alone rerun included): 2*log2(H) + 10."""
    return 2 * math.ceil(math.log2(max(history, 1))) + 10


@dataclass(frozen=True)
class Finding(Generic[T]):
    history: tuple[T, ...]  # the cells its worker ran before it, in order
    culprits: tuple[T, ...]  # the smallest prefix found that still makes it fail; () if none did
    trials: int
    bound_hit: bool  # the trial bound stopped the search: the prefix may not be the smallest


def investigate(history: Sequence[T], fails: Callable[[Sequence[T]], bool],
                bound: Optional[int] = None) -> Optional[Finding[T]]:
    """None when the case fails alone too (its failure is its own), else what the trials found.

    The culprits are found front to back: the shortest tail of the history that still makes it
    fail starts with one (binary search); it is kept, and the cells after it are searched the same
    way until the culprits found make it fail on their own. One culprit costs about log2(H)
    trials; the bound (trial_bound by default) stops the search, the prefix then longer."""
    history = tuple(history)
    bound, trials = bound or trial_bound(len(history)), 0

    def trial(prefix: Sequence[T]) -> bool:
        nonlocal trials
        trials += 1
        return fails(prefix)

    if trial(()):
        return None
    needed: tuple[T, ...] = ()
    rest, confirmed = history, False  # needed + rest makes it fail (as the run showed, once confirmed)
    while rest:
        lo, hi = 0, len(rest)  # needed + the last lo of rest passes, + the last hi fails
        while hi - lo > 1 and trials < bound:
            mid = (lo + hi) // 2
            if trial(needed + rest[-mid:]):
                hi, confirmed = mid, True
            else:
                lo = mid
        if hi - lo > 1 or (not confirmed and trials >= bound):
            return Finding(history, needed + rest if confirmed else (), trials, True)
        if not confirmed:  # the whole history, as it ran
            if not trial(history):
                return Finding(history, (), trials, False)  # no prefix makes it fail: flaky?
            confirmed = True
        needed, rest = needed + (rest[-hi],), rest[len(rest) - hi + 1:]
        if not rest:
            break
        if trials >= bound:
            return Finding(history, needed + rest, trials, True)
        if trial(needed):
            break
    return Finding(history, needed, trials, False)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def headline(finding: Finding[str]) -> str:
    """The lines that open the cell's message (case ids in the finding)."""
    before = len(finding.history)
    if not finding.culprits:
        bound = f"; the bound of {finding.trials} trials was hit" if finding.bound_hit else ""
        return (f"{NOTE}: passes alone in a fresh worker; could not reproduce with any prefix (flaky?){bound}; "
                f"it failed after {_plural(before, 'earlier cell')} in the same worker: {', '.join(finding.history)}")
    culprits = finding.culprits
    head = (f"{NOTE}: passes alone in a fresh worker; fails after {_plural(len(culprits), 'earlier cell')} "
            f"in the same worker: {', '.join(culprits)}")
    how = f"(bisected from the {_plural(before, 'cell')} that ran before it in that worker, in {_plural(finding.trials, 'trial')}"
    if finding.bound_hit:
        how += f"; the bound of {finding.trials} trials was hit: a smaller prefix may exist"
    return f"{head}\n{how})"


def retell(message: str, finding: Finding[str], reproduce: str) -> str:
    """The cell's message with the finding first and, when a prefix reproduces it, its own
    `reproduce:` line replaced by `reproduce` (the prefix in order, with --keep-order)."""
    lines = message.splitlines()
    if finding.culprits:
        lines = [f"reproduce: {reproduce}" if line.startswith("reproduce: ") else line for line in lines]
    return "\n".join([headline(finding), *lines])
