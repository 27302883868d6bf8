"""The backend's side of isolation: a worker process that holds one backend and its modules.

The test process (runners/engine/isolation.py) sends protocol calls; this loop performs them
and answers with the value, or with what the backend raised. It never runs the oracle, so
nothing a backend does to process state (numpy error state, torch's default dtype, threads
or RNG) reaches the reference or another backend. Ctrl-C is ignored here: it belongs to the
test process, so a KeyboardInterrupt seen here was raised by the backend itself.
"""
from __future__ import annotations

import dataclasses
import faulthandler
import os
import signal
import traceback
import warnings
from multiprocessing.connection import Connection
from typing import Any, Optional

from bnconform.runners.backends import BackendLoadError, NotABackend, load
from bnconform.runners.backends.protocol import Capabilities, Conventions
from bnconform.runners.engine import contract, transport


def exception_info(exc: BaseException) -> dict[str, Any]:
    """What crosses the process boundary for an exception: type names (its MRO), text, traceback."""
    try:
        message = str(exc)
    except Exception:  # an exception whose __str__ raises
        message = "<unprintable>"
    return {
        "types": [cls.__name__ for cls in type(exc).__mro__],
        "message": message,
        "traceback": "".join(traceback.format_exception(exc)[-4:]).rstrip(),
    }


def describe(backend: Any) -> dict[str, Any]:
    """The backend's declarations, checked against the protocol (a breach is its `broken` reason)."""
    info: dict[str, Any] = {"version": "", "provides": [], "reasons": {}, "conventions": None, "manifest": None,
                            "unavailable": None, "broken": None}
    try:
        info["version"] = str(backend.version())
    except Exception as exc:
        info["version"] = f"unknown (version() raised {type(exc).__name__}: {exc})"
    caps = getattr(backend, "capabilities", None)
    if not isinstance(caps, Capabilities):
        info["broken"] = f"capabilities must be a bnconform.Capabilities, got {type(caps).__name__} {caps!r:.80}"
    else:
        try:
            provides = sorted(caps.provides())
            if not all(isinstance(p, str) for p in provides):
                raise TypeError("provides() must return strings")
            info["provides"] = provides
            info["reasons"] = {str(k): str(v) for k, v in dict(caps.reasons).items()}
        except Exception as exc:
            info["broken"] = f"capabilities.provides() or .reasons failed: {type(exc).__name__}: {exc}"
    if info["broken"] is None:
        info["broken"] = _declaration_problem(info["provides"])
    conventions = getattr(backend, "conventions", None)
    if conventions is not None and not isinstance(conventions, Conventions):
        info["broken"] = f"conventions must be a bnconform.Conventions, got {type(conventions).__name__}"
    elif conventions is not None:
        info["broken"] = info["broken"] or "; ".join(conventions.problems()) or None
        info["conventions"] = dataclasses.asdict(conventions)
    manifest = getattr(backend, "manifest", None)
    info["manifest"] = None if manifest is None else str(manifest)
    info["counts"] = callable(getattr(backend, "counters", None))
    check = getattr(backend, "available", None)
    if callable(check):
        try:
            reason = check()
            info["unavailable"] = None if reason is None else str(reason)
        except Exception as exc:
            info["unavailable"] = f"available() raised {type(exc).__name__}: {exc}"
    if info["broken"] is None and info["unavailable"] is None:
        info["broken"], info["unavailable"] = _creates_a_module(backend, info["provides"])
    return info


def _counters(backend: Any) -> dict[str, int]:
    """The backend's own running totals (`counters()`, optional: e.g. graphs compiled), checked."""
    counts = backend.counters()
    if not isinstance(counts, dict) or not all(isinstance(k, str) and type(v) is int and v >= 0
                                               for k, v in counts.items()):
        raise contract.ContractViolation(f"counters() must return a dict of names to counts (int >= 0), got {counts!r:.80}")
    return counts


def _declaration_problem(provides: list[str]) -> Optional[str]:
    """Capabilities that name nothing bnconform knows (a typo would silently skip cases)."""
    from bnconform.cases.dtypes import DTYPES
    from bnconform.cases.requirements import FEATURES

    unknown = [p for p in provides if not (p in FEATURES or p in ("dim=1", "dim=2", "dim=3")
                                          or p in {f"dtype={t}" for t in DTYPES})]
    if unknown:
        return (f"capabilities name what bnconform does not know: {', '.join(unknown)} "
                f"(features: {', '.join(sorted(FEATURES))}; dims 1, 2, 3; dtypes {', '.join(DTYPES)})")
    if not any(p.startswith("dim=") for p in provides) or not any(p.startswith("dtype=") for p in provides):
        return "capabilities declare no dim or no dtype: no case could run"
    return None


def _creates_a_module(backend: Any, provides: list[str]) -> tuple[Optional[str], Optional[str]]:
    """(broken, unavailable): build one module of a declared dim and dtype and check it has the
    protocol's methods. A backend that raises here is left to its cells (that config may be the
    only one it cannot build); BackendUnavailable makes it unavailable."""
    from bnconform.runners.backends.protocol import BackendUnavailable, ModuleConfig

    dims = sorted(int(p.split("=")[1]) for p in provides if p.startswith("dim="))
    dtype = next((t for t in ("float32", "float64", "float16", "bfloat16") if f"dtype={t}" in provides), "float32")
    try:
        module = backend.create(ModuleConfig.model_validate({"dim": dims[0], "dtype": dtype}))
    except BackendUnavailable as exc:
        return None, str(exc)
    except ImportError as exc:  # e.g. torch-module:pkg.mod:factory whose package is not installed
        return None, f"create() could not import what it needs: {type(exc).__name__}: {exc}"
    except Exception:
        return None, None
    if module is None:
        return "create() returned None instead of a module", None
    missing = sorted(m for m in PROTOCOL_METHODS if not callable(getattr(module, m, None)))
    if missing:
        return f"create() returned a {type(module).__name__} without the protocol's {', '.join(missing)}", None
    return None, None


PROTOCOL_METHODS = ("train", "eval", "set_attribute", "forward", "backward", "get", "assign", "state_dict",
                    "load_state_dict", "reset_running_stats", "reset_parameters", "set_requires_grad")
# Methods a module has when its backend declares the matching capability (cases/requirements.py).
OPTIONAL_METHODS = ("forward_with_grad_mode", "forward_shards", "double_backward", "fold")


def _loaded(target: str) -> tuple[Optional[Any], dict[str, Any]]:
    try:
        backend = load(target)
    except BackendLoadError as exc:  # a framework that fails to import cannot run here: unavailable
        broken = isinstance(exc, NotABackend)  # ... but an object that is no backend breaks the protocol
        return None, {"version": "unknown (failed to load)", "provides": [], "conventions": None, "manifest": None,
                      "unavailable": None if broken else f"could not be loaded: {exc}",
                      "broken": str(exc) if broken else None}
    return backend, describe(backend)


def _arrays(args: tuple[Any, ...]) -> list[tuple[str, Any]]:
    """The arrays handed to a call (positional, or values of a state dict), to check they stay unchanged."""
    import numpy as np

    out = []
    for i, arg in enumerate(args):
        if isinstance(arg, np.ndarray):
            out.append(("" if i == 0 else f" argument {i + 1}", arg))
        elif isinstance(arg, dict):
            out += [(f" ({key!r} of the state dict)", v) for key, v in arg.items() if isinstance(v, np.ndarray)]
        elif isinstance(arg, list):
            out += [(f" (shard {k})", v) for k, v in enumerate(arg) if isinstance(v, np.ndarray)]
    return out


def serve(conn: Connection, target: str, log_path: str) -> None:
    """Answer protocol calls on `conn` until it closes (the worker process's main function)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warnings.simplefilter("ignore")  # a backend is judged by what it returns, not by what it warns
    log = open(log_path, "w", encoding="utf-8")
    # What a backend writes to stderr (TensorFlow's start-up notes, a library's C++ warnings) goes
    # to this log, not over the user's progress display; a crash report shows the log's tail.
    os.dup2(log.fileno(), 2)
    faulthandler.enable(log, all_threads=True)  # a fatal signal leaves the Python stack here
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, log, all_threads=True)  # the stack of a hang, on request
    backend, info = _loaded(target)
    modules: dict[int, Any] = {}
    held: list[tuple[str, Any, Any]] = []  # this cell's input arrays, with a copy of each as given
    handles = 0
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        op = message[0]
        value: Any = None
        try:
            if op == "probe":
                value = info
            elif op == "counters":
                value = _counters(backend)
            elif op == "create":
                if message[2]:
                    modules.clear()  # a new cell: the previous cell's modules are done
                    held.clear()
                handles += 1
                modules[handles] = backend.create(message[1])  # type: ignore[union-attr]
                value = handles
            elif op == "call":
                _, handle, method, args, kwargs = message
                args, kwargs = transport.unpack(args), transport.unpack(kwargs)
                given = [(f"{method}(){where}", a, a.copy()) for where, a in _arrays(args)]
                keys = [(arg, list(arg)) for arg in args if isinstance(arg, dict)]
                value = getattr(modules[handle], method)(*args, **kwargs)
                # The caller's arrays stay unchanged, during this call and later ones (a backend
                # that keeps forward's input and writes into it in backward).
                held.extend(given)
                for where, after, snapshot in held:
                    contract.unchanged(where, snapshot, after, during=method)
                for arg, before in keys:
                    if list(arg) != before:
                        raise contract.ContractViolation(f"{method}() changed the keys of the caller's dict "
                                                         f"(before {before}, after {list(arg)})")
            reply: tuple[str, Any] = ("ok", transport.pack(value))
        except contract.ContractViolation as exc:
            reply = ("contract", str(exc))
        except Exception as exc:
            reply = ("raised", exception_info(exc))
        except BaseException as exc:  # SystemExit, KeyboardInterrupt, GeneratorExit from the backend
            reply = ("aborted", exception_info(exc))
        try:
            conn.send(reply)
        except Exception as exc:  # a value that pickle cannot carry across
            conn.send(("broken", f"{op} {message[2] if op == 'call' else ''} returned a {type(value).__name__}, "
                                 f"which cannot leave the backend's process ({type(exc).__name__}: {exc})"))
        if reply[0] == "aborted":
            return  # after SystemExit or KeyboardInterrupt this process is not to be trusted further
