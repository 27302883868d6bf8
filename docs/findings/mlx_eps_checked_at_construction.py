"""eps <= 0 is refused by the constructor: `nn.BatchNorm(C, eps=0)` raises ValueError
("[BatchNorm] 'eps' must be positive but got 0.0").

torch builds such a module and checks eps in the forward: ValueError in training (and with
batch statistics in eval) for eps <= 0, and in eval with buffers for eps < 0; eps = 0 in eval
with buffers normalises by sqrt(running_var). MLX has no module with eps = 0 at all.
"""
# requires: mlx
import mlx.nn as nn

for eps in (0.0, -0.5, -1.0):
    try:
        nn.BatchNorm(2, eps=eps)
    except ValueError as exc:
        print(eps, "->", exc)
        assert "'eps' must be positive" in str(exc)
    else:
        raise AssertionError(f"eps={eps} was accepted")
