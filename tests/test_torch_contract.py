"""The contract through the torch adapter: a torch module must not write into the tensors it is
handed (the worker checks the NumPy arrays, but the adapter hands the module tensor copies of
them, so only the adapter can see such a write). The modules are tests/torch_factories.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bnconform.runners.backends.protocol import ModuleConfig
from bnconform.runners.backends.torch_backend import TorchModule
from bnconform.runners.engine.contract import ContractViolation
from tests import torch_factories
from tests.helpers import bnconform, write_spec

X = np.array([[1, 2], [3, 6]], np.float32)
FORWARD_DATA = "forward() wrote into the input tensor it was handed: 2 of 4 elements changed, first at index (0, 1): 2.0 -> 3.0"


def module(factory: object = None) -> TorchModule:
    return TorchModule(ModuleConfig.model_validate({"dim": 1, "num_features": 2}), "cpu", factory=factory)


@pytest.mark.parametrize("name", ["writes_input_data", "writes_input_no_grad"])
def test_a_write_into_the_input_past_autograd_fails_the_forward_with_what_was_written(name: str) -> None:
    with pytest.raises(ContractViolation) as info:
        module(getattr(torch_factories, name)).forward(X)
    if name == "writes_input_data":  # the last channel only
        assert str(info.value) == FORWARD_DATA
    else:
        assert str(info.value) == ("forward() wrote into the input tensor it was handed: 4 of 4 elements changed, "
                                   "first at index (0, 0): 1.0 -> 2.0")


def test_a_plain_in_place_write_is_refused_by_autograd_and_seen_under_no_grad_and_inference_mode() -> None:
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):  # a failure already
        module(torch_factories.writes_input_inplace).forward(X)
    for mode in ("no_grad", "inference_mode"):  # the input does not require grad there: the write goes through
        with pytest.raises(ContractViolation, match=r"^forward_with_grad_mode\(\) wrote into the input tensor it was "
                                                    r"handed: 4 of 4 elements changed, first at index \(0, 0\): 1.0 -> 2.0$"):
            module(torch_factories.writes_input_inplace).forward_with_grad_mode(X, mode)


def test_forward_s_input_written_during_backward_and_grad_output_written_in_a_hook_fail_the_backward() -> None:
    kept = module(torch_factories.writes_input_in_backward)
    kept.forward(X)
    with pytest.raises(ContractViolation) as info:
        kept.backward(np.ones_like(X))
    assert str(info.value) == ("backward() wrote into the input tensor that forward() had handed the module: "
                               "4 of 4 elements changed, first at index (0, 0): 1.0 -> 0.0")
    hooked = module(torch_factories.writes_grad_output)
    hooked.forward(X)
    with pytest.raises(ContractViolation) as info:
        hooked.backward(np.full_like(X, 0.5))
    assert str(info.value) == ("backward() wrote into the grad_output tensor it was handed: 4 of 4 elements changed, "
                               "first at index (0, 0): 0.5 -> 1.0")


def test_nan_and_negative_zero_count_as_written_and_shards_are_checked() -> None:
    import torch

    from bnconform.runners.backends.torch_backend import written

    before = torch.tensor([0.0, float("nan"), 1.0])
    assert written(before, before.clone()) is None  # NaN is unchanged when its bits are
    assert written(before, torch.tensor([-0.0, float("nan"), 1.0])) == (
        "1 of 3 elements changed, first at index (0,): 0.0 -> -0.0")
    with pytest.raises(ContractViolation, match=r"^forward_shards\(\) wrote into the input tensor \(its 2 shards "
                                                r"concatenated\) it was handed: 4 of 8 elements"):
        module(torch_factories.writes_input_data).forward_shards([X, X])


def test_torch_s_own_module_hands_back_every_tensor_unchanged() -> None:
    m = module()
    m.forward(X)
    m.backward(np.ones_like(X))
    m.forward(X)
    m.double_backward(np.ones_like(X), np.full_like(X, 2.0))
    m.forward_with_grad_mode(X, "inference_mode")
    m.forward_shards([X, X])
    m.load_state_dict(m.state_dict())
    m.eval()
    m.forward(X)
    m.backward(np.ones_like(X))
    # one clone per handed tensor (the 5 of the state dict included), each checked after every call since
    assert len(m.handed.held) == 14


SPEC = """
family: tmp_torch_contract
title: a torch module writing into what it is handed
defaults: {dim: 1, num_features: 2}
specs:
  - id: forward_golden
    description: one forward
    steps:
      - forward: {input: [[1, 2], [3, 6]]}
        expect: oracle
  - id: no_grad
    description: a forward under no_grad
    steps:
      - forward: {input: [[1, 2], [3, 6]], grad_mode: no_grad}
        expect: oracle
  - id: inference_mode
    description: a forward under inference_mode
    steps:
      - forward: {input: [[1, 2], [3, 6]], grad_mode: inference_mode}
        expect: oracle
  - id: backward
    description: a forward and its backward
    steps:
      - forward: {input: [[1, 2], [3, 6]]}
        expect: oracle
      - backward: {grad: [[1, 1], [1, 1]]}
        expect: oracle
"""
LEAF = "step 1 (forward) raised RuntimeError: a leaf Variable that requires grad"  # autograd refuses: a failure already
INPLACE = ("step 1 (forward): forward_with_grad_mode() wrote into the input tensor it was handed: 4 of 4 elements "
           "changed, first at index (0, 0): 1.0 -> 2.0")
FACTORIES = {  # factory -> {case: the start of its cell's message, or "passed"}
    "writes_input_data": {"forward_golden": "step 1 (forward): " + FORWARD_DATA,
                          "no_grad": "step 1 (forward): forward_with_grad_mode" + FORWARD_DATA[len("forward"):],
                          "inference_mode": "step 1 (forward): forward_with_grad_mode" + FORWARD_DATA[len("forward"):],
                          "backward": "step 1 (forward): " + FORWARD_DATA},
    "writes_input_inplace": {"forward_golden": LEAF, "backward": LEAF, "no_grad": INPLACE, "inference_mode": INPLACE},
    "writes_input_in_backward": {"backward": "step 2 (backward): backward() wrote into the input tensor that forward() "
                                             "had handed the module: 4 of 4 elements changed, first at index (0, 0): "
                                             "1.0 -> 0.0"},
    "writes_grad_output": {"backward": "step 2 (backward): backward() wrote into the grad_output tensor it was handed: "
                                       "4 of 4 elements changed, first at index (0, 0): 1.0 -> 2.0"},
}


def test_the_cells_of_a_writing_module_fail_with_what_it_wrote_and_torch_s_own_pass(tmp_path: Path) -> None:
    write_spec(tmp_path / "specs", "contract.yaml", SPEC)
    backends = [f"torch-module:tests.torch_factories:{name}" for name in FACTORIES] + ["torch-module:torch.nn:BatchNorm1d"]
    proc, report = bnconform(*[a for b in backends for a in ("--backend", b)], "--specs", str(tmp_path / "specs"),
                             "--family", "tmp_torch_contract", "--progress", "off", out=tmp_path / "out")
    assert proc.returncode == 1 and report is not None, proc.stdout[-3000:]
    cells = {(r["backend"], r["spec"].split("/")[1]): r for r in report["results"]}
    assert len(cells) == 4 * len(backends)
    for (backend, case), cell in cells.items():
        name = backend.rpartition(":")[2]
        expected = FACTORIES.get(name, {}).get(case)
        if expected is None:  # nothing written in this case (torch's own module: nowhere)
            assert cell["outcome"] == "passed", (backend, case, cell["message"])
        else:
            assert cell["outcome"] == "failed" and cell["message"].startswith(expected), (backend, case, cell["message"])
            assert cell["diagnosis"] == []  # a contract breach is never diagnosed
