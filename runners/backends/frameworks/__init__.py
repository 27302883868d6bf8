"""Adapters for real, independently written BatchNorm implementations (optional packages).

Each is skipped, with the reason, when its package is missing; each declares its conventions
from its framework's own documentation and source, cited in its docstring.
"""
