"""The engine: options, the pytest plugin, case execution beside the oracle, backend isolation."""
