"""A scripted BatchNorm refuses the state dict of an older BatchNorm (no num_batches_tracked).

nn.BatchNorm's _load_from_state_dict fills num_batches_tracked in for a dict of version < 2 (or
without version metadata), so eager loads such a checkpoint; the scripted module's
load_state_dict does not run that hook and reports the counter as a missing key.
"""
# requires: torch
from collections import OrderedDict

import torch

old = OrderedDict((k, v) for k, v in torch.nn.BatchNorm1d(3).state_dict().items() if k != "num_batches_tracked")
old._metadata = OrderedDict({"": {"version": 1}})  # type: ignore[attr-defined]

eager = torch.nn.BatchNorm1d(3)
eager.load_state_dict(old)  # fine: the counter is filled in with 0
assert int(eager.num_batches_tracked) == 0
scripted = torch.jit.script(torch.nn.BatchNorm1d(3))
try:
    scripted.load_state_dict(old)
except RuntimeError as exc:
    print(exc)
    assert 'Missing key(s) in state_dict: "num_batches_tracked"' in str(exc)
else:
    raise AssertionError("the scripted module loaded a version-1 state dict")
