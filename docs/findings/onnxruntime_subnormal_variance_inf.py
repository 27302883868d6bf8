"""ONNX Runtime's training-mode BatchNormalization outputs inf and NaN when var + eps is a float32
subnormal, though it computes that variance right.

float32 data at scale 1e-20 have a variance of ~1e-40, below float32's smallest normal 1.2e-38;
with eps 1e-45 (magnitudes/underflow_tiny_eps) var + eps is a subnormal. The op's running
variance (momentum 0: the batch's) is that subnormal, right to 1e-5, but the training output is
+-inf and NaN: its 1/sqrt(var + eps) is +inf. The eval path with the same variance is right, and
so is torch.
"""
# requires: onnxruntime, onnx, torch
import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

F = TensorProto.FLOAT


def session(training: bool) -> ort.InferenceSession:
    outs = ["y", "rm", "rv"] if training else ["y"]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], outs, epsilon=1e-45, momentum=0.0,
                            training_mode=int(training))
    graph = helper.make_graph([node], "bn", [helper.make_tensor_value_info(n, F, None) for n in "xsbmv"],
                              [helper.make_tensor_value_info(n, F, None) for n in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


x = (np.random.RandomState(0).randn(1, 3, 16384) * 1e-20).astype(np.float32)
one, zero = np.ones(3, np.float32), np.zeros(3, np.float32)
y, _, batch_var = session(True).run(None, {"x": x, "s": one, "b": zero, "m": zero, "v": one})
exact_var = x.astype(np.float64).var(axis=(0, 2))
print("training output", y[0, 0, :4], "batch variance", batch_var, "exact", exact_var)
np.testing.assert_allclose(batch_var, exact_var, rtol=1e-4)  # the variance itself is right
assert not np.isfinite(y).any(), "the training output is finite now: the finding is gone"
(y_eval,) = session(False).run(None, {"x": x, "s": one, "b": zero, "m": zero, "v": batch_var})
expected = (x.astype(np.float64) / np.sqrt(batch_var.astype(np.float64) + 1.4e-45)[None, :, None])
np.testing.assert_allclose(y_eval, expected, rtol=1e-4, atol=1e-4)  # eval with that variance is right
tbn = torch.nn.BatchNorm1d(3, eps=1e-45, affine=False)
assert torch.isfinite(tbn(torch.from_numpy(x))).all(), "torch is finite here"
