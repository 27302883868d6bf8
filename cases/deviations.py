"""Known single deviations from the reference semantics: switches on the one oracle.

Each is a realistic bug (or another framework's convention). The oracle evaluated with one
switch on predicts what an implementation with that bug would produce; when a failed case's
observed values match such a prediction, the switch's description is the likely cause. A set
of switches can also describe a framework's conventions as a profile.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Case

DEVIATIONS: dict[str, str] = {
    "biased_running_var": "running_var is updated with the biased batch variance: Bessel's correction n/(n-1) missing",
    "momentum_inverted": "momentum is used as the weight of the old value (1 - m): the momentum convention is inverted",
    "eps_outside_sqrt": "eps is added outside the square root: (x - mean) / (sqrt(var) + eps)",
    "eps_omitted": "eps is left out of the normalisation: (x - mean) / sqrt(var)",
    "per_position_stats": "statistics are taken per position over N only, instead of per channel over N and the spatial axes",
    "normalise_unbiased": "the output is normalised with the unbiased variance instead of the biased one",
    "update_in_eval": "running statistics are updated in eval mode too",
    "batch_stats_in_eval": "eval mode normalises with batch statistics despite tracked buffers",
    "nbt_not_incremented": "num_batches_tracked is never incremented",
    "nbt_incremented_in_eval": "num_batches_tracked is incremented in eval mode too",
    "momentum_none_as_default": "momentum=None is treated as the default momentum 0.1 instead of a cumulative average",
    "momentum_none_frozen": "momentum=None freezes the buffers (factor 0) instead of a cumulative average",
    "cumulative_off_by_one": (
        "the cumulative-average factor is 1/(k+1) instead of 1/k: the first batch does not replace the initial values"),
    "legacy_toggling": ("track_running_stats flips follow PyTorch < 1.6: buffers still updated in training, "
                        "batch statistics (and updates) in eval"),
    "running_var_init_zero": "running_var starts (and resets) at 0 instead of 1",
    "reset_noop": "reset_running_stats() does nothing",
    "one_pass_variance": "the variance is computed in one pass as E[x^2] - E[x]^2 in the input dtype (catastrophic cancellation)",
    "grad_stats_constant": "the training backward treats the batch mean and variance as constants (dx = dy * weight * invstd)",
    "affine_ignored": "the affine transform (weight, bias) is not applied to the output",
    "affine_bias_scaled": "the bias is added before scaling: (xhat + bias) * weight instead of xhat * weight + bias",
    "grad_weight_sum_dy": "grad_weight is computed as sum(dy) instead of sum(dy * xhat)",
    "state_dict_without_counter": "state_dict() leaves out num_batches_tracked",
    "load_ignores_counter": "load_state_dict() does not restore num_batches_tracked",
    "no_batch_size_check": "one value per channel is accepted instead of raising ValueError",
    "untracked_has_buffers": "an untracked module still has running buffers (and uses them in eval)",
    "flip_ignored": "track_running_stats assigned after construction is ignored (the constructor's value is used)",
    "no_counter": "there is no num_batches_tracked (the framework keeps no batch counter)",
    "counter_when_untracked": "an untracked module still has num_batches_tracked (0) instead of None",
    "empty_batch_poisons_buffers": "an empty training batch updates the running statistics with NaN instead of leaving them",
    "half_accumulation": ("statistics of float16/bfloat16 input are accumulated in that dtype instead of float32 "
                          "(sums overflow or lose digits)"),
    "buffers_in_input_dtype": "the running buffers are cast to the input's dtype instead of staying in the module's",
    "nhwc_as_nchw": "channels_last memory is read as if it were contiguous NCHW (the strides are ignored)",
    "double_backward_stats_constant": ("double backward treats the batch mean and variance as constants "
                                       "(their second-order terms are dropped)"),
    "fold_without_eps": "folding divides by sqrt(running_var) without eps",
    "fold_mean_ignored": "folding leaves out the running mean: b' = b * gamma / sqrt(var + eps) + beta",
    # (A float32 attribute in torch's convention, f32(m) as the new batch's weight, would round
    # differently; no framework here has one beside float64 buffers.)
    "momentum_float32": ("the momentum reaches the update as a float32 (an operator attribute, decay convention): "
                         "the old value is weighted by float32(1 - m) instead of 1 - m"),
    "eps_float32": ("eps reaches the normalisation as a float32 (an operator attribute): float64 data are "
                    "normalised with sqrt(var + float32(eps)), which shows where var is small beside eps"),
    "shard_stats_unweighted": ("shard statistics are averaged with equal weights instead of weighted by each "
                               "shard's count"),
    # Shape classes: kernel paths taken by shape and size (cases/shapes.py, specs/19-shapes.yaml, 20-magnitudes.yaml).
    "channel_tail": ("the channels past the last full block of 8 (C > 8, C % 8 != 0) are normalised with the "
                     "statistics of the channel 8 before them, and their running statistics updated with those "
                     "(stale vector lanes)"),
    "channels_past_64": ("a channels_last forward with batch statistics leaves the channels from 64 on as they are: "
                         "their output is their input and their running statistics are not updated"),
    "square_overflow": ("the variance is E[x^2] - mean^2 with the squares of the raw values summed in float32 "
                        "(float64 for float64 data): they overflow to inf past |x| ~1.8e19, and offsets cancel"),
    "half_backward_overflow": ("the backward's per-channel sums (sum(dy), sum(dy * xhat)) of float16 data are "
                               "accumulated in float16: past 65504 they are inf, below it they keep 11 bits"),
}


def describe(name: str) -> str:
    return f"{DEVIATIONS[name]} ({name})"


def relevant(name: str, case: "Case") -> bool:
    """Whether switching `name` on can change anything this case observes (saves work)."""
    cfg = case.config
    actions = {s.action for s in case.steps}
    sets = [s.args.values for s in case.steps if s.action == "set"]
    momentum_none = cfg.momentum is None or any("momentum" in v and v["momentum"] is None for v in sets)
    if name in ("momentum_none_as_default", "momentum_none_frozen", "cumulative_off_by_one"):
        return momentum_none
    if name in ("legacy_toggling", "flip_ignored"):
        return any("track_running_stats" in v for v in sets)
    if name == "reset_noop":
        return bool(actions & {"reset_running_stats", "reset_parameters"})
    if name in ("state_dict_without_counter", "load_ignores_counter"):
        return bool(actions & {"state_dict", "load_state_dict"}) or any(
            s.expect is not None and s.expect.state_dict_keys is not None for s in case.steps)
    if name.startswith("grad_"):
        return "backward" in actions
    if name == "no_batch_size_check":
        return any(s.expect is not None and s.expect.error is not None for s in case.steps)
    if name in ("update_in_eval", "batch_stats_in_eval", "nbt_incremented_in_eval"):
        return "eval" in actions or not cfg.training
    if name in ("untracked_has_buffers", "counter_when_untracked"):
        return not cfg.track_running_stats
    if name.startswith("affine_"):
        return cfg.affine
    forwards = [s.args for s in case.steps if s.action == "forward"]
    if name in ("half_accumulation", "buffers_in_input_dtype"):
        return cfg.data_dtype in ("float16", "bfloat16")
    if name == "nhwc_as_nchw":
        return any(f.layout.startswith("channels_last") for f in forwards)
    if name == "double_backward_stats_constant":
        return "double_backward" in actions
    if name.startswith("fold_"):
        return "fold" in actions
    if name == "shard_stats_unweighted":
        return any(f.shards is not None for f in forwards)
    c = cfg.num_features
    if name == "channel_tail":
        return c > 8 and c % 8 != 0
    if name == "channels_past_64":
        return c > 64 and any(f.layout.startswith("channels_last") for f in forwards)
    if name == "half_backward_overflow":
        return cfg.data_dtype == "float16" and "backward" in actions
    if name in ("momentum_float32", "eps_float32"):  # a float32 rounding shows only beside float64 data
        return cfg.dtype == "float64"
    return True
