"""nn.BatchNorm through torch's compilers: BatchNorm as kernel authors now meet it.

Each column is the torch column's nn.BatchNorm{1,2,3}d (runners/backends/torch_backend.py),
with every forward run through one compiler:

- `torch-compile`: `torch.compile(module)`, Inductor with graph breaks allowed (what most users run);
- `torch-compile-fullgraph`: `torch.compile(module, fullgraph=True)`: a graph break is an error;
- `torch-compile-aot`: `torch.compile(module, backend="aot_eager")`: Dynamo and AOTAutograd's
  decompositions without code generation, which tells a decomposition bug from a codegen bug;
- `torch-export`: `torch.export.export(module, (x,))` in the module's mode at that forward, run
  through the ExportedProgram's `module()` (its parameters and buffers are the module's own
  tensors, so the state moves in and out with no copy; an ExportedProgram cannot change mode,
  so each mode, flag setting and input signature has its own export);
- `torchscript`: `torch.jit.script(module)`, used for everything (attributes, methods, state).

Compile reuse (what makes the library affordable): Dynamo caches compiled code on nn.BatchNorm's
forward, shared by every module of a worker, and reuses it for a later module only where every
guard holds (shapes, dtypes, strides, flags, momentum, eps): sound by construction, and what a
user's process does too. Recompilation limits are raised so that no cell silently falls back
to eager, and hitting one is an error. Dynamo also skips a frame for good once tracing it
raised (pytorch/pytorch#132923): the frame is the wrapper shared by every compiled module, so one
refused input would make every later forward of the worker run eager. After a forward raises,
the column re-enables the frames Dynamo may have skipped (that wrapper and the resume functions
of graph breaks), keeping the compiled code; and every forward that returns without having run
a compiled graph is an error, never a silent pass. Inductor's on-disk caches (FX graph and AOTAutograd)
stay on: a rerun is then mostly cache hits. A column keeps one worker across cells like any
other, so an order-dependent failure is found by the engine's rerun-alone check.
`counters()` says how many graphs each worker compiled (the report sums them per column).
"""
from __future__ import annotations

from typing import Any, Optional

from bnconform.runners.backends import COMPILERS
from bnconform.runners.backends.protocol import BackendUnavailable, Capabilities, Conventions, ModuleConfig
from bnconform.runners.backends.torch_backend import DTYPES, FEATURES, TorchModule

# Recompilation limits high enough that no case reaches them (a worker compiles at most a few
# thousand graphs for the whole library); reaching one raises instead of running eager.
RECOMPILE_LIMIT = 100_000

COMPILE_OPTIONS: dict[str, dict[str, Any]] = {
    "torch-compile": {},
    "torch-compile-fullgraph": {"fullgraph": True},
    "torch-compile-aot": {"backend": "aot_eager"},
}
MODES = tuple(COMPILERS)  # the column names, registered once in runners/backends/__init__.py
BUILT = {"torch-export": 0, "torchscript": 0}  # programs this worker exported or scripted
GRAPH_RUNS = [0]  # compiled graphs this worker ran: a forward that ran none ran eager
COUNTED: dict[str, Any] = {}  # backend name -> the counting compiler built from it

EAGER_MOMENTUM_NONE = ("with graph breaks allowed, Dynamo breaks the graph at momentum=None's "
                       "float(num_batches_tracked) inside the module and runs the whole forward eager: "
                       "there is no compiled code to test (fullgraph=True refuses it instead)")

# What a column cannot express, each skipped with the reason (feature -> why not).
NOT_EXPRESSED: dict[str, dict[str, str]] = {
    "torch-compile": {"momentum_none": EAGER_MOMENTUM_NONE},
    "torch-compile-fullgraph": {},
    "torch-compile-aot": {"momentum_none": EAGER_MOMENTUM_NONE},
    "torch-export": {
        "momentum_none": "torch.export cannot trace momentum=None: its factor 1 / num_batches_tracked is a Python "
                         "float read from a tensor, data-dependent (GuardOnDataDependentSymNode)",
        "lazy": "torch.export needs the module's parameters to exist; a LazyBatchNorm is sized by its first forward",
    },
    "torchscript": {
        "lazy": "torch.jit.script refuses a module with uninitialised parameters (LazyBatchNorm)",
    },
}


def _configure(torch: Any) -> None:
    """Raise Dynamo's recompilation limits and make reaching one an error (torch 2.13's names)."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "accumulated_recompile_limit", "cache_size_limit", "accumulated_cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, RECOMPILE_LIMIT)
    if hasattr(config, "fail_on_recompile_limit_hit"):
        config.fail_on_recompile_limit_hit = True


def _counted(torch: Any, backend: str) -> Any:
    """The column's compiler (torch.compile's own Inductor wrapper, or a registered backend by name)
    with every compiled graph counting its runs in GRAPH_RUNS: one object per worker, since Dynamo
    reuses compiled code only for the same backend object."""
    if backend not in COUNTED:
        COUNTED[backend] = _counting(torch, backend)
    return COUNTED[backend]


def _counting(torch: Any, backend: str) -> Any:
    from torch._dynamo.backends.registry import lookup_backend

    inner = torch._TorchCompileInductorWrapper(None, None, None) if backend == "inductor" else lookup_backend(backend)

    def compiler(gm: Any, example_inputs: Any) -> Any:
        graph = inner(gm, example_inputs)

        def run(*args: Any) -> Any:
            GRAPH_RUNS[0] += 1
            return graph(*args)

        return run

    return compiler


def _reenable_skipped_frames() -> None:
    """Undo the skip Dynamo puts on a frame whose tracing raised (pytorch/pytorch#132923): the
    wrapper frame of every compiled module and the resume functions of graph breaks."""
    from torch._dynamo.eval_frame import set_code_exec_strategy
    from torch._dynamo.external_utils import wrap_inline
    from torch._dynamo.resume_execution import ContinueExecutionCache
    from torch._dynamo.types import FrameAction, FrameExecStrategy

    codes = [wrap_inline(lambda: None).__code__]
    codes += [code for resumes in list(ContinueExecutionCache.cache.values.values()) for code in resumes.values()]
    for code in codes:
        set_code_exec_strategy(code, FrameExecStrategy(FrameAction.DEFAULT, FrameAction.DEFAULT))


class CompiledModule(TorchModule):
    """nn.BatchNorm whose forwards go through `torch.compile` with the column's options."""

    def __init__(self, config: ModuleConfig, options: dict[str, Any]) -> None:
        super().__init__(config, "cpu")
        options = dict(options)
        options["backend"] = _counted(self.torch, options.get("backend", "inductor"))
        self.compiled = self.torch.compile(self.m, **options)

    def _call(self, x: Any) -> Any:
        before = GRAPH_RUNS[0]
        try:
            y = self.compiled(x)
        except BaseException:
            _reenable_skipped_frames()
            raise
        if GRAPH_RUNS[0] == before:
            raise RuntimeError("this forward ran eager: torch.compile returned without running a compiled graph "
                               "(Dynamo skipped the frame), so there is no compiled result to check")
        return y


class ExportedModule(TorchModule):
    """nn.BatchNorm exported with torch.export in the mode of each forward."""

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__(config, "cpu")
        self.programs: dict[tuple, Any] = {}

    def _call(self, x: Any) -> Any:
        m = self.m
        # Everything an export specialises on: a different value needs its own program.
        key = (m.training, m.track_running_stats, m.momentum, m.running_mean is None, tuple(x.shape), x.stride(),
               x.dtype, x.requires_grad, self.torch.is_grad_enabled(), self.torch.is_inference_mode_enabled())
        program = self.programs.get(key)
        if program is None:
            program = self.programs[key] = self.torch.export.export(m, (x.detach(),)).module()
            BUILT["torch-export"] += 1
        return program(x)


class ScriptedModule(TorchModule):
    """torch.jit.script of nn.BatchNorm, used for everything the protocol asks."""

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__(config, "cpu")
        self.m = self.torch.jit.script(self.m)
        BUILT["torchscript"] += 1


class CompilerBackend:
    """One compiler column over torch's nn.BatchNorm on the CPU."""

    conventions = Conventions()
    manifest: Optional[str]

    def __init__(self, mode: str) -> None:
        from bnconform.runners.backends.frameworks import MANIFESTS

        self.name = mode
        self.mode = mode
        missing = NOT_EXPRESSED[mode]
        self.capabilities = Capabilities(dtypes=DTYPES, features=FEATURES - set(missing), reasons=missing)
        self.manifest = str(MANIFESTS / f"{mode}.yaml")
        self._configured = False

    def version(self) -> str:
        try:
            import torch
        except ImportError:
            return "not installed"
        what = {"torch-compile": "Inductor", "torch-compile-fullgraph": "Inductor, fullgraph=True",
                "torch-compile-aot": "aot_eager", "torch-export": "torch.export",
                "torchscript": "torch.jit.script"}[self.mode]
        return f"torch {torch.__version__} ({what})"

    def available(self) -> Optional[str]:
        from bnconform.runners.backends import TORCH_MISSING

        try:
            import torch
        except ImportError:
            return TORCH_MISSING
        if self.mode in COMPILE_OPTIONS and not torch._dynamo.is_dynamo_supported():
            return "torch.compile is not supported on this Python"
        return None

    def counters(self) -> dict[str, int]:
        """What this worker compiled so far (cumulative; the engine takes differences per cell)."""
        if self.mode in COMPILE_OPTIONS:
            if not self._configured:
                return {"graphs compiled": 0}
            from torch._dynamo.utils import counters

            return {"graphs compiled": int(counters["stats"]["unique_graphs"])}
        return {"exports" if self.mode == "torch-export" else "scripted modules": BUILT[self.mode]}

    def create(self, config: ModuleConfig) -> TorchModule:
        reason = self.available()
        if reason:
            raise BackendUnavailable(reason)
        import torch

        if not self._configured:
            _configure(torch)
            self._configured = True
        if self.mode in COMPILE_OPTIONS:
            return CompiledModule(config, COMPILE_OPTIONS[self.mode])
        if self.mode == "torch-export":
            return ExportedModule(config)
        return ScriptedModule(config)


def compiled_backend(mode: str) -> CompilerBackend:
    if mode not in MODES:
        raise ValueError(f"no compiler column {mode!r}; there are: {', '.join(MODES)}")
    return CompilerBackend(mode)


