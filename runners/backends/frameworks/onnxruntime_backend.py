"""ONNX Runtime's BatchNormalization-15 (CPU provider), as a kernel inside KernelModule.

ONNX has operators, not modules: bnconform's KernelModule supplies PyTorch's module semantics
(flags, counter, state) around the operator, so what is tested is the operator's arithmetic
and conventions. From the ONNX operator specification (BatchNormalization, opset 15):
  - training_mode=1 outputs Y, running_mean, running_var with
    running_mean = input_mean * momentum + current_mean * (1 - momentum)   -> momentum is the
    weight of the old value (decay convention, default 0.9);
    current_var is the *population* variance (ReduceVar over all axes but the channel) and
    running_var = input_var * momentum + current_var * (1 - momentum)      -> biased running_var;
  - epsilon default 1e-05; scale and B are required inputs (affine=False passes 1 and 0);
  - nothing in the spec rejects a single value per channel (its variance is 0).
No backward: ONNX Runtime's inference sessions do not differentiate.
"""
from __future__ import annotations

from importlib.metadata import version
from typing import Any, Optional

import numpy as np

from bnconform.runners.backends.frameworks import KERNEL_MODULE_ONLY, OperatorBackend, operator_capabilities
from bnconform.runners.backends.protocol import Conventions

PROFILE = Conventions(momentum="decay", running_var="biased", default_eps=1e-5, one_value_raises=False)


class OrtKernel:
    """kernel_module.Kernel over one-node ONNX models, one cached session per signature."""

    def __init__(self) -> None:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        self.sessions: dict[tuple, Any] = {}

    def _session(self, rank: int, dtype: np.dtype, training: bool, eps: float, momentum: float) -> Any:
        key = (rank, dtype.str, training, eps, momentum)
        if key not in self.sessions:
            import onnx
            import onnxruntime as ort
            from onnx import TensorProto, helper

            et = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
            dims = ["N", "C"] + [f"S{i}" for i in range(rank - 2)]
            inputs = [helper.make_tensor_value_info("X", et, dims)] + [
                helper.make_tensor_value_info(n, et, ["C"]) for n in ("scale", "B", "mean", "var")]
            outs = ["Y", "running_mean", "running_var"] if training else ["Y"]
            outputs = [helper.make_tensor_value_info("Y", et, dims)] + [
                helper.make_tensor_value_info(n, et, ["C"]) for n in outs[1:]]
            node = helper.make_node("BatchNormalization", ["X", "scale", "B", "mean", "var"], outs,
                                    epsilon=eps, momentum=momentum, training_mode=int(training))
            graph = helper.make_graph([node], "bn", inputs, outputs)
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
            model.ir_version = 8
            onnx.checker.check_model(model)
            self.sessions[key] = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return self.sessions[key]

    @staticmethod
    def _affine(x: np.ndarray, weight: Optional[np.ndarray], bias: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        c = x.shape[1]
        return (np.ones(c, x.dtype) if weight is None else weight, np.zeros(c, x.dtype) if bias is None else bias)

    def forward_train(self, x, weight, bias, running_mean, running_var, factor, eps):
        c = x.shape[1]
        scale, b = self._affine(x, weight, bias)
        mean_in = running_mean if running_mean is not None else np.zeros(c, x.dtype)
        var_in = running_var if running_var is not None else np.ones(c, x.dtype)
        sess = self._session(x.ndim, x.dtype, True, float(eps), 1.0 - float(factor))  # ONNX momentum: decay
        y, rm, rv = sess.run(None, {"X": x, "scale": scale, "B": b, "mean": mean_in, "var": var_in})
        if running_mean is not None:
            running_mean[...], running_var[...] = rm, rv
        nan = np.full(c, np.nan)
        return y, nan, nan  # backward is not supported

    def forward_eval(self, x, weight, bias, running_mean, running_var, eps):
        scale, b = self._affine(x, weight, bias)
        sess = self._session(x.ndim, x.dtype, False, float(eps), 0.9)
        return sess.run(None, {"X": x, "scale": scale, "B": b, "mean": running_mean, "var": running_var})[0]

    def backward_train(self, *args):  # pragma: no cover - capability not declared
        raise NotImplementedError

    backward_eval = backward_train


def _probe() -> None:
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401


class OnnxRuntimeBackend(OperatorBackend):
    name = "onnxruntime"
    conventions = PROFILE
    install_hint = "pip install onnx onnxruntime"
    probe = staticmethod(_probe)
    kernel_type = OrtKernel  # the operator accepts one value per channel: declared, so not checked

    def __init__(self) -> None:
        # Only what exercises ORT's own kernel: float32 and float64 (16-bit data would reach ORT
        # widened to float32 by KernelModule), no layouts (ORT would get NCHW copies), no fold or
        # grad modes (KernelModule's NumPy, not ORT). The module semantics around it stay declared.
        self.capabilities = operator_capabilities(backward=False, dtypes=frozenset({"float32", "float64"}), without={
            **KERNEL_MODULE_ONLY,
            "mixed_precision": "16-bit data would reach the operator widened to float32 by KernelModule",
            "channels_last": "the operator would get KernelModule's NCHW copies of channels_last input"})

    def version(self) -> str:
        return f"onnxruntime {version('onnxruntime')}, onnx {version('onnx')}"
