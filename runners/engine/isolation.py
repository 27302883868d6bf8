"""Every backend in a worker process of its own, so that whatever it does costs one cell.

The test process keeps the oracle and the executor; each backend column gets a worker
(multiprocessing, forkserver where available: the server imports torch and numpy once and
forks each worker from it) that holds the backend and its modules (runners/engine/host.py).
`RemoteBackend` and `RemoteModule` follow the backend protocol, so the executor drives them
as it would drive the backend itself. A segfault, `os._exit`, `SystemExit`, a
`KeyboardInterrupt` raised by the backend, or a case that runs past its time limit raises a
`HostError` naming what happened; the worker is replaced before the next cell.
"""
from __future__ import annotations

import collections
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from multiprocessing.connection import Connection, wait
from typing import Any, Optional, Sequence

from bnconform.runners.backends import Column, torch_installed, uses_torch
from bnconform.runners.backends.protocol import Capabilities, Conventions, ModuleConfig
from bnconform.runners.engine import host, transport
from bnconform.runners.engine.contract import ContractViolation


class HostError(Exception):
    """The backend's worker failed in a way no BatchNorm result can express: the cell is an error.

    The message's first line says what happened; `detail` (a stack, a traceback) follows the
    place it happened in.
    """

    preposition = "during"

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail

    def at(self, where: str) -> str:
        return f"{self} {self.preposition} {where}" + (f"\n{self.detail}" if self.detail else "")


class WorkerCrashed(HostError):
    """The worker process died (a signal, or an exit without answering)."""


class WorkerTimedOut(HostError):
    """The backend used up the case's time limit; its worker was killed."""

    preposition = "in"


class BackendAborted(HostError):
    """The backend raised SystemExit, KeyboardInterrupt or another BaseException."""


class BackendBroken(HostError):
    """The backend cannot be run at all: it does not load, or breaks the protocol."""

    def at(self, where: str) -> str:
        return str(self) + (f"\n{self.detail}" if self.detail else "")


class BackendRaised(Exception):
    """An ordinary exception raised inside the backend, carried across by its type names and text.

    The executor compares exception types by name (`scenario.type_names`), so a backend's own
    `ValueError` subclass still counts as a ValueError here.
    """

    def __init__(self, info: dict[str, Any]) -> None:
        super().__init__(info["message"])
        self.type_names: list[str] = list(info["types"])
        self.remote_traceback: str = info["traceback"]


_CONTEXT: Optional[Any] = None


def _main_imports() -> list[str]:
    """What the forkserver preloads of this process's main module, so that a worker it forks finds
    it imported. multiprocessing runs the parent's __main__ again in every new process (as
    `__mp_main__`): for the `bnconform` script, or `python -m bnconform`, an import of the whole
    CLI, ~0.25 s per worker start, which a run that reruns many failures alone pays many times.
    A `-m` module by its name; a script (the console script) through the CLI it imports."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    found = [spec.name] if spec is not None and spec.name else []
    return found + [name for name in ("bnconform.runners.cli",) if name in sys.modules]


def _context(preload: Sequence[str] = ()) -> Any:
    """forkserver (fast, fork-safe workers forked from a server that has imported what the run's
    backends need once), or spawn where there is none. The first call fixes what is preloaded."""
    global _CONTEXT
    if _CONTEXT is None:
        if "forkserver" in multiprocessing.get_all_start_methods():
            _CONTEXT = multiprocessing.get_context("forkserver")
            _CONTEXT.set_forkserver_preload([*_main_imports(), "bnconform.runners.engine.host", *preload])
        else:  # pragma: no cover - Windows
            _CONTEXT = multiprocessing.get_context("spawn")
    return _CONTEXT


def warm_up(columns: Sequence[Column], bfloat16: bool = False) -> None:
    """Start the worker server now, preloading torch only when a column is built on it (and torch
    is installed), and ml_dtypes (a second to import) only when a selected case uses bfloat16, so
    that the server's imports overlap what this process does next and every worker forked from it
    starts with them. Only the built-in torch is preloaded: a plugin's module is imported in its
    own worker, where whatever its import does costs its own cells."""
    wants_torch = any(uses_torch(c.target) for c in columns if not c.problem)
    preload = ["torch"] if wants_torch and torch_installed() else []
    ctx = _context(preload + (["ml_dtypes"] if bfloat16 else []))
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _exit_text(code: Optional[int]) -> str:
    if code is None:
        return "worker stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"worker crashed: signal {-code} ({name})"
    return f"worker exited with status {code} without answering (sys.exit/os._exit in the backend?)"


class Host:
    """One worker process for one backend column, restarted after it fails, or when asked (a fresh
    worker per case, a failure rerun alone: runners/engine/order.py). It keeps which cells reached
    the current process, since a backend with global state answers according to them."""

    def __init__(self, column: Column, timeout: float) -> None:
        self.column = column
        self.timeout = timeout
        self.budget = timeout  # what the current cell has left of its time limit
        self.generation = 0  # bumped at every (re)start: modules of an older worker are gone
        self.fresh_cell = True
        self.label: Any = None  # what the current cell is (its case), for `history`
        self.history: list[Any] = []  # the cells that reached this worker process, in order
        self.retired: collections.Counter[str] = collections.Counter()  # counters() of workers restarted on request
        self.process: Optional[Any] = None
        self.conn: Optional[Connection] = None
        fd, self.log_path = tempfile.mkstemp(prefix="bnconform-worker-", suffix=".log")
        os.close(fd)
        self.info: dict[str, Any] = self._request(("probe",), limit=timeout, cell=False)

    # -- process ----------------------------------------------------------------------
    def _start(self) -> None:
        ctx = _context()
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=host.serve, args=(child, self.column.target, self.log_path), daemon=True,
                           name=f"bnconform-{self.column.name}")
        proc.start()
        child.close()
        self.process, self.conn = proc, parent
        self.generation += 1

    def _log_tail(self, lines: int = 25) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                text = f.read().strip()
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _discard(self, kill: bool = True) -> Optional[int]:
        """Stop the worker (if it still runs) and forget it; its exit code."""
        proc, self.process = self.process, None
        self.history = []  # the next worker starts with none
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if proc is None:
            return None
        if kill and proc.is_alive():
            proc.kill()
        proc.join(5)
        return proc.exitcode

    def restart(self) -> None:
        """A fresh worker for what comes next (started on the next request): nothing the earlier
        cells did to the backend's process state is left."""
        if self.process is not None and self.info.get("counts"):
            self.retired = self.counters()
        self._discard()

    def counters(self) -> collections.Counter[str]:
        """The backend's counters() summed over this column's workers (those restarted on request
        included; a crashed worker's are lost with it)."""
        total = collections.Counter(self.retired)
        if self.process is not None and self.info.get("counts"):
            try:
                total.update(self._request(("counters",), limit=self.timeout, cell=False))
            except (WorkerCrashed, WorkerTimedOut, BackendRaised, BackendBroken, ContractViolation):
                pass
        return total

    def close(self) -> None:
        self._discard()
        try:
            os.unlink(self.log_path)
        except OSError:
            pass

    # -- requests ---------------------------------------------------------------------
    def begin_cell(self, label: Any = None) -> None:
        self.budget = self.timeout
        self.fresh_cell = True
        self.label = label

    def _request(self, message: tuple[Any, ...], limit: Optional[float] = None, cell: bool = True) -> Any:
        if self.process is None:
            self._start()
            if cell:  # a restart answers the probe first, outside the cell's budget
                self._request(("probe",), limit=self.timeout, cell=False)
        assert self.conn is not None and self.process is not None
        limit = self.budget if limit is None else limit
        start = time.monotonic()
        try:
            self.conn.send(message)
        except (BrokenPipeError, ConnectionError, OSError):
            pass  # it died: the wait below sees its sentinel
        ready = wait([self.conn, self.process.sentinel], timeout=max(limit, 0.0))
        elapsed = time.monotonic() - start
        if cell:
            self.budget -= elapsed
        if not ready:
            raise self._timed_out()
        reply = None
        if self.conn in ready or self.conn.poll(0):
            try:
                reply = self.conn.recv()
            except EOFError:
                reply = None
            except Exception as exc:  # unpickling failed in this process
                raise BackendBroken(f"the backend answered {message[0]} with a value this process cannot read "
                                    f"({type(exc).__name__}: {exc})") from None
        if reply is None:
            code = self._discard()
            raise WorkerCrashed(_exit_text(code), self._log_tail())
        kind, value = reply
        if kind == "ok":
            return transport.unpack(value)
        if kind == "raised":
            raise BackendRaised(value)
        if kind == "contract":
            raise ContractViolation(value)
        if kind == "aborted":
            self._discard()
            raise BackendAborted(f"backend raised {value['types'][0]}" + (f": {value['message']}" if value["message"] else ""),
                                 value["traceback"])
        raise BackendBroken(value)  # "broken": an unpicklable return value

    def _timed_out(self) -> WorkerTimedOut:
        """Kill the worker, with the stack it was stuck in when faulthandler can give it."""
        if self.process is not None and self.process.is_alive() and hasattr(signal, "SIGUSR1"):
            try:
                os.kill(self.process.pid, signal.SIGUSR1)
                time.sleep(0.2)
            except OSError:
                pass
        self._discard()
        tail = self._log_tail()
        return WorkerTimedOut(f"timed out after {self.timeout:g} s", f"where the backend was:\n{tail}" if tail else "")

    def create(self, config: ModuleConfig) -> RemoteModule:
        first = self.fresh_cell and self.label is not None and self.history[-1:] != [self.label]
        try:
            handle = self._request(("create", config, self.fresh_cell))
        finally:  # the cell reached this worker, whatever create() did (a crash cleared the history)
            if first and self.process is not None:
                self.history.append(self.label)
        self.fresh_cell = False
        return RemoteModule(self, handle, self.generation)

    def call(self, handle: int, generation: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if generation != self.generation:
            raise WorkerCrashed("the module was lost with its worker")
        return self._request(("call", handle, method, transport.pack(args), transport.pack(kwargs)))


class RemoteModule:
    """A module living in the backend's worker; each protocol method is one round trip."""

    METHODS = frozenset(host.PROTOCOL_METHODS + host.OPTIONAL_METHODS)

    def __init__(self, owner: Host, handle: int, generation: int) -> None:
        self._owner, self._handle, self._generation = owner, handle, generation

    def __getattr__(self, name: str) -> Any:
        if name not in self.METHODS:
            raise AttributeError(name)

        def method(*args: Any, **kwargs: Any) -> Any:
            return self._owner.call(self._handle, self._generation, name, args, kwargs)

        return method


def _capabilities(provides: list[str], reasons: dict[str, str]) -> Capabilities:
    dims = frozenset(int(p.split("=", 1)[1]) for p in provides if p.startswith("dim="))
    dtypes = frozenset(p.split("=", 1)[1] for p in provides if p.startswith("dtype="))
    return Capabilities(dims=dims, dtypes=dtypes,
                        features=frozenset(p for p in provides if not p.startswith(("dim=", "dtype="))),
                        reasons=reasons)


class RemoteBackend:
    """The backend protocol over a Host: declarations from its probe, modules in its worker.

    A column that cannot run (its name taken, its backend not loading or breaking the
    protocol) declares everything, so that each of its cells reaches create() and errors
    with the reason rather than being skipped.
    """

    def __init__(self, column: Column, owner: Optional[Host], info: dict[str, Any], broken: Optional[str] = None,
                 absorbed_by: Optional[Host] = None) -> None:
        from bnconform.cases.requirements import FEATURES

        self.name = column.name
        self.host = owner
        self.absorbed_by = absorbed_by  # a trial worker's: the column's host, which takes its counters
        self.broken = broken or info.get("broken")
        self._version = info.get("version", "unknown")
        self._unavailable = None if self.broken else info.get("unavailable")
        self.manifest: Optional[str] = info.get("manifest")
        self.conventions = Conventions(**info["conventions"]) if info.get("conventions") else None
        self.capabilities = (Capabilities(features=frozenset(FEATURES)) if self.broken
                             else _capabilities(info.get("provides", []), info.get("reasons", {})))

    def version(self) -> str:
        return str(self._version)

    def available(self) -> Optional[str]:
        return self._unavailable

    def begin_cell(self, label: Any = None) -> None:
        if self.host is not None:
            self.host.begin_cell(label)

    def history(self) -> list[Any]:
        """The cells (their labels) that reached the current worker process, in order."""
        return list(self.host.history) if self.host is not None else []

    def counters(self) -> collections.Counter[str]:
        """What the backend counted (its optional counters()) over all of this column's workers."""
        return self.host.counters() if self.host is not None else collections.Counter()

    def close(self) -> None:
        """Stop a trial worker (Hosts.trial), its counters added to its column's."""
        if self.host is None:
            return
        if self.absorbed_by is not None:
            self.absorbed_by.retired.update(self.host.counters())
        self.host.close()
        self.host = None

    def restart(self) -> None:
        if self.host is not None:
            self.host.restart()

    def create(self, config: ModuleConfig) -> RemoteModule:
        if self.broken or self.host is None:
            raise BackendBroken(f"backend {self.name!r}: {self.broken}")
        return self.host.create(config)


class Hosts:
    """The workers of one test process, one per backend column, started on first use."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.backends: dict[str, RemoteBackend] = {}
        self.hosts: list[Host] = []

    def backend(self, column: Column) -> RemoteBackend:
        if column.name not in self.backends:
            self.backends[column.name] = self._start(column)
        return self.backends[column.name]

    def trial(self, column: Column) -> RemoteBackend:
        """A second worker of a running column, for reruns alone (runners/engine/order.py): the
        column's own worker, and what its earlier cells left in it (a warm compile cache), stays.
        The caller closes it (`RemoteBackend.close`), which adds its counters to the column's."""
        main = self.backends[column.name]
        owner = Host(column, self.timeout)
        return RemoteBackend(column, owner, owner.info, absorbed_by=main.host)

    def _start(self, column: Column) -> RemoteBackend:
        if column.problem:
            return RemoteBackend(column, None, {}, broken=column.problem)
        try:
            owner = Host(column, self.timeout)
        except HostError as exc:  # it crashed or hung while loading: it cannot run here
            return RemoteBackend(column, None, {"version": "unknown (failed to load)",
                                                "unavailable": f"could not be loaded: {exc.at('loading the backend')}"})
        self.hosts.append(owner)
        return RemoteBackend(column, owner, owner.info)

    def close(self) -> None:
        for owner in self.hosts:
            owner.close()
        self.hosts.clear()
        self.backends.clear()
