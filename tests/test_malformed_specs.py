"""Spec errors are the spec's: every malformed spec is refused when the specs are loaded.

Each row is a small spec file with one mistake, run through what a user runs
(`bnconform run --specs DIR`): exit 2, one line on stderr naming the file, the spec id and
the key path, no traceback, and well within a usage error's time. A few properties (limits
that can be raised, bombs refused in well under a second, the built-in library untouched)
are checked in-process.
"""
from __future__ import annotations

import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import pytest

from bnconform.cases.loader import BUILTIN_SPECS, SpecError, load_cases, load_file
from tests.helpers import bnconform, write_spec

HEAD = "family: demo\ntitle: demo\ndefaults: {dim: 1, num_features: 2}\n"
G = "[[1, 2], [3, 6]]"  # a valid (N, C) input for num_features=2


def spec(body: str, spec_id: str = "s", head: str = HEAD) -> str:
    """A file with one spec whose keys after `description` are `body` (indented four spaces)."""
    return f"{head}specs:\n  - id: {spec_id}\n    description: d\n" + body


def steps(*lines: str) -> str:
    return "    steps:\n" + "".join(f"      {line}\n" for line in lines)


# "Billion laughs": nine levels of ten aliases stand for 10**9 strings, in 672 bytes.
BOMB = 'lol: &lol "lol"\n' + "".join(
    f"lol{i}: &lol{i} [" + ",".join([f"*lol{i - 1 if i > 1 else ''}"] * 10) + "]\n" for i in range(1, 10)
)
LOLS = "[" + ",".join(['"lol"'] * 9) + "]"
# Anchors that stay under the alias limit on their own (9**5 = 59049 leaves), used 20 times by a spec.
BIG_ANCHOR = "anchors:\n  " + "\n  ".join(
    ["a: &a " + LOLS] + [f"{n}: &{n} [" + ",".join([f"*{p}"] * 9) + "]" for p, n in zip("abcd", "bcde")]
) + "\n"
HUGE_GRID = "{eps: [" + ", ".join(f"{(i + 1) * 1e-6:g}" for i in range(1000)) + "], momentum: [" + \
    ", ".join(f"{i / 1000:g}" for i in range(1000)) + "]}"


@dataclass(frozen=True)
class Row:
    text: Union[str, bytes]
    spec_id: Optional[str]  # the spec the message must name (None: a file-level mistake)
    key: str  # the key path the message must name ("" for the file as a whole)
    says: str  # a fragment of the message
    name: str = "bad.yaml"


ROWS = {
    # 1. regular expressions compile at load
    "bad_error_regex": Row(spec(steps(f"- forward: {{input: {G}}}", "- check", "- train",
                                      "- forward: {input: [[1, 2]]}",
                                      "  expect: {error: {type: ValueError, match: 'value per (channel'}}")),
                           "s", "steps[3].expect.error.match", "not a valid regular expression"),
    # 2. every generated array has a shape for the case's dim
    "no_shape_for_grid_dim": Row(spec("    grid: {dim: [1, 2, 3]}\n" + steps(
        "- forward: {input: {random: {seed: 1, shape: {1: [4, 2], 2: [2, 2, 3, 3]}}}}")),
        "s", "steps[0].forward.input.random.shape", "no shape for dim=3"),
    "no_shape_for_config_dim": Row(spec("    config: {dim: 2}\n" + steps(
        "- forward: {input: {random: {seed: 1, shape: [2, 2, 3, 3]}}}",
        "- backward: {grad: {random: {seed: 2, shape: {1: [2, 2], 3: [2, 2, 1, 3, 3]}}}}")),
        "s", "steps[1].backward.grad.random.shape", "no shape for dim=2"),
    "no_shape_for_init_dim": Row(spec("    grid: {dim: [1, 2]}\n    init: {weight: {random: {seed: 3, shape: {1: [2]}}}}\n"
                                      + steps("- check")),
                                 "s", "init.weight.random.shape", "no shape for dim=2"),
    # 3. init values: one per channel; the counter a non-negative integer
    "init_list_length": Row(spec("    init: {running_mean: [0.5, 1.5, 2.5]}\n" + steps("- check")),
                            "s", "init.running_mean", "num_features=2"),
    "init_random_length": Row(spec("    init: {running_var: {random: {seed: 4, shape: [3], distribution: uniform}}}\n"
                                   + steps("- check")),
                              "s", "init.running_var", "shape (2,)"),
    "init_counter_negative": Row(spec("    init: {num_batches_tracked: -1}\n" + steps("- check")),
                                 "s", "init.num_batches_tracked", "non-negative integer"),
    "init_counter_fraction": Row(spec("    init: {num_batches_tracked: 2.5}\n" + steps("- check")),
                                 "s", "init.num_batches_tracked", "non-negative integer"),
    "init_weight_without_affine": Row(spec("    config: {affine: false}\n    init: {weight: [1, 2]}\n" + steps("- check")),
                                      "s", "init.weight", "affine=False"),
    # tolerances: finite (an infinite one would pass any golden), per-value ones for shaped specs only
    "tolerance_infinite": Row(spec("    tolerance: {float32: {rtol: .inf, atol: 1.0e-5}}\n" + steps("- check")),
                              "s", "tolerance.float32.rtol", "finite"),
    "tolerance_nan": Row(spec("    sum_tolerance: {float32: {rtol: 1.0e-4, atol: .nan}}\n" + steps("- check")),
                         "s", "sum_tolerance.float32.atol", "finite"),
    "per_value_without_shapes": Row(spec("    tolerance: {float32: {rtol: 1.0e-4, atol: 1.0e-5, per_value: 1.0e-9}}\n"
                                         + steps("- check")), "s", "tolerance.float32.per_value", "shapes"),
    # 4. goldens: finite, of their quantity's shape; literal inputs of a valid rank and C
    "golden_nan": Row(spec(steps(f"- forward: {{input: {G}}}", "  expect: {running_mean: [.nan, 0.4]}")),
                      "s", "steps[0].expect.running_mean", "finite"),
    "golden_infinity": Row(spec(steps(f"- forward: {{input: {G}}}", "  expect: {output: [[-.inf, 0], [0, 0]]}")),
                           "s", "steps[0].expect.output", "finite"),
    "golden_running_var_length": Row(spec(steps(f"- forward: {{input: {G}}}", "  expect: {running_var: [1.1, 1.7, 1]}")),
                                     "s", "steps[0].expect.running_var", "num_features=2"),
    "golden_output_shape": Row(spec(steps(f"- forward: {{input: {G}}}", "  expect: {output: [-1, 1, -1, 1]}")),
                               "s", "steps[0].expect.output", "(2, 2)"),
    "golden_grad_weight_length": Row(spec(steps(f"- forward: {{input: {G}}}", f"- backward: {{grad: {G}}}",
                                                "  expect: {grad_weight: [0]}")),
                                     "s", "steps[1].expect.grad_weight", "num_features=2"),
    "golden_counter_fraction": Row(spec(steps(f"- forward: {{input: {G}}}", "  expect: {num_batches_tracked: 1.5}")),
                                   "s", "steps[0].expect.num_batches_tracked", "integer"),
    "input_rank": Row(spec("    config: {dim: 2}\n" + steps(f"- forward: {{input: {G}}}")),
                      "s", "steps[0].forward.input", "(N, C, H, W)"),
    "input_channels": Row(spec(steps("- forward: {input: [[1, 2, 3], [4, 5, 6]]}")),
                          "s", "steps[0].forward.input", "C=3"),
    # 5. a key written twice
    "duplicate_key_in_spec": Row(spec("    description: again\n" + steps("- check")),
                                 "s", "description", "duplicate key 'description' at line 7"),
    "duplicate_key_in_file": Row(HEAD + "title: again\n" + spec(steps("- check"), head=""),
                                 None, "title", "duplicate key 'title'"),
    # 6. not UTF-8
    "not_utf8": Row(spec(steps("- check")).encode() + "# caf\u00e9\n".encode("latin-1"),
                    None, "", "not UTF-8", name="latin1.yaml"),
    # 7. limits: cases per spec, elements per array, alias expansion, and the limits mapping itself
    "grid_of_a_million": Row(spec(f"    grid: {HUGE_GRID}\n" + steps("- check")),
                             "s", "grid", "1000000 cases, more than the limit of 10000"),
    "array_too_large": Row(spec(steps("- forward: {input: {random: {seed: 5, shape: [100000, 2, 100]}}}")),
                           "s", "steps[0].forward.input.random.shape", "more than the limit of 10000000"),
    "alias_bomb": Row(BOMB, None, "lol6[7]", "alias bomb", name="laughs.yaml"),
    "alias_bomb_in_a_spec": Row(BIG_ANCHOR + spec(steps(*["- forward: {input: *e}" for _ in range(20)])),
                                "s", "steps[13].forward.input", "alias bomb"),
    "unknown_limit": Row(HEAD + "limits: {max_case: 100}\n" + spec(steps("- check"), head=""),
                         None, "limits.max_case", "Extra inputs"),
    # what a backend never needs to see: steps that cannot run on any module
    "backward_without_forward": Row(spec(steps(f"- backward: {{grad: {G}}}")),
                                    "s", "steps[0].backward.grad", "no forward before this backward"),
    "grad_shape": Row(spec(steps(f"- forward: {{input: {G}}}", "- backward: {grad: [[1, 2]]}")),
                      "s", "steps[1].backward.grad", "(2, 2)"),
    "load_from_nothing_saved": Row(spec(steps(f"- forward: {{input: {G}}}", "- load_state_dict: {from: saved}")),
                                   "s", "steps[1].load_state_dict.from", "no state_dict step"),
    "output_before_forward": Row(spec(steps("- check:", "  expect: {output: oracle}")),
                                 "s", "steps[0].expect.output", "no step before it"),
    # the kinds the schema always caught
    "unknown_quantity": Row(spec(steps(f"- forward: {{input: {G}}}", "  expect: {running_mena: oracle}")),
                            "s", "steps[0].expect", "running_mena"),
    "unknown_action": Row(spec(steps(f"- forwrd: {{input: {G}}}")), "s", "steps[0]", "forwrd"),
    "wrong_type": Row(spec("    config: {num_features: two}\n" + steps("- check")),
                      "s", "config.num_features", "integer"),
    "ragged_literal": Row(spec(steps("- forward: {input: [[1, 2], [3]]}")), "s", "steps[0].forward.input", "rectangular"),
    "unknown_error_type": Row(spec(steps("- forward: {input: [[1, 2]]}", "  expect: {error: {type: ValueErr}}")),
                              "s", "steps[0].expect.error.type", "ValueError"),
    "duplicate_spec_id": Row(spec(steps("- check")) + "  - id: s\n    description: e\n" + steps("- eval"),
                             "s", "id", "duplicate spec id"),
    "case_id_of_a_builtin": Row(spec(steps("- check"), spec_id="cumulative_golden",
                                     head="family: momentum\ntitle: t\n"),
                                "cumulative_golden", "id", "also defined in", name="mine.yaml"),
    "missing_steps": Row(spec(""), "s", "steps", "Field required"),
    "bad_grid_key": Row(spec("    grid: {mode: [a, b]}\n" + steps("- check")), "s", "grid", "'mode'"),
    "empty_grid_values": Row(spec("    grid: {dim: []}\n" + steps("- check")), "s", "grid", "no values"),
    "unknown_capability": Row(spec("    requires: [teleport]\n" + steps("- check")), "s", "requires", "teleport"),
    "invalid_yaml": Row(HEAD + "specs: [\n", None, "", "not valid YAML"),
    "unsafe_yaml_tag": Row("family: !!python/object/apply:os.system ['true']\n", None, "", "python/object"),
    "recursive_alias": Row("loop: &loop [*loop]\n" + spec(steps("- check")), None, "loop[0]", "contains it"),
    "nested_too_deeply": Row(HEAD + "anchors: " + "[" * 3000 + "]" * 3000 + "\n", None, "", "nested too deeply"),
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.parametrize("row", [pytest.param(r, id=k) for k, r in ROWS.items()])
def test_cli_refuses_malformed_spec(tmp_path: Path, row: Row) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    path = specs / row.name
    if isinstance(row.text, bytes):
        path.write_bytes(row.text)
    else:
        path.write_text(row.text, encoding="utf-8")
    cpu_before, start = _children_cpu(), time.perf_counter()
    proc, _ = bnconform("--specs", str(specs), "--backend", "numpy", out=tmp_path / "out", timeout=60)
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu_before
    err = proc.stderr.strip()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(err.splitlines()) == 1, err
    assert row.name in err and row.says in err, err
    if row.spec_id:
        assert f"spec {row.spec_id!r}" in err, err
    if row.key:
        assert f": {row.key}: " in err, err
    # A usage error is reported without running anything: the start-up and the YAML reading only
    # (~2-6 s: the pure-Python YAML composer reads the built-in library's 20 files first, and the
    # deepest row recurses 3000 levels). The bound is on the command's own CPU time, which other
    # work on a busy machine does not inflate; it and the wall time guard against a hang.
    assert cpu < 15 and seconds < 60, f"{cpu:.1f} s CPU, {seconds:.1f} s wall"


def test_rows_are_distinct() -> None:
    assert len(ROWS) >= 25
    assert len({r.text for r in ROWS.values()}) == len(ROWS)


def load_error(tmp_path: Path, text: Union[str, bytes]) -> tuple[str, float]:
    path = tmp_path / "bad.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    start = time.perf_counter()
    with pytest.raises(SpecError) as info:
        load_file(path)
    return str(info.value), time.perf_counter() - start


def test_alias_bomb_fails_fast(tmp_path: Path) -> None:
    """Refused from the node graph, in well under a second: nothing is constructed or copied."""
    msg, seconds = load_error(tmp_path, BOMB)
    assert "alias bomb" in msg and seconds < 0.5


def test_grid_of_a_million_fails_fast(tmp_path: Path) -> None:
    msg, seconds = load_error(tmp_path, ROWS["grid_of_a_million"].text)
    assert "1000000 cases" in msg and seconds < 0.5


def test_limits_are_raised_by_the_spec_file(tmp_path: Path) -> None:
    grid = "    grid: {eps: [1.0e-5, 1.0e-4, 1.0e-3], momentum: [0.1, 0.2, 0.3, 0.4]}\n" + steps("- check")
    text = spec(grid).replace("defaults:", "limits: {max_cases: 10}\ndefaults:")
    msg, _ = load_error(tmp_path, text)
    assert "12 cases, more than the limit of 10" in msg
    assert len(load_file(write_spec(tmp_path, "ok.yaml", text.replace("max_cases: 10", "max_cases: 12")))) == 12
    big = spec(steps("- forward: {input: {random: {seed: 5, shape: [6, 2, 3]}}}"))
    msg, _ = load_error(tmp_path, big.replace("defaults:", "limits: {max_elements: 30}\ndefaults:"))
    assert "36 elements, more than the limit of 30" in msg
    assert len(load_file(write_spec(tmp_path, "ok.yaml", big.replace("defaults:", "limits: {max_elements: 36}\ndefaults:")))) == 1


def test_what_stays_valid(tmp_path: Path) -> None:
    """Merge keys may override what they merge; a forward that expects an error may feed any shape;
    C is free when neither weight nor buffers check it; NaN is expected through `oracle`."""
    text = spec(
        "    config: {<<: {dim: 2, momentum: 0.5}, dim: 1}\n" + steps(
            "- forward: {input: [[1, 2, 3]]}",
            "  expect: {error: {type: RuntimeError, match: 'running_mean should contain 3 elements'}}",
            "- forward: {input: {random: {seed: 1, shape: [0, 2]}}}",
            "  expect: {output: oracle, running_mean: [0, 0], num_batches_tracked: 1}",
        )
    ) + "  - id: free_channels\n    description: d\n    config: {affine: false, track_running_stats: false}\n" + \
        steps("- forward: {input: [[1, 2, 3], [4, 5, 6]]}", "  expect: {output: oracle}")
    cases = load_file(write_spec(tmp_path, "ok.yaml", text))
    assert [c.config.dim for c in cases] == [1, 1] and cases[0].config.momentum == 0.5


def test_builtin_library_still_loads() -> None:
    cases = load_cases([BUILTIN_SPECS])  # 869 before the shapes library, 1818 in the default tier with it
    assert len(cases) == 1971 and sum(c.tier == "default" for c in cases) == 1818


def test_plugin_reports_a_spec_error_as_a_collection_error(tmp_path: Path) -> None:
    """The same SpecError through a user's own pytest with the plugin: a collection error naming it."""
    specs = tmp_path / "specs"
    text = ROWS["golden_nan"].text
    assert isinstance(text, str)
    write_spec(specs, "bad.yaml", text)
    test = write_spec(tmp_path, "test_mine.py", "from bnconform.testing import test_conformance  # noqa: F401\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(test), "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "--bnconform-specs", str(specs), "--bnconform-backend", "numpy", "--bnconform-out", str(tmp_path / "out")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in output, output
    assert "bad.yaml: spec 's': steps[0].expect.running_mean: a golden value must be finite" in output, output
