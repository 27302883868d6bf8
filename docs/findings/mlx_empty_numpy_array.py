"""An mx.array made from a zero-size NumPy array can make a later evaluation hang.

Not a BatchNorm finding, and outside the matrix (the mlx adapter makes zero-size arrays with
mx.zeros instead): 2000 times, a BatchNorm training call on mx.array(np.zeros((0, 2))) and the
conversion of its output and running statistics back to NumPy. With mlx 0.32.4 on x86_64 Linux
(CPU) that loop hung within 20 s in most runs; the same loop on mx.zeros((0, 2)) never did.
(Before the adapter avoided such arrays, the weight and bias gradients of an empty eval batch also
came back as garbage, e.g. -7.7e24, in about half the runs.) The hang is intermittent: each
variant runs in up to five child processes, and the finding holds when the NumPy one hangs at
least once and the MLX one never does.
"""
# requires: mlx
import subprocess
import sys

LOOP = """
import faulthandler, mlx.core as mx, mlx.nn as nn, numpy as np
faulthandler.dump_traceback_later(20, exit=True)
for _ in range(2000):
    bn = nn.BatchNorm(2)
    y = bn({source})
    np.array(y); np.array(bn.running_mean); np.array(bn.running_var)
"""


def hangs(source: str) -> bool:
    done = subprocess.run([sys.executable, "-c", LOOP.format(source=source)], capture_output=True, text=True,
                          timeout=120)
    return "Timeout" in done.stderr


numpy_hangs = sum(hangs("mx.array(np.zeros((0, 2), np.float32))") for _ in range(5))
mlx_hangs = sum(hangs("mx.zeros((0, 2))") for _ in range(5))
print(f"hung in {numpy_hangs} of 5 runs from NumPy, {mlx_hangs} of 5 from mx.zeros")
assert numpy_hangs >= 1, "no hang from a zero-size NumPy array any more: the finding is gone"
assert mlx_hangs == 0
