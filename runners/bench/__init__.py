"""Timing: what `bnconform bench` times (workloads) and the pytest-benchmark module that times it."""
