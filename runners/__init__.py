"""Runners: backends, case execution, report writers and the CLI."""

__version__ = "0.1.0"
