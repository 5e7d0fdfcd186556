"""Errors that name their cause and the fix.

Every failure a user can trigger with bad input surfaces as a subclass of
:class:`FairGPTQError`, so the CLI can map it to exit code 2 and print one clear
message instead of a traceback.
"""
from __future__ import annotations


class FairGPTQError(Exception):
    """Base class: a problem with the user's input or setup, not a bug."""


class ConfigError(FairGPTQError, ValueError):
    """A setting is out of range or inconsistent."""


class UnsupportedArchitectureError(FairGPTQError):
    """The model's architecture has no entry in the architecture table."""


class NonFiniteError(FairGPTQError, FloatingPointError):
    """NaN or Inf found in weights, activations or a Hessian (named by module)."""


class HessianFactorizationError(FairGPTQError, RuntimeError):
    """No damping level or eigenvalue repair made the Hessian factorable."""


class PluginError(FairGPTQError, LookupError):
    """An unknown plugin name, or a plugin that broke its contract."""


class DataError(FairGPTQError):
    """A data file is missing, malformed or yields no usable rows."""
