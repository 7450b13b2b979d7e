"""The plugin contract: what a plugin wheel's entry point resolves to.

A plugin wheel declares an entry point in the group :data:`ENTRY_POINT_GROUP`
(``controllerbus.plugins``). It resolves to an object satisfying :class:`Plugin`
(Go: ``HotPlugin`` / ``StaticPlugin``). The module compiler generates a module
whose ``PLUGIN`` global is a :class:`StaticPlugin`; hand-written plugins may use
any object of the same shape.

This module is deliberately tiny and imports only the bus seams: plugins import it,
and it must not pull the compiler or the loader into a plugin's process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from controllerbus.bus.bus import Bus
    from controllerbus.bus.protocols import Factory

__all__ = ["ENTRY_POINT_GROUP", "HOST_PACKAGE", "Plugin", "StaticPlugin"]

ENTRY_POINT_GROUP = "controllerbus.plugins"

HOST_PACKAGE = "controllerbus"
"""The host's own distribution and top-level package: never vendored into a plugin.

The host owns the interface types (configs, factories, directives), so a plugin that
shipped its own copy would break ``isinstance`` across reloads.
"""


@runtime_checkable
class Plugin(Protocol):
    """A loadable bundle of controller factories.

    Attributes:
        binary_id: stable identity of the plugin across versions (Go: module name).
        binary_version: free-form version; compiled plugins carry the build hash.
    """

    binary_id: str
    binary_version: str

    def factories(self, bus: Bus) -> Sequence[Factory]:
        """Construct the plugin's factories for ``bus``."""
        ...

    def pre_unload(self) -> None:
        """Called once just before the plugin's code is unloaded."""
        ...


@dataclass(slots=True)
class StaticPlugin:
    """A plugin over a fixed factories function (Go: ``hot/plugin.StaticPlugin``)."""

    binary_id: str
    binary_version: str
    factories_fn: Callable[[Bus], Sequence[Factory]]

    def factories(self, bus: Bus) -> list[Factory]:
        """Call the factories function; every call builds fresh factories."""
        return list(self.factories_fn(bus))

    def pre_unload(self) -> None:
        """Nothing to release: factories and controllers are stopped by the loader."""
