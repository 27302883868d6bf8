"""An input with the wrong number of channels raises ValueError, where torch raises RuntimeError."""
# requires: paddle
import warnings

import numpy as np
import paddle

warnings.simplefilter("ignore")
bn = paddle.nn.BatchNorm1D(3)
try:
    bn(paddle.to_tensor(np.ones((4, 2), "float32")))
except Exception as exc:
    print(type(exc).__name__, str(exc).splitlines()[0][:120])
    assert type(exc) is ValueError and "ShapeError" in str(exc)
else:
    raise AssertionError("no exception: the check is gone")
