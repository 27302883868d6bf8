"""Which backend capabilities a case needs, derived from its config and steps.

A backend declares what it can do (runners/protocol.py, Capabilities); a case whose needs
are not all declared is skipped with the missing ones named, never passed or failed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Case

# The vocabulary, documented in docs/backends.md. dim=N and dtype=NAME are implied by config.
FEATURES = {
    "backward": "backward pass: grads of input, weight and bias",
    "toggle_track_running_stats": "assigning track_running_stats after construction",
    "set_momentum": "assigning momentum after construction",
    "momentum_none": "momentum=None (cumulative moving average)",
    "momentum_decay": "the decay convention (momentum = weight of the old value)",
    "state_dict": "state_dict() and load_state_dict()",
    "reset": "reset_running_stats() and reset_parameters()",
    "requires_grad": "turning requires_grad off on weight/bias",
    "init": "setting parameter and buffer values before the first step",
    "errors": "raising torch's exception types for invalid input",
    "untracked": "track_running_stats=False at construction (no running buffers)",
    "mixed_precision": "input of another dtype than the module's (float16/bfloat16 into float32, and the errors of the rest)",
    "channels_last": "channels_last / channels_last_3d input, output in the same layout",
    "strided": "non-contiguous (sliced) input",
    "double_backward": "gradients of a function of the input gradient (second order)",
    "grad_modes": "forward_with_grad_mode(): a forward under torch.no_grad() or torch.inference_mode()",
    "shards": "forward_shards(): one batch split into shards, SyncBatchNorm statistics",
    "fold": "fold(): folding the eval-mode module into the preceding linear or conv layer",
    "lazy": "LazyBatchNorm: num_features from the first input",
    "no_bias": "bias=False at construction (weight only)",
    "state_dict_version": "load_state_dict(..., version=): checkpoints of an older version or without metadata",
}


def required_capabilities(case: "Case") -> set[str]:
    cfg = case.config
    needs = {f"dim={cfg.dim}", f"dtype={cfg.dtype}", f"dtype={cfg.data_dtype}"}
    if cfg.data_dtype != cfg.dtype:
        needs.add("mixed_precision")
    if cfg.lazy:
        needs.add("lazy")
    if cfg.affine and not cfg.bias:
        needs.add("no_bias")
    if cfg.momentum is None:
        needs.add("momentum_none")
    if not cfg.track_running_stats:
        needs.add("untracked")
    if cfg.momentum_convention == "decay":
        needs.add("momentum_decay")
    if case.init:
        needs.add("init")
    for step in case.steps:
        if step.action == "forward":
            if step.args.layout.startswith("channels_last"):
                needs.add("channels_last")
            elif step.args.layout == "strided":
                needs.add("strided")
            if step.args.grad_mode != "enabled":
                needs.add("grad_modes")
            if step.args.shards is not None:
                needs.add("shards")
        elif step.action in ("backward", "double_backward", "fold"):
            needs.add(step.action)
        elif step.action == "load_state_dict" and step.args.version != "current":
            needs.update({"state_dict", "state_dict_version"})
        elif step.action == "set":
            if "track_running_stats" in step.args.values:
                needs.add("toggle_track_running_stats")
            if "momentum" in step.args.values:
                needs.add("set_momentum")
                if step.args.values["momentum"] is None:
                    needs.add("momentum_none")
        elif step.action in ("state_dict", "load_state_dict"):
            needs.add("state_dict")
        elif step.action in ("reset_running_stats", "reset_parameters"):
            needs.add("reset")
        elif step.action == "requires_grad":
            needs.add("requires_grad")
        if step.expect is not None:
            if step.expect.error is not None:
                needs.add("errors")
            if step.expect.state_dict_keys is not None:
                needs.add("state_dict")
    return needs


def check_declared(names: set[str]) -> None:
    unknown = sorted(n for n in names if n not in FEATURES)
    if unknown:
        raise ValueError(f"unknown capability {unknown}; known: {sorted(FEATURES)}")
