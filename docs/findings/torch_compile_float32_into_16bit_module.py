"""Inductor runs a float32 input through a float16 or bfloat16 BatchNorm that eager refuses.

Eager nn.BatchNorm of a 16-bit module refuses a float32 input ("mixed dtype (CPU): expect
parameter to have scalar type of Float"), and so does torch.compile with backend="aot_eager"
(the same decompositions, no code generation); Inductor's generated code (fullgraph or not)
accepts it and returns a float32 output: the refusal is lost in code generation.
"""
# requires: torch
import torch

for dtype in (torch.float16, torch.bfloat16):
    x = torch.randn(4, 3)
    for how, options in (("eager", None), ("aot_eager", {"backend": "aot_eager"}),
                         ("inductor", {}), ("inductor fullgraph", {"fullgraph": True})):
        torch._dynamo.reset()
        module = torch.nn.BatchNorm1d(3).to(dtype)
        call = module if options is None else torch.compile(module, **options)
        try:
            y = call(x)
        except RuntimeError as exc:
            print(f"{dtype} module, float32 input, {how}: refused ({str(exc).splitlines()[0][:70]})")
            assert how in ("eager", "aot_eager") and "mixed dtype" in str(exc), (how, exc)
        else:
            print(f"{dtype} module, float32 input, {how}: accepted, output {y.dtype}")
            assert how.startswith("inductor"), how
