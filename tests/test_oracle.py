"""The oracle against numbers derived by hand from docs/semantics.md (no backend involved)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bnconform.cases.oracle import Oracle, OracleError
from bnconform.cases.schema import ModuleConfig

G = np.array([[1.0, 2.0], [3.0, 6.0]])  # means [2, 4], biased vars [1, 4], unbiased [2, 8]


def oracle(**kw: object) -> Oracle:
    return Oracle(ModuleConfig.model_validate({"dim": 1, "num_features": 2, "dtype": "float64", **kw}))


def test_training_step() -> None:
    o = oracle()
    y = o.forward(G)
    assert y[0, 0] == pytest.approx(-1 / math.sqrt(1 + 1e-5), rel=1e-12)
    assert y[1, 1] == pytest.approx(2 / math.sqrt(4 + 1e-5), rel=1e-12)
    assert o.running_mean == pytest.approx([0.2, 0.4]) and o.running_var == pytest.approx([1.1, 1.7])
    assert o.num_batches_tracked == 1


def test_cumulative_average_discards_initial_var() -> None:
    o = oracle(momentum=None)
    o.forward(G)
    o.forward(np.array([[0.0, 0.0], [4.0, 2.0]]))
    assert o.running_mean == pytest.approx([2, 2.5]) and o.running_var == pytest.approx([5, 5])


def test_flip_off_keeps_and_uses_buffers() -> None:
    o = oracle()
    o.forward(G)
    o.set_attribute("track_running_stats", False)
    o.forward(G)
    assert o.num_batches_tracked == 1 and o.running_mean == pytest.approx([0.2, 0.4])
    o.reset_running_stats()
    assert o.running_var == pytest.approx([1.1, 1.7])


def test_decay_convention_inverts() -> None:
    o = oracle(momentum=0.9, momentum_convention="decay")
    o.forward(G)
    assert o.running_mean == pytest.approx([0.2, 0.4])


def test_eval_backward_is_a_scaling() -> None:
    o = Oracle(ModuleConfig(dim=1, num_features=1, dtype="float64"))
    o.assign("running_var", np.array([3.99999]))
    o.training = False
    o.forward(np.array([[0.0], [1.0], [2.0]]))
    g = o.backward(np.array([[1.0], [2.0], [3.0]]))
    assert g["input"].ravel() == pytest.approx([0.5, 1.0, 1.5]) and g["bias"] == pytest.approx([6])


def test_training_backward_sums_to_zero() -> None:
    """dx through batch statistics has zero sum per channel (the mean absorbs a shift)."""
    o = Oracle(ModuleConfig(dim=2, num_features=3, dtype="float64"))
    rng = np.random.default_rng(0)
    o.forward(rng.normal(size=(4, 3, 2, 2)))
    dx = o.backward(rng.normal(size=(4, 3, 2, 2)))["input"]
    assert np.abs(dx.sum(axis=(0, 2, 3))).max() < 1e-12


@pytest.mark.parametrize(
    "kw, x, kind",
    [
        ({}, np.array([[1.0, 2.0]]), "ValueError"),
        ({}, np.ones((2, 3)), "RuntimeError"),
        ({"eps": 0.0}, G, "ValueError"),
        ({}, np.ones((2, 2, 2, 2)), "ValueError"),
    ],
)
def test_errors(kw: dict, x: np.ndarray, kind: str) -> None:
    with pytest.raises(OracleError) as info:
        oracle(**kw).forward(x)
    assert info.value.kind == kind
