"""Case execution: skips name what is missing, failures say where, a broken backend only fails itself."""
from __future__ import annotations

from dataclasses import replace

from bnconform.cases.loader import BUILTIN_SPECS, load_cases
from bnconform.runners.backends import Column, mutants
from bnconform.runners.backends.kernel_module import kernel_capabilities
from bnconform.runners.backends.numpy_backend import NumpyBackend
from bnconform.runners.engine.execute import run_case

CASES = {c.id: c for c in load_cases([BUILTIN_SPECS])}


def test_missing_capability_is_a_skip_with_reason() -> None:
    backend = NumpyBackend()
    backend.capabilities = replace(kernel_capabilities(backward=False), dims=frozenset({2}))
    result = run_case(CASES["gradients/train_golden"], backend)
    assert result.outcome == "skipped"
    assert "backward" in result.message and "dim=1" in result.message


def test_failure_names_quantity_step_errors_and_reproducer() -> None:
    result = run_case(CASES["bessel/nc_golden"], mutants.biased_running_var, "numpy-biased")
    assert result.outcome == "failed"
    msg = result.message
    assert "running_var differs after step 1 (forward)" in msg
    assert "max abs error" in msg and "rtol" in msg and "first differing index (0,)" in msg
    assert "expected 4.66666" in msg and "actual 3.5" in msg
    assert "reproduce: bnconform run --backend numpy-biased --case bessel/nc_golden" in msg


def test_backend_that_does_not_load_is_unavailable_with_the_reason() -> None:
    """Refused before any case runs (tests/test_gate.py); with --allow-unavailable its cells skip."""
    from bnconform.runners.engine.isolation import Hosts

    hosts = Hosts(timeout=60)
    try:
        backend = hosts.backend(Column("bad", "tests.no_such_module:x"))
        result = run_case(CASES["conditions/train_tracked_golden"], backend, "bad")
    finally:
        hosts.close()
    assert result.outcome == "skipped"
    assert result.message == "bad unavailable: could not be loaded: ModuleNotFoundError: No module named 'tests.no_such_module'"


class _Raises(NumpyBackend):
    def create(self, config):  # type: ignore[no-untyped-def]
        module = super().create(config)

        def forward(x):  # type: ignore[no-untyped-def]
            raise ZeroDivisionError("kernel bug")

        module.forward = forward
        return module


def test_unexpected_exception_is_a_failure_with_its_traceback() -> None:
    result = run_case(CASES["conditions/train_tracked_golden"], _Raises())
    assert result.outcome == "failed"
    assert "ZeroDivisionError: kernel bug" in result.message and "where the reference does not raise" in result.message


def test_missing_exception_is_a_failure() -> None:
    result = run_case(CASES["errors/one_value_training_golden"], mutants.no_batch_size_check)
    assert result.outcome == "failed" and "nothing was raised" in result.message


def test_spec_contradicting_the_reference_is_an_error() -> None:
    case = CASES["errors/one_value_eval_with_buffers_golden"]
    inconsistent = replace(case, config=case.config.model_copy(update={"training": True}))
    result = run_case(inconsistent, NumpyBackend())
    assert result.outcome == "error" and "spec error" in result.message and "reference raises ValueError" in result.message


def test_reference_backends_pass_golden_cases() -> None:
    for case_id in ("momentum/cumulative_golden", "toggling/flip_tracking_off_golden", "gradients/train_golden"):
        assert run_case(CASES[case_id], NumpyBackend()).outcome == "passed", case_id


def test_torch_cuda_without_cuda_is_skipped_with_reason() -> None:
    import pytest
    import torch

    from bnconform.runners.backends.torch_backend import TorchBackend

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: torch-cuda runs for real")
    result = run_case(CASES["conditions/train_tracked_golden"], TorchBackend("cuda"), "torch-cuda")
    assert result.outcome == "skipped" and "CUDA is not available" in result.message


def test_reproducer_names_private_spec_dir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bnconform.runners.engine.execute import reproduce_command

    case = CASES["bessel/nc_golden"]
    assert reproduce_command(case, "numpy") == "bnconform run --backend numpy --case bessel/nc_golden"
    private = replace(case, source=tmp_path / "mine.yaml")
    assert f"--specs {tmp_path}" in reproduce_command(private, "numpy")
