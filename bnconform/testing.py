"""bnconform's conformance cases in your own pytest session (the way ONNX's backend tests work).

Put one line in a test module of your repository and pytest collects one test per case x
backend, parametrised by bnconform's pytest plugin (options `--bnconform-*`, see docs/ci.md):

    from bnconform.testing import test_conformance  # noqa: F401
"""
from bnconform.cases.test_conformance import test_conformance

__all__ = ["test_conformance"]
