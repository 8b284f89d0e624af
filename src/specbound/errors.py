"""Errors that the CLI turns into one-line messages (exit status 1) instead of tracebacks."""


class SpecboundError(Exception):
    """Base class of every error specbound raises on purpose."""


class InputError(SpecboundError):
    """The input (file, tensor, config or option) is unusable; the message says what to do."""


class UnsupportedArchitectureError(InputError):
    """The checkpoint's ``model_type`` has no adapter."""
