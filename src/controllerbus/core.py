"""Assemble a ready bus: loader controller, static resolver, config-set factory.

``new_core_bus`` is Go's ``core.NewCoreBus``. It needs a running event loop: the
controllers it starts are tasks owned by the bus, so ``await bus.aclose()`` (or
``async with``) stops them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from controllerbus.bus.backoff import BackoffPolicy
from controllerbus.bus.bus import Bus
from controllerbus.bus.executor import LoaderController
from controllerbus.bus.protocols import Factory
from controllerbus.bus.resolver import ResolverController, StaticResolver
from controllerbus.configset.controller import new_configset_factory

__all__ = ["new_core_bus"]


def new_core_bus(
    factories: Iterable[Factory | Callable[[Bus], Factory]] = (),
    *,
    backoff: BackoffPolicy | None = None,
) -> tuple[Bus, StaticResolver]:
    """Build a bus with the loader controller and a static resolver.

    Args:
        factories: factories, or ``new_factory(bus)`` callables, for the static
            resolver; the config-set factory is always added.
        backoff: retry policy of the loader controller (docs/bus.md#the-loader-controller defaults).

    Returns:
        The bus and its static resolver (add more factories to it at any time).
    """
    bus = Bus()
    static = StaticResolver()
    static.add_factory(new_configset_factory(bus))
    for item in factories:
        static.add_factory(item if isinstance(item, Factory) else item(bus))
    bus.run_controller(LoaderController(bus, backoff=backoff))
    bus.run_controller(ResolverController(bus, static))
    return bus, static
