"""ONNX Runtime's float64 BatchNormalization normalises with float32(epsilon).

`epsilon` is a float attribute of the ONNX operator (as `momentum` is), so a float64 graph
divides by sqrt(var + float32(1e-5)) = sqrt(var + 9.99999975e-06). Where a channel's variance
is small beside eps this shows at float64's precision: shapes/two_steps_float64[shape=4x31] and
[shape=4x4096] have such channels in their second batch (off by up to 1.9e-9; tolerance 1e-9).
"""
# requires: onnxruntime, onnx
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

D = TensorProto.DOUBLE
node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], epsilon=1e-5,
                        momentum=0.9, training_mode=1)
graph = helper.make_graph([node], "bn", [helper.make_tensor_value_info(n, D, None) for n in "xsbmv"],
                          [helper.make_tensor_value_info(n, D, None) for n in ("y", "rm", "rv")])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
x = np.array([[1.0, 2.0, 3.0], [1.01, 2.02, 3.03], [0.99, 1.98, 2.97], [1.0, 2.0, 3.0]])  # variances 5e-5 .. 4.5e-4
got = session.run(None, {"x": x, "s": np.ones(3), "b": np.zeros(3), "m": np.zeros(3), "v": np.ones(3)})[0]
mean, var = x.mean(axis=0), x.var(axis=0)
exact = (x - mean) / np.sqrt(var + 1e-5)
with_float32_eps = (x - mean) / np.sqrt(var + np.float64(np.float32(1e-5)))
err = np.abs(got - exact).max()
print(f"output error against eps 1e-5: {err:.2e}; against float32(eps): {np.abs(got - with_float32_eps).max():.2e}")
assert err > 1e-10, "the output is float64-exact: the finding is gone"
np.testing.assert_allclose(got, with_float32_eps, rtol=1e-13, atol=1e-15)
