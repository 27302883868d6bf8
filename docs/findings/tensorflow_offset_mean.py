"""FusedBatchNormV3 accumulates the batch mean of float32 data in float32, one running sum per
thread.

(64, 3, 64) float32 values 1e4 + N(0,1), the shape and distribution of stability/offset_1e4[dim=1]
(NumPy's generator here), as NHWC (64, 64, 1, 3). On one intra-op thread, as the tensorflow column
runs it, the op's batch mean (reserve_space_1) is exactly a sequential float32 sum divided by
4096, with oneDNN and with TF_ENABLE_ONEDNN_OPTS=0 alike: 1.9e-2 off the float64 mean here,
where torch's is within 4.6e-4. More threads sum parts of a channel separately and come closer.
"""
# requires: tensorflow, torch
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_NUM_INTRAOP_THREADS"] = "1"  # the column's setting; the sums depend on it
import numpy as np
import tensorflow as tf
import torch

x = np.float32(1e4) + np.random.RandomState(111).randn(64, 3, 64).astype(np.float32)
nhwc = np.ascontiguousarray(x.transpose(0, 2, 1)[:, :, None, :])
c = lambda v: np.full(3, v, np.float32)
out = tf.raw_ops.FusedBatchNormV3(x=nhwc, scale=c(1), offset=c(0), mean=c(0), variance=c(1), epsilon=1e-5,
                                  exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
exact = x.astype(np.float64).mean(axis=(0, 2))
err = np.abs(out[3].numpy() - exact).max()
sequential = np.array([np.cumsum(nhwc[..., k].ravel(), dtype=np.float32)[-1] / np.float32(4096) for k in range(3)])
onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0"
print(f"batch mean error {err:.2e} (oneDNN {'on' if onednn else 'off'}); sequential float32 sum "
      f"{np.abs(sequential - exact).max():.2e}")
tbn = torch.nn.BatchNorm1d(3, momentum=1.0)  # torch: the running mean becomes the batch mean
tbn(torch.from_numpy(x))
torch_err = np.abs(tbn.running_mean.numpy() - exact).max()
print(f"torch's batch mean error {torch_err:.2e}")
assert err > 5e-3 and torch_err < 5e-4, "the batch mean is accurate now: the finding is gone"
np.testing.assert_array_equal(out[3].numpy(), sequential)

# The same on the magnitudes family's large planes, (1, 3, 128, 128): 16384 values a channel at
# offsets 1e4 and 1e6 (sigma 1), and 2e19 (sigma 1e16, magnitudes/raw_squares_overflow). The batch
# mean is again exactly the sequential float32 sum / 16384, and the output is what exact
# arithmetic gives from that mean (the variance taken around it) to within 2e-5 (numbers of
# this seed; the cases are alike): off the true output by 5e-3, 5 (the mean is 188 off at 1e6)
# and 1.5e-2.
for offset, scale, bound in ((1e4, 1.0, 3e-3), (1e6, 1.0, 1.0), (2e19, 1e16, 5e-3)):
    x = (np.float64(offset) + scale * np.random.RandomState(7).randn(1, 3, 128, 128)).astype(np.float32)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    out = tf.raw_ops.FusedBatchNormV3(x=nhwc, scale=c(1), offset=c(0), mean=c(0), variance=c(1), epsilon=1e-4,
                                      exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
    x64 = x.astype(np.float64)
    sequential = np.array([np.cumsum(x[0, k].ravel(), dtype=np.float32)[-1] / np.float32(16384) for k in range(3)])
    np.testing.assert_array_equal(out[3].numpy(), sequential)
    m = sequential.astype(np.float64)[None, :, None, None]
    from_mean = (x64 - m) / np.sqrt(((x64 - m) ** 2).mean(axis=(0, 2, 3), keepdims=True) + 1e-4)
    exact = (x64 - x64.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(x64.var(axis=(0, 2, 3), keepdims=True) + 1e-4)
    y = out[0].numpy().transpose(0, 3, 1, 2)
    print(f"offset {offset:g}: mean off by {np.abs(sequential - x64.mean(axis=(0, 2, 3))).max() / scale:.2e} sigma, "
          f"output off by {np.abs(y - exact).max():.2e}; from the sequential mean {np.abs(y - from_mean).max():.1e}")
    assert np.abs(y - from_mean).max() < 1e-4 and np.abs(y - exact).max() > bound
