"""The torch compiler columns (runners/backends/torch_compilers.py) and the counts they report.

CI runs the documented subset (docs/frameworks.md, "torch's compilers"): four families on the
three columns that compile in well under a second per graph (aot_eager, torch.export,
TorchScript), among them a case of every finding but TorchScript's old state dicts, and on
Inductor two cases (a pass and a finding); `tox -e compilers` runs the whole library.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bnconform.runners.backends import COMPILERS, UnknownBackend, check_name, uses_torch
from bnconform.runners.backends.torch_compilers import CompilerBackend
from bnconform.runners.engine.manifest import load
from bnconform.runners.engine.order import ALONE_TOO, RAN_FIRST
from tests.helpers import bnconform

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
CHEAP = ("torch-compile-aot", "torch-export", "torchscript")
CI_FAMILIES = ("bessel", "errors", "toggling", "state")
INDUCTOR_CASES = ("bessel/nc_golden", "errors/one_value_training_golden")
COUNTED = {"torch-compile": "graphs compiled", "torch-compile-fullgraph": "graphs compiled",
           "torch-compile-aot": "graphs compiled", "torch-export": "exports", "torchscript": "scripted modules"}


def _cells(report: dict, column: str) -> list[dict]:
    return [r for r in report["results"] if r["backend"] == column]


def test_compiler_columns_are_names_that_need_torch() -> None:
    assert set(COMPILERS) == set(COUNTED)
    for name in COMPILERS:
        check_name(name)
        assert uses_torch(name)  # the forkserver preloads torch for them
    with pytest.raises(UnknownBackend, match="torch compilers: torch-compile, torch-compile-fullgraph"):
        check_name("torch-compiled")


@pytest.mark.parametrize("name", sorted(COUNTED))
def test_each_column_ships_a_manifest_whose_entries_have_reasons(name: str) -> None:
    backend = CompilerBackend(name)
    entries = load([Path(backend.manifest or "")])
    assert all(e.reason and e.backend == name for e in entries)


@needs_torch
def test_no_cell_falls_back_to_eager_silently() -> None:
    import torch

    backend = CompilerBackend("torch-compile-aot")
    backend.create(__import__("bnconform").ModuleConfig.model_validate({"dim": 2}))
    config = torch._dynamo.config
    assert config.recompile_limit >= 100_000 and config.accumulated_recompile_limit >= 100_000
    assert config.fail_on_recompile_limit_hit  # reaching a limit raises: never eager in a compiled column


@needs_torch
def test_a_refused_input_leaves_later_forwards_compiled() -> None:
    # Dynamo skips a frame for good once tracing it raised (pytorch/pytorch#132923); the column
    # re-enables it, so the next module's forward runs a compiled graph, not eager.
    import numpy as np

    from bnconform import ModuleConfig
    from bnconform.runners.backends import torch_compilers

    backend = CompilerBackend("torch-compile-aot")
    config = ModuleConfig.model_validate({"dim": 1, "num_features": 3})
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        backend.create(config).forward(np.ones(3, np.float32))
    before = torch_compilers.GRAPH_RUNS[0]
    backend.create(config).forward(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    assert torch_compilers.GRAPH_RUNS[0] == before + 1


@needs_torch
def test_a_forward_that_ran_no_compiled_graph_is_an_error() -> None:
    import numpy as np
    from torch._dynamo.eval_frame import skip_code
    from torch._dynamo.external_utils import wrap_inline

    from bnconform import ModuleConfig
    from bnconform.runners.backends import torch_compilers

    backend = CompilerBackend("torch-compile-aot")
    module = backend.create(ModuleConfig.model_validate({"dim": 1, "num_features": 3}))
    skip_code(wrap_inline(lambda: None).__code__)  # what Dynamo does after a raising trace
    try:
        with pytest.raises(RuntimeError, match="this forward ran eager"):
            module.forward(np.ones((4, 3), np.float32))
    finally:
        torch_compilers._reenable_skipped_frames()


@needs_torch
def test_ci_subset_passes_strict_and_counts_what_each_column_built(tmp_path: Path) -> None:
    names = [a for name in CHEAP for a in ("--backend", name)]
    families = [a for family in CI_FAMILIES for a in ("--family", family)]
    proc, report = bnconform(*names, *families, "--strict", out=tmp_path, timeout=1200)
    assert report is not None, proc.stderr
    assert proc.returncode == 0, proc.stdout[-3000:]
    for name in CHEAP:
        cells = _cells(report, name)
        assert cells and all(c["outcome"] in ("passed", "xfailed", "skipped") for c in cells), name
        assert any(c["outcome"] == "xfailed" for c in cells), name  # each shows a finding here
        built = sum(c["counters"].get(COUNTED[name], 0) for c in cells)
        assert built >= 1, name
        # each column's total is in the report and the terminal summary
        assert f"{name}: {built} {COUNTED[name]}" in (tmp_path / "conformance.md").read_text()
        assert f"{name}: {built} {COUNTED[name]}" in proc.stdout


@needs_torch
def test_a_later_module_of_one_configuration_reuses_the_compiled_graphs() -> None:
    # Dynamo's cache on nn.BatchNorm's forward, guarded, is shared by the worker's modules: what
    # makes the library affordable on Inductor. A new momentum fails a guard: a new graph.
    import numpy as np

    from bnconform import ModuleConfig

    backend = CompilerBackend("torch-compile-aot")
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32)
    config = ModuleConfig.model_validate({"dim": 2, "num_features": 3})
    backend.create(config).forward(x)
    first = backend.counters()["graphs compiled"]
    backend.create(config).forward(x)
    assert backend.counters()["graphs compiled"] == first
    backend.create(config.model_copy(update={"momentum": 0.25})).forward(x)
    assert backend.counters()["graphs compiled"] == first + 1


@needs_torch
def test_inductor_columns_pass_a_few_cases_and_count_their_graphs(tmp_path: Path) -> None:
    cases = [a for case in INDUCTOR_CASES for a in ("--case", case)]
    proc, report = bnconform("--backend", "torch-compile", "--backend", "torch-compile-fullgraph", *cases,
                             "--strict", "--keep-order", out=tmp_path, timeout=1200)
    assert report is not None, proc.stderr
    assert proc.returncode == 0, proc.stdout[-3000:]
    for name in ("torch-compile", "torch-compile-fullgraph"):
        cells = _cells(report, name)
        assert [c["outcome"] for c in cells] == ["passed", "xfailed"], name
        assert cells[0]["counters"].get("graphs compiled", 0) >= 1, name


def test_counters_are_reported_per_cell_and_summed(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "counts=tests.broken_backends:counts_forwards",
                             "--family", "bessel",
                             out=tmp_path)
    assert report is not None, proc.stderr
    assert proc.returncode == 0, proc.stdout[-3000:]
    cells = _cells(report, "counts")
    forwards = [c["counters"].get("forwards", 0) for c in cells]
    assert all(n >= 1 for n in forwards)  # every case forwards at least once
    assert all("never" not in c["counters"] for c in cells)  # a count that stayed 0 is not listed
    assert f"counts: {sum(forwards)} forwards" in proc.stdout


def test_broken_counters_are_ignored_and_cost_no_cell(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "bad=tests.broken_backends:bad_counters", "--case", "bessel/nc_golden",
                             out=tmp_path)
    assert report is not None, proc.stderr
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert [c["counters"] for c in _cells(report, "bad")] == [{}]


def test_every_failure_says_whether_it_depends_on_earlier_cells(tmp_path: Path) -> None:
    proc, report = bnconform("--backend", "mutant:biased_running_var", "--family", "bessel", out=tmp_path)
    assert report is not None and proc.returncode == 1, proc.stderr
    failed = [c for c in report["results"] if c["outcome"] == "failed"]
    assert len(failed) >= 2
    assert failed[0]["message"].splitlines()[-1] in (RAN_FIRST, ALONE_TOO)
    assert all(c["message"].splitlines()[-1] == ALONE_TOO for c in failed[1:])
