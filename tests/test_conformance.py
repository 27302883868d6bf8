"""Every conformance case on every built-in backend, in this suite's own pytest session: the
same one line a user puts in their repository (docs/ci.md)."""
from bnconform.testing import test_conformance  # noqa: F401
