"""Spec files: safe loading, schema errors that name file, spec and key, and grid expansion."""
from __future__ import annotations

from pathlib import Path

import pytest

from bnconform.cases.loader import BUILTIN_SPECS, SpecError, load_cases, load_file
from tests.helpers import SHAPE_FAMILIES, write_spec

GOOD = """
family: demo
title: demo
specs:
  - id: grid
    description: d
    config: {num_features: 2}
    grid: {dim: [1, 2], momentum: [0.1, null]}
    steps:
      - forward: {input: {random: {seed: 1, shape: {1: [4, 2], 2: [2, 2, 2, 2]}}}}
        expect: oracle
"""


def error_of(tmp_path: Path, text: str) -> str:
    path = write_spec(tmp_path, "bad.yaml", text)
    with pytest.raises(SpecError) as info:
        load_file(path)
    return str(info.value)


def test_grid_expands_with_readable_ids(tmp_path: Path) -> None:
    cases = load_file(write_spec(tmp_path, "good.yaml", GOOD))
    assert [c.id for c in cases] == [
        "demo/grid[dim=1,momentum=0.1]",
        "demo/grid[dim=1,momentum=None]",
        "demo/grid[dim=2,momentum=0.1]",
        "demo/grid[dim=2,momentum=None]",
    ]
    assert cases[1].config.momentum is None and cases[2].config.dim == 2
    assert "momentum_none" in cases[1].requires and "momentum_none" not in cases[0].requires


def test_bad_key_names_file_spec_and_path(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace("expect: oracle", "expect: {outptu: oracle}"))
    assert "bad.yaml" in msg and "spec 'grid'" in msg and "steps[0]" in msg and "outptu" in msg


def test_bad_config_value_names_key(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace("config: {num_features: 2}", "config: {num_features: 2, dim: 4}"))
    assert "spec 'grid'" in msg and "dim" in msg


def test_unknown_grid_key(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace("momentum: [0.1, null]", "mode: [a]"))
    assert "grid" in msg and "'mode'" in msg


def test_unknown_action(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace("- forward:", "- forwrd:"))
    assert "steps[0]" in msg and "forwrd" in msg


def test_ragged_literal(tmp_path: Path) -> None:
    text = GOOD.replace("{random: {seed: 1, shape: {1: [4, 2], 2: [2, 2, 2, 2]}}}", "[[1, 2], [3]]")
    assert "rectangular" in error_of(tmp_path, text)


def test_invalid_yaml_is_reported_with_file(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "family: demo\nspecs: [\n")
    assert "bad.yaml" in msg and "YAML" in msg


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "family: !!python/object/apply:os.system ['true']\n")
    assert "bad.yaml" in msg


def test_duplicate_case_ids_across_files(tmp_path: Path) -> None:
    write_spec(tmp_path / "a", "one.yaml", GOOD)
    write_spec(tmp_path / "b", "two.yaml", GOOD)
    with pytest.raises(SpecError, match="also defined"):
        load_cases([tmp_path / "a", tmp_path / "b"])


def test_builtin_library_shape() -> None:
    """The library: the eleven module-logic families, the seven beyond float32 (precision,
    layout, autograd depth, checkpoints, execution modes, folding, shards) and the two of the
    shapes library (shapes, magnitudes), a golden case in each; at least 150 cases in the first
    eleven, 200 in the seven and 900 in the two."""
    cases = load_cases([BUILTIN_SPECS])
    families = {c.family for c in cases}
    first = {"conditions", "toggling", "none_cases", "bessel", "momentum", "eps",
             "gradients", "freezing", "state", "errors", "stability"}
    beyond = {"precision", "layout", "autograd", "checkpoints", "modes", "fold", "shards"}
    shapes = set(SHAPE_FAMILIES)
    assert families == first | beyond | shapes
    assert len([c for c in cases if c.family in first]) >= 150
    assert len([c for c in cases if c.family in beyond]) >= 200
    assert len([c for c in cases if c.family in shapes]) >= 900
    for family in families:
        assert any(c.family == family and c.spec_id.endswith("_golden") for c in cases), family
        assert any(c.family == family and not c.spec_id.endswith("_golden") for c in cases), family


def test_golden_specs_have_derivation_comments() -> None:
    """Every file with golden numbers explains where they come from (comment lines)."""
    for path in sorted(BUILTIN_SPECS.glob("*.yaml")):
        text = path.read_text()
        if "_golden" in text:
            assert sum(line.lstrip().startswith("#") for line in text.splitlines()) >= 3, path.name


def test_worked_example_in_the_docs_loads_and_passes(tmp_path: Path) -> None:
    """docs/spec-format.md's complete example is a real spec: it loads and passes on numpy."""
    from bnconform.runners.backends.numpy_backend import NumpyBackend
    from bnconform.runners.engine.execute import run_case

    doc = (BUILTIN_SPECS.parent / "docs" / "spec-format.md").read_text()
    example = doc.split("```yaml", 1)[1].split("```", 1)[0]
    cases = load_file(write_spec(tmp_path, "example.yaml", example))
    assert len(cases) == 7
    assert all(run_case(c, NumpyBackend()).outcome == "passed" for c in cases)


NEW_CHECKS = """
family: demo
title: demo
defaults: {dim: 1, num_features: 2}
specs:
  - id: bad
    description: d
"""


@pytest.mark.parametrize(("body", "key", "words"), [
    pytest.param("config: {lazy: true}\ninit: {weight: [1, 2]}\nsteps: [{forward: {input: [[1, 2], [3, 6]]}}]",
                 "init:", "lazy module", id="lazy_with_init"),
    pytest.param("config: {bias: false}\ninit: {bias: [1, 2]}\nsteps: [{forward: {input: [[1, 2], [3, 6]]}}]",
                 "init.bias", "bias=False", id="bias_init_without_bias"),
    pytest.param("steps: [{forward: {input: [[1, 2], [3, 6]], layout: channels_last}}]",
                 "steps[0].forward.layout", "4-D", id="layout_vs_rank"),
    pytest.param("config: {dim: 2, num_features: 1}\nsteps: [{forward: {shards: [{random: {seed: 1, shape: [2, 1, 1, 2]}},"
                 " {random: {seed: 2, shape: [2, 1, 1, 3]}}]}}]",
                 "steps[0].forward.shards[1]", "beyond the batch axis", id="shards_disagree"),
    pytest.param("steps: [{forward: {shards: [[[1, 2]], [[3, 6]]]}}, {backward: {grad: [[1, 1], [1, 1]]}}]",
                 "steps[1].backward.grad", "no forward", id="backward_after_shards"),
    pytest.param("config: {training: false}\nsteps: [{fold: {layer: linear, weight: [[1, 2, 3]]}}]",
                 "steps[0].fold.weight", "num_features=2 output channels", id="fold_weight_channels"),
    pytest.param("config: {training: false, dim: 2}\nsteps: [{fold: {layer: conv, weight: [[[1, 2]], [[3, 4]]]}}]",
                 "steps[0].fold.weight", "4-D", id="fold_conv_rank"),
    pytest.param("config: {training: false}\nsteps: [{fold: {layer: linear, weight: [[1, 2], [3, 4]], input: [[1, 2, 3]]}}]",
                 "steps[0].fold.input", "does not fit", id="fold_input"),
    pytest.param("steps: [{forward: {input: [[1, 2], [3, 6]], grad_mode: no_grad}},"
                 " {double_backward: {grad: [[1, 1], [1, 1]], probe: [[1, 1], [1, 1]]}}]",
                 "steps[1].double_backward.grad", "with a graph", id="double_backward_without_graph"),
    pytest.param("steps: [{forward: {input: [[1, 2], [3, 6]]}}, {double_backward: {grad: [[1, 1], [1, 1]], probe: [[1, 1]]}}]",
                 "steps[1].double_backward.probe", "input's shape", id="probe_shape"),
    pytest.param("steps: [{forward: {input: [[1, 2], [3, 6]]}, expect: {gradgrad_input: oracle}}]",
                 "steps[0].expect.gradgrad_input", "double_backward", id="gradgrad_not_observable"),
])
def test_load_checks_of_the_new_steps_name_the_key(tmp_path: Path, body: str, key: str, words: str) -> None:
    """docs/spec-format.md's load-time checks for layouts, shards, folds, double backward, lazy and bias=False."""
    text = NEW_CHECKS + "".join(f"    {line}\n" for line in body.splitlines())
    msg = error_of(tmp_path, text)
    assert f"spec 'bad': {key}" in msg and words in msg, msg
