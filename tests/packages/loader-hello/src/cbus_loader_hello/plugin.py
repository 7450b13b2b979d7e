"""The plugin object and a class the tests instantiate and track."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Optional

from cbus_loader_hello.sub import deep
from controllerbus.plugin import StaticPlugin

if TYPE_CHECKING:
    from controllerbus.bus.bus import Bus
    from controllerbus.bus.protocols import Factory

BINARY_ID = "loader-hello"


class HelloController:
    """Stands in for a controller built by the plugin."""

    def __init__(self, greeting: str | None = None) -> None:
        self.greeting = greeting or deep.GREETING


# A runtime type alias: typing caches Optional[HelloController] (and so the class)
# in a module-global lru_cache, a classic source of reload leaks. (`X | None` makes a
# types.UnionType, which is not cached: Optional is the point here.)
MaybeController = Optional[HelloController]  # noqa: UP045


def lookup(controller: MaybeController) -> MaybeController:
    """Return ``controller`` (exercises the alias)."""
    return controller


def _factories(bus: Bus) -> list[Factory]:
    return []


PLUGIN = StaticPlugin(binary_id=BINARY_ID, binary_version="1.0.0", factories_fn=_factories)


def main() -> None:
    """Console script: prove the generation's interpreter can import the plugin."""
    print(f"{BINARY_ID} {HelloController().greeting} {sys.prefix}")
