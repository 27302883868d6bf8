"""Live progress of a run: cells done per backend and outcome, elapsed time, time left.

`bnconform run/check/mutants` turn it on (`--progress auto`, their default); in a user's own
pytest session it is off unless asked for (`--bnconform-progress`), so that pytest's own
progress output is left alone. On a terminal it is a rich live display, redrawn in place; into
a pipe or a CI log it is one plain line per tenth of the cells (or per half minute, whichever
comes first). The session controller drives it (runners/engine/plugin.py), so it counts every
cell under pytest-xdist too, and stops it on Ctrl-C: it holds the display before starting it,
so that an interrupt at any moment finds a display to stop.
"""
from __future__ import annotations

import os
import sys
import time
from typing import IO, Any, Callable, Optional, Protocol

from bnconform.runners.reports.results import OUTCOMES

MODES = ("auto", "rich", "plain", "off")
ALWAYS = ("passed", "failed")  # columns shown even at zero; the others appear once they occur


def duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Tally:
    """Outcomes of the cells reported so far (a cell reported again counts once, as its latest)."""

    def __init__(self, total: int, columns: list[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.columns, self.clock = total, list(columns), clock
        self.started = clock()
        self.cells: dict[str, tuple[str, str]] = {}  # cell key -> (backend, outcome)

    def record(self, key: str, backend: str, outcome: str) -> None:
        self.cells[key] = (backend, outcome)
        if backend not in self.columns:
            self.columns.append(backend)

    @property
    def done(self) -> int:
        return len(self.cells)

    def elapsed(self) -> float:
        return self.clock() - self.started

    def remaining(self) -> Optional[float]:
        """Seconds left at the pace so far; None before the first cell."""
        if not self.done:
            return None
        return self.elapsed() / self.done * max(self.total - self.done, 0)

    def counts(self) -> dict[str, dict[str, int]]:
        out = {b: {o: 0 for o in OUTCOMES} for b in self.columns}
        for backend, outcome in self.cells.values():
            out[backend][outcome] = out[backend].get(outcome, 0) + 1
        return out

    def shown_outcomes(self) -> list[str]:
        seen = {o for _, o in self.cells.values()}
        return [o for o in OUTCOMES if o in ALWAYS or o in seen]

    def line(self) -> str:
        pct = 100 * self.done // self.total if self.total else 100
        left = self.remaining()
        eta = f", about {duration(left)} left" if left is not None and self.done < self.total else ""
        per_backend = "; ".join(
            f"{b}: " + (", ".join(f"{n} {o}" for o, n in c.items() if n) or "-") for b, c in self.counts().items())
        return (f"bnconform: {self.done}/{self.total} cells ({pct}%), {duration(self.elapsed())} elapsed{eta}"
                f" | {per_backend}")


class Display(Protocol):
    tally: Tally

    def start(self) -> None: ...

    def update(self) -> None: ...

    def stop(self, interrupted: bool = False) -> None: ...


class PlainDisplay:
    """One line per tenth of the cells, or after `every` seconds with news, and a last one."""

    def __init__(self, tally: Tally, write_line: Callable[[str], None], every: float = 30.0) -> None:
        self.tally, self.write_line, self.every = tally, write_line, every
        self.last_done, self.last_time = 0, tally.clock()

    def start(self) -> None:
        pass  # its first line comes with the first tenth

    def update(self) -> None:
        t = self.tally
        tenth_crossed = 10 * t.done // max(t.total, 1) > 10 * self.last_done // max(t.total, 1)
        if t.done > self.last_done and (tenth_crossed or t.clock() - self.last_time >= self.every):
            self._emit()

    def _emit(self, suffix: str = "") -> None:
        self.last_done, self.last_time = self.tally.done, self.tally.clock()
        self.write_line(self.tally.line() + suffix)

    def stop(self, interrupted: bool = False) -> None:
        if interrupted:
            self._emit(" (interrupted)")
        elif self.tally.done != self.last_done:
            self._emit()


STYLES = {"passed": "green", "deviates": "yellow", "failed": "bold red", "error": "bold red", "skipped": "dim",
          "xfailed": "magenta", "xpassed": "bold magenta"}


class RichDisplay:
    """A rich live display: a bar with elapsed and remaining time over a table of counts per backend.

    rich redraws it from a thread of its own, so it writes to a duplicate of the terminal's file
    descriptor taken before any case runs: pytest's capture of a running test (which redirects
    file descriptor 1) cannot swallow it, and it never replaces sys.stdout.
    """

    def __init__(self, tally: Tally, console: Any) -> None:
        from rich.live import Live

        self.tally, self.console = tally, console
        self.live = Live(console=console, get_renderable=self._render, refresh_per_second=4, transient=False,
                         redirect_stdout=False, redirect_stderr=False)

    def start(self) -> None:
        try:
            self.live.start(refresh=True)
        except BaseException:  # Ctrl-C as it starts: the cursor comes back now, the rest with stop()
            self.live.stop()
            raise

    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        t = self.tally
        left = t.remaining()
        head = Table.grid(padding=(0, 1))
        head.add_row(Text("bnconform", style="bold"), ProgressBar(total=max(t.total, 1), completed=t.done, width=40),
                     Text(f"{t.done}/{t.total} cells"), Text(f"elapsed {duration(t.elapsed())}"),
                     Text(f"ETA {duration(left)}" if left is not None and t.done < t.total else ""))
        outcomes = t.shown_outcomes()
        table = Table(box=None, padding=(0, 1), show_edge=False)
        table.add_column("backend")
        for o in outcomes:
            table.add_column(o, justify="right", style=STYLES.get(o, ""))
        for backend, counts in t.counts().items():
            table.add_row(backend, *(str(counts[o]) if counts[o] else "·" for o in outcomes))
        return Group(head, table)

    def update(self) -> None:
        pass  # redrawn by rich's own thread, four times a second

    def stop(self, interrupted: bool = False) -> None:
        if self.console.file.closed:
            return
        self.live.stop()
        if interrupted:
            self.console.print("[bold]bnconform: interrupted[/]")
        file = self.console.file
        if getattr(file, "bnconform_owned", False):
            file.close()


def _terminal_file(stream: IO[str]) -> Optional[IO[str]]:
    """A writable duplicate of `stream`'s file descriptor, or None when it has none."""
    try:
        fd = os.dup(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    file = open(fd, "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8", errors="replace")
    file.bnconform_owned = True  # type: ignore[attr-defined]
    return file


def create(mode: str, total: int, columns: list[str], write_line: Callable[[str], None], verbose: bool = False,
           stream: Optional[IO[str]] = None) -> Optional[Display]:
    """The display `mode` asks for on `stream` (default: sys.stdout), not started yet; None for off.

    auto is rich on a terminal and plain lines elsewhere; under -v (a line per cell already)
    the live display would fight pytest's lines, so it is plain lines there too.
    """
    if mode == "off" or total <= 0:
        return None
    tally = Tally(total, columns)
    stream = stream or sys.stdout
    if mode in ("auto", "rich") and not verbose:
        file = _terminal_file(stream)
        if file is not None and (mode == "rich" or file.isatty()):
            from rich.console import Console

            stream.flush()
            return RichDisplay(tally, Console(file=file, force_terminal=True))
        if file is not None:
            file.close()
    return PlainDisplay(tally, write_line)
