"""Live progress: plain lines into a pipe, a rich display on a terminal, every cell counted under
pytest-xdist too, the terminal given back on Ctrl-C, and nothing in a user's own pytest session."""
from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from rich.console import Console

from bnconform.runners.reports.progress import PlainDisplay, RichDisplay, Tally, create, duration
from tests.helpers import ROOT, bnconform, ctrl_c_reaches

LINE = re.compile(r"^bnconform: (\d+)/(\d+) cells \((\d+)%\), .* elapsed.*\| (.*)$", re.M)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tally_counts_each_cell_once_and_estimates_what_is_left() -> None:
    clock = Clock()
    tally = Tally(4, ["torch", "mine"], clock)
    assert tally.remaining() is None
    clock.now += 10
    tally.record("a", "torch", "passed")
    tally.record("b", "mine", "error")
    tally.record("b", "mine", "failed")  # reported again (setup, then call): its latest outcome
    assert tally.done == 2 and tally.remaining() == pytest.approx(10.0)
    assert tally.counts()["mine"]["failed"] == 1 and tally.counts()["mine"]["error"] == 0
    assert tally.shown_outcomes() == ["passed", "failed"]
    assert "2/4 cells (50%), 10 s elapsed, about 10 s left | torch: 1 passed; mine: 1 failed" in tally.line()
    assert duration(3725) == "1 h 02 min" and duration(65) == "1 min 05 s"


def test_plain_lines_every_tenth_or_after_a_while_and_a_last_one() -> None:
    clock, lines = Clock(), []
    display = PlainDisplay(Tally(100, ["b"], clock), lines.append, every=30.0)
    for i in range(25):
        display.tally.record(str(i), "b", "passed")
        display.update()
    assert [line.split(" cells")[0] for line in lines] == ["bnconform: 10/100", "bnconform: 20/100"]
    clock.now += 31  # half a minute without a tenth: a line anyway, with the news since the last
    display.update()
    assert len(lines) == 3 and lines[-1].startswith("bnconform: 25/100")
    clock.now += 31
    display.update()  # no news: no line
    display.tally.record("x", "b", "failed")
    display.update()
    assert len(lines) == 4 and lines[-1].startswith("bnconform: 26/100")
    display.tally.record("y", "b", "passed")
    display.update()
    assert len(lines) == 4
    display.stop(interrupted=True)
    assert lines[-1].startswith("bnconform: 27/100") and lines[-1].endswith("(interrupted)")


def test_rich_display_draws_counts_bar_and_times() -> None:
    file = io.StringIO()
    clock = Clock()
    tally = Tally(4, ["torch", "mine"], clock)
    display = RichDisplay(tally, Console(file=file, force_terminal=True, width=120))
    display.start()
    clock.now += 3
    tally.record("a", "torch", "passed")
    tally.record("b", "mine", "xfailed")
    display.live.refresh()
    display.stop()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", file.getvalue())
    assert "2/4 cells" in text and "elapsed 3 s" in text and "ETA 3 s" in text
    assert re.search(r"backend\s+passed\s+failed\s+xfailed", text) and re.search(r"mine\s+·\s+·\s+1", text)
    assert "\x1b[?25l" in file.getvalue() and file.getvalue().endswith("\x1b[?25h")  # the cursor given back


def test_the_mode_chooses_plain_lines_into_a_pipe_and_nothing_when_off(tmp_path: Path) -> None:
    lines: list[str] = []
    with open(tmp_path / "out.txt", "w") as stream:
        assert isinstance(create("auto", 10, ["b"], lines.append, stream=stream), PlainDisplay)
        assert isinstance(create("rich", 10, ["b"], lines.append, verbose=True, stream=stream), PlainDisplay)
        assert create("off", 10, ["b"], lines.append, stream=stream) is None
        forced = create("rich", 10, ["b"], lines.append, stream=stream)
        assert isinstance(forced, RichDisplay)
        forced.start()
        forced.stop()
    assert "\x1b[?25h" in (tmp_path / "out.txt").read_text()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_plain_progress_in_a_pipe_counts_every_cell(workers: str, tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "torch", "--backend", "biased=mutant:biased_running_var", "--family", "bessel",
                             "--family", "eps", "-n", workers, out=tmp_path)
    assert proc.returncode == 1 and report is not None
    lines = LINE.findall(proc.stdout)
    cells = len(report["results"])
    assert 5 <= len(lines) <= 11 and all(int(total) == cells for _, total, _, _ in lines)
    assert [int(done) for done, *_ in lines] == sorted(int(done) for done, *_ in lines)
    done, _, pct, counts = lines[-1]
    failed = sum(r["outcome"] == "failed" for r in report["results"])
    assert int(done) == cells and pct == "100" and counts.endswith(f"biased: {cells // 2 - failed} passed, {failed} failed")
    assert not re.search(r"^[.FsxX]+ *(\[ *\d+%\])?$", proc.stdout, flags=re.M)  # the -q dots gave way to the lines


def test_off_leaves_pytests_own_progress(tmp_path: Path) -> None:
    proc, _ = bnconform("--backend", "torch", "--family", "bessel", "--progress", "off", out=tmp_path)
    assert proc.returncode == 0 and not LINE.search(proc.stdout) and re.search(r"^\.{16}\s+\[100%\]", proc.stdout, re.M)


def test_a_users_pytest_session_has_no_progress_unless_asked(tmp_path: Path) -> None:
    (tmp_path / "test_bn.py").write_text("from bnconform.testing import test_conformance  # noqa: F401\n")
    base = [sys.executable, "-m", "pytest", str(tmp_path / "test_bn.py"), "-p", "no:cacheprovider", "--rootdir",
            str(tmp_path), "--bnconform-backend", "numpy", "--bnconform-family", "bessel", "--bnconform-out",
            str(tmp_path / "out")]
    default = subprocess.run(base, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    asked = subprocess.run(base + ["--bnconform-progress", "auto"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)
    assert default.returncode == asked.returncode == 0, default.stdout[-2000:] + asked.stdout[-2000:]
    assert not LINE.search(default.stdout) and "test_bn.py ................" in default.stdout
    assert LINE.search(asked.stdout)


def _in_terminal(args: list[str], interrupt_after: float | None = None) -> tuple[int, str]:
    """Run `python -m bnconform ARGS` with a pseudo-terminal for its stdin, stdout and stderr; with
    `interrupt_after`, press Ctrl-C that many seconds after the display first shows."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "bnconform", *args], cwd=ROOT, stdin=secondary, stdout=secondary,
                            stderr=secondary, env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"},
                            start_new_session=True, preexec_fn=ctrl_c_reaches)
    os.close(secondary)
    output, began, shown, interrupted = b"", time.monotonic(), 0.0, False
    while True:
        shown = shown or (time.monotonic() if b"cells" in output else 0.0)
        if interrupt_after is not None and not interrupted and shown and time.monotonic() - shown >= interrupt_after:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground group
            interrupted = True
        ready, _, _ = select.select([primary], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
        if time.monotonic() - began > 300:
            proc.kill()
            pytest.fail("bnconform did not finish in a terminal")
    os.close(primary)
    return proc.wait(), output.decode(errors="replace")


def test_a_terminal_gets_the_live_display(tmp_path: Path) -> None:
    code, output = _in_terminal(["run", "--backend", "torch", "--backend", "biased=mutant:biased_running_var",
                                 "--family", "bessel", "--out", str(tmp_path)])
    assert code == 1
    assert "\x1b[?25l" in output and "\x1b[?25h" in output  # rich hid the cursor and gave it back
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)
    assert "32/32 cells" in plain and re.search(r"biased\s+·\s+16", plain)
    assert not LINE.search(plain)


@pytest.mark.parametrize("after", [0.0, 1.5], ids=["as-it-shows", "mid-run"])
def test_ctrl_c_stops_the_display_and_gives_the_terminal_back(after: float, tmp_path: Path) -> None:
    code, output = _in_terminal(["run", "--backend", "torch", "--backend", "tests.broken_backends:slow",
                                 "--family", "bessel", "--out", str(tmp_path)], interrupt_after=after)
    assert code == 2, output[-3000:]
    assert output.rfind("\x1b[?25h") > output.rfind("\x1b[?25l")  # the cursor shown again after it was hidden
    assert "bnconform: interrupted" in output
