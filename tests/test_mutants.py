"""Mutation testing: every deliberately broken backend is killed, and its bug is diagnosed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnconform.cases.loader import load_cases
from bnconform.runners.backends.mutants import CAUSE, MUTANTS, SHAPE_CLASS
from bnconform.runners.engine.execute import run_case
from bnconform.runners.reports.mutants import score
from bnconform.runners.reports.results import CaseResult
from tests.helpers import FIRST_18, ROOT, SHAPE_FAMILIES, default_cases, write_spec

CASES = default_cases()  # the default run's cases

# The shape-class mutants are wrong only on a kernel path a shape or a magnitude takes; among the
# built-in cases the shapes and magnitudes families reach it (test_mutant_is_killed_and_diagnosed
# proves the default tier kills each). Here each also runs on a small spec of its triggers and of
# controls one step short of them: it must fail exactly its triggers, each diagnosed with its
# cause, and pass every other case. (Its mode is the case id's, beside the grid: "tail_c9" is
# C = 9 on (2, 9, 3, 5).)
SHAPE_SPEC = """
family: tmp_shape_mutants
title: the shape-class mutants' triggers, and controls one step short of them
defaults: {dim: 2, num_features: 3}
anchors:
  c9: &c9 {random: {seed: 1, shape: [2, 9, 3, 5]}}
specs:
  # channel_tail: C > 8 with C % 8 != 0; C = 8, 16, 64 are right
  - {id: tail_c9, description: C 9, config: {num_features: 9},
     steps: [{forward: {input: *c9}, expect: oracle}, {backward: {grad: *c9}, expect: oracle}]}
  - {id: tail_c17, description: C 17, config: {num_features: 17},
     steps: [{forward: {input: {random: {seed: 1, shape: [2, 17, 3, 5], scale: 2.0, offset: 0.5}}}, expect: oracle}]}
  - {id: tail_c65, description: C 65, config: {num_features: 65},
     steps: [{forward: {input: {random: {seed: 1, shape: [2, 65, 3, 5], scale: 2.0, offset: 0.5}}}, expect: oracle}]}
  - {id: control_c8, description: C 8, config: {num_features: 8},
     steps: [{forward: {input: {random: {seed: 1, shape: [2, 8, 3, 5]}}}, expect: oracle},
             {backward: {grad: {random: {seed: 2, shape: [2, 8, 3, 5]}}}, expect: oracle}]}
  - {id: control_c16, description: C 16, config: {num_features: 16},
     steps: [{forward: {input: {random: {seed: 1, shape: [2, 16, 3, 5]}}}, expect: oracle}]}
  - {id: control_c64, description: C 64, config: {num_features: 64},
     steps: [{forward: {input: {random: {seed: 1, shape: [2, 64, 3, 5]}}}, expect: oracle}]}
  # channels_past_64: channels_last training with C > 64; C = 64, eval mode, contiguous memory are right
  - {id: last_c65_train, description: channels_last training with 65 channels, config: {num_features: 65},
     steps: [{forward: {input: {random: {seed: 3, shape: [2, 65, 3, 5]}}, layout: channels_last}, expect: oracle},
             {backward: {grad: {random: {seed: 4, shape: [2, 65, 3, 5]}}}, expect: oracle}]}
  - {id: control_last_c64_train, description: channels_last training with 64 channels, config: {num_features: 64},
     steps: [{forward: {input: {random: {seed: 3, shape: [2, 64, 3, 5]}}, layout: channels_last}, expect: oracle}]}
  - {id: control_last_c129_eval, description: channels_last eval with 129 channels,
     config: {num_features: 129, training: false},
     steps: [{forward: {input: {random: {seed: 3, shape: [2, 129, 3, 5]}}, layout: channels_last}, expect: oracle}]}
  - {id: control_c128_train, description: contiguous training with 128 channels, config: {num_features: 128},
     steps: [{forward: {input: {random: {seed: 3, shape: [2, 128, 3, 5]}}}, expect: oracle}]}
  # large_plane_one_pass: 16384 values per channel at an offset of 1e4; 4096 values, or no offset, are right.
  # Tolerance: a float32 mean of data at 1e4 is off by up to 1e4 * 2^-24 = 6e-4 (sigma 1); twice that.
  - {id: large_plane_offset, description: 16384 values at offset 1e4, config: {num_features: 1},
     tolerance: {float32: {rtol: 1.0e-4, atol: 1.2e-3}},
     steps: [{forward: {input: {random: {seed: 5, shape: [1, 1, 128, 128], offset: 1.0e+4}}}, expect: oracle}]}
  - {id: small_plane_offset, description: 4096 values at offset 1e4, config: {num_features: 1},
     tolerance: {float32: {rtol: 1.0e-4, atol: 1.2e-3}},
     steps: [{forward: {input: {random: {seed: 5, shape: [1, 1, 64, 64], offset: 1.0e+4}}}, expect: oracle}]}
  - {id: control_large_plane, description: 16384 values near 0, config: {num_features: 1},
     steps: [{forward: {input: {random: {seed: 5, shape: [1, 1, 128, 128], scale: 2.0, offset: 0.5}}}, expect: oracle},
             {backward: {grad: {random: {seed: 6, shape: [1, 1, 128, 128]}}}, expect: oracle}]}
  # square_overflow: x = 2e19 + 1e17 z, whose raw float32 squares overflow while the centred ones do not
  # (the float32 mean of 2e19 is off by up to 2^40 = 1.1e12, 1.1e-5 of the spread; atol 2.2e-4 as magnitudes)
  - {id: raw_squares_overflow, description: 2e19 plus 1e17 z, config: {num_features: 1},
     tolerance: {float32: {rtol: 1.0e-4, atol: 2.2e-4}},
     steps: [{forward: {input: {random: {seed: 7, shape: [1, 1, 128, 128], scale: 1.0e+17, offset: 2.0e+19}}},
              expect: oracle}]}
  # half_backward_overflow: float16 data, 32768 values per channel, dy ~ 2.5: sum(dy) ~ 81920 passes 65504;
  # float32 and bfloat16 data are right. grad_weight carries the error of a float32-accurate batch mean
  # (~1e-6) times sum(dy): atol 0.2 for the float32 module's quantities.
  - {id: half_backward, description: float16 backward past 65504, config: {num_features: 1, input_dtype: float16},
     tolerance: {float32: {rtol: 1.0e-4, atol: 0.2}},
     steps: [{forward: {input: {random: {seed: 8, shape: [1, 1, 128, 256]}}}, expect: oracle},
             {backward: {grad: {random: {seed: 9, shape: [1, 1, 128, 256], scale: 0.25, offset: 2.5}}}, expect: oracle}]}
  - {id: control_backward, description: float32 and bfloat16 backward, config: {num_features: 1},
     grid: {input_dtype: [null, bfloat16]}, tolerance: {float32: {rtol: 1.0e-4, atol: 0.2}},
     steps: [{forward: {input: {random: {seed: 8, shape: [1, 1, 128, 256]}}}, expect: oracle},
             {backward: {grad: {random: {seed: 9, shape: [1, 1, 128, 256], scale: 0.25, offset: 2.5}}}, expect: oracle}]}
"""
# mutant -> the cases of SHAPE_SPEC it fails (every other one it passes)
SHAPE_KILLS = {
    "channel_tail": {"tail_c9", "tail_c17", "tail_c65", "last_c65_train"},
    "channels_past_64": {"last_c65_train"},
    "large_plane_one_pass": {"large_plane_offset", "raw_squares_overflow"},  # 16384 values: E[x^2] overflows too
    "square_overflow": {"large_plane_offset", "small_plane_offset", "raw_squares_overflow"},  # offsets cancel at any size
    "half_backward_overflow": {"half_backward"},
}


def test_corpus_is_large_enough() -> None:
    assert len(MUTANTS) >= 20 and sum(c is not None for c in CAUSE.values()) >= 20
    assert set(SHAPE_KILLS) == set(SHAPE_CLASS) <= set(MUTANTS)


# The shapes library's families (~950 cases) are where the shape-class mutants are killed (they
# are right everywhere else by construction); the other mutants are killed by the first 18
# families, and replaying either over the rest would double this test's time for the same proof.


@pytest.mark.parametrize("name", list(MUTANTS))
def test_mutant_is_killed_and_diagnosed(name: str) -> None:
    """Every mutant is killed by the default tier and diagnosed: a shape-class one over the
    shapes library's families, the others over the families before it."""
    results = []
    # in this process: the unit under test is the diagnosis, not the isolation
    for case in (c for c in CASES if (c.family in SHAPE_FAMILIES) == (name in SHAPE_CLASS)):
        with np.errstate(all="ignore"):  # broken arithmetic is the point here
            o = run_case(case, MUTANTS[name], name)
        results.append(CaseResult(case.id, case.family, name, o.outcome, o.message, diagnosis=list(o.diagnosis)))
    result = score(name, CAUSE[name], results)
    assert result.killed, f"{name} survived every case"
    if CAUSE[name] is not None:
        assert result.diagnosed, f"{name}: expected diagnosis {CAUSE[name]}, most named {result.top_diagnoses}"


def test_mutants_command_prints_and_writes_the_score(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bnconform", "mutants", "--mutant", "reset_noop", "--mutant", "grad_bias_missing",
         *FIRST_18, "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mutation score: killed 2/2, correctly diagnosed 1/1" in proc.stdout
    md = (tmp_path / "mutants.md").read_text()
    assert "| reset_noop" in md and "killed" in md


@pytest.fixture(scope="module")
def shape_cases(tmp_path_factory: pytest.TempPathFactory) -> list:
    directory = tmp_path_factory.mktemp("shape-specs")
    write_spec(directory, "shape_mutants.yaml", SHAPE_SPEC)
    return load_cases([directory])


def test_the_shape_spec_passes_on_numpy(shape_cases: list) -> None:
    from bnconform.runners.backends.numpy_backend import NumpyBackend

    failed = [(case.id, o.message) for case in shape_cases
              if (o := run_case(case, NumpyBackend(threads=1), "numpy")).outcome != "passed"]
    assert not failed


@pytest.mark.parametrize("name", list(SHAPE_KILLS))
def test_shape_mutant_is_killed_on_its_trigger_diagnosed_and_right_elsewhere(name: str, shape_cases: list) -> None:
    results = []
    for case in shape_cases:
        with np.errstate(all="ignore"):
            o = run_case(case, MUTANTS[name], name)
        results.append(CaseResult(case.id, case.family, name, o.outcome, o.message, diagnosis=list(o.diagnosis)))
    failed = {r.spec.split("/")[1]: r for r in results if r.outcome != "passed"}
    assert set(failed) == SHAPE_KILLS[name], {k: r.message[:300] for k, r in failed.items()}
    assert all(r.outcome == "failed" and CAUSE[name] in r.diagnosis for r in failed.values()), \
        {k: (r.diagnosis, r.message[:300]) for k, r in failed.items()}
    assert score(name, CAUSE[name], results).diagnosed
