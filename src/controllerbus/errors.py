"""The error tree: every error controllerbus raises on purpose derives from one root.

Callers catch :class:`ControllerBusError` to handle anything we raise deliberately;
anything else escaping is a bug. Each sub-package adds its own branch here so the
CLI can map a whole family to one exit code.
"""

from __future__ import annotations

__all__ = [
    "BusError",
    "CompileError",
    "ConfigError",
    "ControllerBusError",
    "DirectiveError",
    "LoaderError",
]


class ControllerBusError(Exception):
    """Base for every error controllerbus raises on purpose."""


class BusError(ControllerBusError):
    """The controller bus refused an operation or a controller failed."""


class DirectiveError(BusError, ValueError):
    """A directive failed validation; nothing was added to the bus."""


class ConfigError(ControllerBusError, ValueError):
    """A controller config or a config set is invalid.

    The message names the config-set key and the field where there is one.
    """


class CompileError(ControllerBusError):
    """The module compiler could not analyse or build a plugin."""


class LoaderError(ControllerBusError):
    """The loader could not verify, install, activate or unload a plugin."""
