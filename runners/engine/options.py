"""Every bnconform option, declared once and shared by the pytest plugin and the CLI.

As pytest-benchmark does, one table feeds both front ends: pytest gets `--bnconform-NAME`
(prefixed, because the plugin is registered in every pytest session of the environment and
must not collide with other plugins' options), `bnconform COMMAND` gets `--NAME`, and
`pytest_args()` turns a parsed command line into the pytest arguments it stands for.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from bnconform.runners.reports.progress import MODES as PROGRESS_MODES

if TYPE_CHECKING:
    import pytest

PREFIX = "bnconform-"
RUN, CHECK, MUTANTS, BENCH = "run", "check", "mutants", "bench"
FUZZ = "fuzz"  # property-based scenarios (runners/fuzz/)


@dataclass(frozen=True)
class Option:
    name: str
    help: str
    commands: frozenset[str]
    kind: str = "append"  # append (repeatable value), value, flag
    metavar: Optional[str] = None
    default: Any = None
    type: Optional[Callable[[str], Any]] = None
    path: bool = False  # a file or directory: made absolute before it reaches pytest
    pytest: bool = True  # False: a command-line option only (translated by its command)
    short: Optional[str] = None
    cli_default: Any = None  # the command line's default where it differs from pytest's
    command_defaults: tuple[tuple[str, Any], ...] = ()  # (command, default) where one command's differs


    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def pytest_dest(self) -> str:
        return (PREFIX + self.name).replace("-", "_")

    def kwargs(self, cli: bool = False) -> dict[str, Any]:
        if self.kind == "flag":
            return {"action": "store_true", "default": False, "help": self.help}
        out: dict[str, Any] = {"metavar": self.metavar, "help": self.help}
        if self.kind == "append":
            out.update(action="append", default=[])
        else:
            out["default"] = self.cli_default if cli and self.cli_default is not None else self.default
        if self.type is not None:
            out["type"] = self.type
        return out


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _tier(text: str) -> str:
    from bnconform.cases.shapes import TIERS

    if text not in TIERS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(TIERS)}, got {text}")
    return text


def _progress_mode(text: str) -> str:
    if text not in PROGRESS_MODES:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(PROGRESS_MODES)}, got {text}")
    return text


SELECT = frozenset({RUN, CHECK, MUTANTS})
OPTIONS: tuple[Option, ...] = (
    Option("backend", "backend to test (repeatable): a built-in, framework or plugin name, package.module:attr, "
           "torch-module:package.module:factory, mutant:NAME, or ALIAS=any of those to run it under another "
           "column name. Default: the built-in backends that can run here", frozenset({RUN, CHECK, BENCH, FUZZ}),
           metavar="NAME"),
    Option("specs", "extra spec directory, added to the built-in specs (repeatable)", SELECT, metavar="DIR", path=True),
    Option("case", "only cases whose id equals ID or matches it as a glob (repeatable)", SELECT, metavar="ID"),
    Option("exclude", "leave out cases whose id equals ID or matches it as a glob (repeatable)", SELECT, metavar="ID"),
    Option("family", "only this family (repeatable)", SELECT, metavar="NAME"),
    Option("tier", "the shapes library's tier: default (every block boundary at moderate size) or full (also the "
           "large sizes: planes past 10^6 values, 100x100 planes of 65 channels; docs/spec-format.md)", SELECT,
           kind="value", metavar="TIER", default="default", type=_tier),
    Option("shard", "run only shard I of N of the selected cases (after the filters): case k of the selection goes to "
           "shard (k mod N)+1, the same split on every machine; bnconform merge puts the N reports together",
           frozenset({RUN, CHECK}), kind="value", metavar="I/N"),
    Option("manifest", "expected-deviation manifest (YAML): matching failures are xfailed (repeatable)",
           frozenset({RUN, CHECK}), metavar="FILE", path=True),
    Option("allow-unavailable", "run even if a requested backend cannot run here (not installed, no device, fails to "
           "import): its cells read skipped with the reason, and the summary says so. Without it, exit 2",
           frozenset({RUN, CHECK}), kind="flag"),
    Option("strict", "a manifest entry whose case passes (xpassed) fails the run", frozenset({RUN, CHECK}), kind="flag"),
    Option("timeout", "seconds a backend may spend on one case (its calls, not the oracle's) before its worker "
           "process is killed and the cell reads error (default 120)", SELECT | {FUZZ}, kind="value", metavar="SECONDS",
           default=120.0, type=_positive),
    Option("out", "directory for the reports; checked and cleared of this run's report files before any case runs "
           "(default: reports; fuzz: reports/fuzz)", frozenset({RUN, CHECK, MUTANTS, BENCH, FUZZ}), kind="value",
           metavar="DIR", default="reports", path=True, command_defaults=((FUZZ, "reports/fuzz"),)),
    Option("html", "also write a self-contained HTML page (conformance.html, or timing.html for bench)",
           frozenset({RUN, BENCH}), kind="flag"),
    Option("junit", "also write JUnit XML of the cells to FILE: one testcase per cell, a declared deviation and an "
           "expected failure each a skipped testcase of its own type (docs/ci.md)", frozenset({RUN, CHECK}),
           kind="value", metavar="FILE", path=True),
    Option("progress", "live progress: auto (a live display on a terminal, a plain line per tenth of the cells "
           "otherwise; fuzz: per tenth of its budget), rich, plain or off. Default: auto for bnconform, off in a pytest "
           "session", SELECT | {FUZZ},
           kind="value", metavar="MODE", default="off", cli_default="auto", type=_progress_mode),
    Option("shape", "bench: only this shape, e.g. 4x8x4x4 (repeatable)", frozenset({BENCH}), metavar="NxCx..."),
    Option("threads", "bench: threads for every backend (default: torch's)", frozenset({BENCH}), kind="value",
           metavar="N", default=0, type=int),
    Option("sweep", "bench: also time the kernels against tensor size (4 KB to 400 MB) and thread count (1 to the "
           "CPUs), drawn as charts in timing.html", frozenset({BENCH}), kind="flag"),
    Option("max-time", "bench: seconds of interleaved rounds per shape and phase, every backend in both modes, "
           "beyond its 10 rounds (default 2)", frozenset({BENCH}), kind="value", metavar="S", default=2.0,
           type=_positive),
    Option("keep-order", "run the cases in the order of the --case options (each pattern's matches in turn, a case "
           "once), in one process per backend column: how an order-dependent failure's reproduce line runs its "
           "prefix before it. Not with -n/--workers", SELECT, kind="flag"),
    Option("fresh-worker", "a fresh worker process per case for this backend column (repeatable; a column name, or "
           "'all'): for backends with global state (compile caches, RNG, thread pools); costs a worker start, and the "
           "backend's import, per case", SELECT, metavar="NAME"),
    Option("no-rerun-alone", "do not rerun a cell that fails after other cells of its worker alone in a fresh worker "
           "(nor bisect them): saves a worker start and a rerun per such failure, but its reproduce line may then not "
           "reproduce it. Always so for mutants (their score counts kills, not reproduce lines)",
           frozenset({RUN, CHECK}), kind="flag"),
    Option("budget", "fuzz: seconds to search for a failing scenario (default 60); shrinking a failure takes up to "
           "half as long again (at least 15 s)", frozenset({FUZZ}), kind="value", metavar="SECONDS", default=60.0,
           pytest=False),
    Option("seed", "fuzz: the seed of the search, for a repeatable run (default: a new one, printed)", frozenset({FUZZ}),
           kind="value", metavar="N", pytest=False),
    Option("workers", "pytest-xdist worker processes for the cases: a number or 'auto' (default 0: the cases run in "
           "this process; every backend still runs in its own worker process)", SELECT, kind="value", metavar="N",
           default="0", pytest=False, short="-n"),
    Option("verbose", "one line per cell", SELECT, kind="flag", pytest=False, short="-v"),
)


def add_pytest_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("bnconform", "BatchNorm conformance (bnconform; see docs/ci.md)")
    for opt in OPTIONS:
        if opt.pytest:
            group.addoption(f"--{PREFIX}{opt.name}", dest=opt.pytest_dest, **opt.kwargs())


def add_cli_options(parser: argparse.ArgumentParser, command: str) -> None:
    for opt in OPTIONS:
        if command in opt.commands:
            flags = [f"--{opt.name}"] + ([opt.short] if opt.short else [])
            kwargs = opt.kwargs(cli=True)
            if command in dict(opt.command_defaults):
                kwargs["default"] = dict(opt.command_defaults)[command]
            parser.add_argument(*flags, dest=opt.dest, **kwargs)


def _absolute(value: str) -> str:
    return str(Path(value).expanduser().resolve())


def pytest_args(args: argparse.Namespace, command: str) -> list[str]:
    """The `--bnconform-*` arguments a parsed `bnconform COMMAND` line stands for."""
    out: list[str] = []
    for opt in OPTIONS:
        if command not in opt.commands or not opt.pytest:
            continue
        value = getattr(args, opt.dest)
        flag = f"--{PREFIX}{opt.name}"
        if opt.kind == "flag":
            out += [flag] if value else []
        elif opt.kind == "append":
            for v in value:
                out += [flag, _absolute(v) if opt.path else str(v)]
        elif value is not None:
            out += [flag, _absolute(value) if opt.path else str(value)]
    return out


@dataclass
class Settings:
    """The options as the engine reads them, whichever front end set them."""

    backend: list[str] = field(default_factory=list)
    specs: list[str] = field(default_factory=list)
    case: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    family: list[str] = field(default_factory=list)
    tier: str = "default"
    shard: Optional[str] = None  # "I/N" (runners/engine/shards.py)
    manifest: list[str] = field(default_factory=list)
    strict: bool = False
    allow_unavailable: bool = False
    timeout: float = 120.0
    out: str = "reports"
    html: bool = False
    junit: Optional[str] = None
    progress: str = "off"
    shape: list[str] = field(default_factory=list)
    threads: int = 0
    sweep: bool = False
    max_time: float = 2.0
    keep_order: bool = False
    fresh_worker: list[str] = field(default_factory=list)
    no_rerun_alone: bool = False

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        return cls(**{o.dest: config.getoption(o.pytest_dest) for o in OPTIONS if o.pytest})

    @classmethod
    def from_args(cls, args: argparse.Namespace, command: str) -> Settings:
        names = {o.dest for o in OPTIONS if o.pytest and command in o.commands}
        return cls(**{k: getattr(args, k) for k in names})
