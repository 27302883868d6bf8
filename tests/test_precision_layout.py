"""Dtype and layout are checked quantities: a backend with the right numbers in the wrong
dtype or layout fails, naming which; strides survive the trip to the backend's worker; the
oracle's new steps agree with torch computed independently (autograd, fusion)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bnconform.cases import layouts
from bnconform.cases.dtypes import accepts, numpy_dtype
from bnconform.cases.oracle import Oracle, OracleError
from bnconform.cases.schema import ModuleConfig
from bnconform.runners.engine import transport
from tests.helpers import bnconform, write_spec

SPEC = """
family: probe
title: dtype and layout probes
specs:
  - id: channels_last
    description: channels_last in, channels_last out
    steps:
      - forward: {input: {random: {seed: 1, shape: [2, 3, 2, 2]}}, layout: channels_last}
        expect: oracle
  - id: strided
    description: a sliced view
    steps:
      - forward: {input: {random: {seed: 1, shape: [4, 3]}}, layout: strided}
        expect: oracle
    config: {dim: 1}
  - id: half_input
    description: float16 into float32
    config: {input_dtype: float16, dim: 1}
    steps:
      - forward: {input: {random: {seed: 1, shape: [4, 3]}}}
        expect: oracle
"""


def _run(backend: str, case: str, tmp_path: Path) -> dict:
    specs = tmp_path / "specs"
    write_spec(specs, "probe.yaml", SPEC)
    proc, report = bnconform("--backend", backend, "--specs", str(specs), "--family", "probe", "--case", case,
                             out=tmp_path / "out")
    assert report is not None, proc.stderr[-2000:]
    (cell,) = report["results"]
    return cell


@pytest.mark.parametrize(("backend", "case", "message"), [
    ("tests.broken_backends:contiguous_output", "probe/channels_last",
     "layout differs: expected channels_last, got contiguous"),
    ("tests.broken_backends:output_in_float32", "probe/half_input", "dtype differs: expected float16, got float32"),
    ("tests.broken_backends:ignores_strides", "probe/strided", "output differs after step 1 (forward)"),
])
def test_right_values_in_the_wrong_form_fail_naming_it(backend: str, case: str, message: str, tmp_path: Path) -> None:
    cell = _run(backend, case, tmp_path)
    assert cell["outcome"] == "failed" and message in cell["message"], cell["message"]


@pytest.mark.parametrize("case", ["probe/channels_last", "probe/strided", "probe/half_input"])
def test_the_numpy_backend_in_its_worker_passes_the_same_probes(case: str, tmp_path: Path) -> None:
    # The worker runs in another process: a channels_last input that arrived contiguous would
    # come back contiguous and fail the layout check above.
    assert _run("numpy", case, tmp_path)["outcome"] == "passed"


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_transport_keeps_the_layout_and_values(layout: str) -> None:
    a = layouts.arrange(np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2), layout)
    back = transport.unpack(transport.pack(("x", [a], {"k": a})))
    for got in (back[1][0], back[2]["k"]):
        assert np.array_equal(got, a) and layouts.matches(got, layout) and got.dtype == a.dtype


def test_layout_names() -> None:
    x = np.zeros((2, 3, 4, 5))
    assert layouts.describe(layouts.arrange(x, "channels_last")) == "channels_last"
    assert layouts.describe(layouts.arrange(np.zeros((2, 3, 2, 4, 5)), "channels_last_3d")) == "channels_last_3d"
    assert layouts.describe(layouts.arrange(x, "strided")).startswith("strided")
    assert layouts.output_layout("strided") == "contiguous" and layouts.output_layout("channels_last") == "channels_last"
    with pytest.raises(ValueError, match="needs a 4-D"):
        layouts.arrange(np.zeros((2, 3)), "channels_last")


@pytest.mark.parametrize(("affine", "tracked"), [(True, True), (True, False), (False, True), (False, False)])
def test_torch_accepts_exactly_the_dtype_pairs_the_oracle_does(affine: bool, tracked: bool) -> None:
    names = ("float16", "bfloat16", "float32", "float64")
    for module in names:
        for data in names:
            for training in (True, False):
                m = torch.nn.BatchNorm1d(2, affine=affine, track_running_stats=tracked).to(getattr(torch, module))
                m.train(training)
                try:
                    m(torch.ones(3, 2, dtype=getattr(torch, data)))
                    ok = True
                except RuntimeError:
                    ok = False
                o = Oracle(ModuleConfig.model_validate({"dim": 1, "num_features": 2, "dtype": module,
                                                        "affine": affine, "track_running_stats": tracked}))
                if not training:
                    o.eval()
                try:
                    o.forward(np.ones((3, 2), dtype=numpy_dtype(data)))
                    oracle_ok = True
                except OracleError:
                    oracle_ok = False
                assert oracle_ok == ok, (module, data, affine, tracked, training)
                if affine or tracked:
                    assert accepts(module, data) == ok


def test_bfloat16_arrays_round_to_nearest_even() -> None:
    # 1 + 2**-8 is halfway between bfloat16 neighbours 1 and 1 + 2**-7: ties go to the even one, 1.
    assert float(np.array([1 + 2.0**-8]).astype(numpy_dtype("bfloat16"))[0]) == 1.0
    assert float(np.array([1 + 3 * 2.0**-8]).astype(numpy_dtype("bfloat16"))[0]) == 1 + 2.0**-6


@pytest.mark.parametrize("training", [True, False])
def test_oracle_double_backward_matches_torch_autograd(training: bool) -> None:
    rng = np.random.default_rng(3)
    x, dy, v = (rng.normal(size=(3, 2, 2, 3)) for _ in range(3))
    w = np.array([1.5, -0.5])
    o = Oracle(ModuleConfig(dim=2, num_features=2, dtype="float64"))
    o.weight, o.running_mean, o.running_var = w.copy(), np.array([0.2, -0.1]), np.array([2.0, 0.5])
    m = torch.nn.BatchNorm2d(2).double()
    with torch.no_grad():
        m.weight.copy_(torch.tensor(w))
        m.running_mean.copy_(torch.tensor([0.2, -0.1]))
        m.running_var.copy_(torch.tensor([2.0, 0.5]))
    if not training:
        o.eval()
        m.eval()
    o.forward(x)
    got = o.double_backward(dy, v)
    xt, dyt = torch.tensor(x, requires_grad=True), torch.tensor(dy, requires_grad=True)
    (gx,) = torch.autograd.grad(m(xt), xt, dyt, create_graph=True)
    want = torch.autograd.grad((gx * torch.tensor(v)).sum(), (xt, m.weight, dyt), materialize_grads=True,
                               allow_unused=True)
    for key, t in zip(("input", "weight", "output"), want):
        np.testing.assert_allclose(got[key], t.numpy(), rtol=1e-11, atol=1e-12)


def test_oracle_fold_matches_torch_fusion() -> None:
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    rng = np.random.default_rng(4)
    conv = torch.nn.Conv2d(2, 3, 2).double().eval()
    bn = torch.nn.BatchNorm2d(3).double().eval()
    o = Oracle(ModuleConfig(dim=2, num_features=3, dtype="float64"))
    o.eval()
    with torch.no_grad():
        for name in ("running_mean", "running_var", "weight", "bias"):
            value = rng.uniform(0.5, 2.0, size=3)
            getattr(bn, name).copy_(torch.tensor(value))
            setattr(o, name, value)
    fused = fuse_conv_bn_eval(conv, bn)
    w, b = o.fold("conv", conv.weight.detach().numpy(), conv.bias.detach().numpy())
    np.testing.assert_allclose(w, fused.weight.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(b, fused.bias.detach().numpy(), rtol=1e-14)
    o.train()
    with pytest.raises(OracleError, match="Fusion only for eval"):
        o.fold("conv", conv.weight.detach().numpy(), None)


def test_oracle_shards_equal_the_concatenation() -> None:
    rng = np.random.default_rng(5)
    shards = [rng.normal(size=(n, 2, 3)) + k for k, n in enumerate((1, 3, 4))]
    a = Oracle(ModuleConfig(dim=1, num_features=2, dtype="float64"))
    b = Oracle(ModuleConfig(dim=1, num_features=2, dtype="float64"))
    ys = a.forward_shards(shards)
    y = b.forward(np.concatenate(shards))
    np.testing.assert_allclose(np.concatenate(ys), y, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(a.running_var, b.running_var, rtol=1e-13)
    assert a.num_batches_tracked == b.num_batches_tracked == 1
