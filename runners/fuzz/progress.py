"""Live progress of a fuzz run, drawn by `run`'s displays (runners/reports/progress.py).

The budget plays the part of the cells: on a terminal a rich bar over the seconds of the budget
with the scenarios, steps and rate beside it; in a pipe or a CI log a plain line per tenth of
the budget; nothing with `--progress off`.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional

from bnconform.runners.fuzz.engine import Stats
from bnconform.runners.reports.progress import Display, PlainDisplay, RichDisplay, duration


class FuzzTally:
    """What the displays read: `done` and `total` are seconds of the budget."""

    def __init__(self, stats: Stats, budget: float, backend: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.stats, self.budget, self.backend, self.clock = stats, budget, backend, clock
        self.total = max(1, round(budget))
        self.started = stats.started
        self.shrinking = False

    @property
    def done(self) -> int:
        return min(self.total, int(self.elapsed()))

    def elapsed(self) -> float:
        return self.clock() - self.started

    def remaining(self) -> Optional[float]:
        return max(self.budget - self.elapsed(), 0.0)

    def summary(self) -> str:
        s = self.stats
        state = f"shrinking a failure (found after {s.found_at} scenarios)" if self.shrinking else "no failure yet"
        return (f"{s.scenarios} scenarios ({s.rate():.1f}/s), {s.steps} steps on {self.backend}: {state}")

    def line(self) -> str:
        pct = 100 * self.done // self.total
        return f"bnconform fuzz: {duration(self.elapsed())} of {duration(self.budget)} ({pct}%), {self.summary()}"


class FuzzRichDisplay(RichDisplay):
    """`run`'s live display with the budget for a bar and the search's counts beside it."""

    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        t = self.tally
        assert isinstance(t, FuzzTally)
        head = Table.grid(padding=(0, 1))
        head.add_row(Text("bnconform fuzz", style="bold"), ProgressBar(total=t.total, completed=t.done, width=40),
                     Text(f"{duration(t.elapsed())} of {duration(t.budget)}"))
        return Group(head, Text(t.summary(), style="bold red" if t.shrinking else ""))


def create(mode: str, tally: FuzzTally, stream: Optional[Any] = None) -> Optional[Display]:
    """The display `mode` asks for (auto: rich on a terminal, plain lines otherwise), not started."""
    if mode == "off":
        return None
    stream = stream or sys.stdout
    if mode == "rich" or (mode == "auto" and getattr(stream, "isatty", lambda: False)()):
        from rich.console import Console

        return FuzzRichDisplay(tally, Console(file=stream, force_terminal=True))  # type: ignore[arg-type]

    def write_line(text: str) -> None:
        print(text, file=stream, flush=True)

    return PlainDisplay(tally, write_line)  # type: ignore[arg-type]
