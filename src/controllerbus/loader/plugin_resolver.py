"""A plugin's factories on the bus: the plugin resolver (Go's ``StaticPlugin``).

Semantics: docs/loader.md#plugin-resolver.

:class:`PluginResolver` is a :class:`~controllerbus.bus.FactoryResolver` over one
loaded plugin. Every factory is wrapped in a :class:`PluginFactory` that

* has a factory context (an ``asyncio.Event``) set when the plugin unloads, so the
  resolver controller releases the ``ExecController`` directives it added;
* remembers every controller it constructed, so unloading can remove them from the
  bus and wait until they have stopped;
* hands every controller it constructs to an optional ``on_construct`` hook before
  the bus runs it (the state handoff of :mod:`controllerbus.hot.handoff` restores
  the previous generation's state there; the hook raising fails the construct).

Unlike Go, a lookup that finds nothing returns ``None`` instead of a wrapper around
nothing.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterable, MutableSet
from typing import TYPE_CHECKING, Any, Protocol

from controllerbus.bus.protocols import ConfigConstructor, ConstructOpts, Controller, Factory
from controllerbus.errors import ControllerBusError

if TYPE_CHECKING:
    from controllerbus.bus.bus import Bus
    from controllerbus.bus.config import Config

__all__ = ["ConstructHook", "PluginFactory", "PluginResolver", "StateHandoff"]

logger = logging.getLogger(__name__)


ConstructHook = Callable[["Config", Controller], "str | None"]
"""Called with the config and each controller a plugin factory constructs; a returned
message fails the construct."""


class StateHandoff(Protocol):
    """Carries controller state across a reload (:class:`controllerbus.hot.handoff.Handoff`)."""

    def capture(self, binary_id: str, factories: Iterable[PluginFactory]) -> None:
        """Snapshot the controllers of a generation about to be stopped."""

    def restore_into(self, binary_id: str, config: Config, controller: Controller) -> str | None:
        """A plugin factory constructed ``controller``; a message fails the construct."""

    async def settle(self, binary_id: str) -> None:
        """Wait (bounded) until the restarted controllers have taken their state."""

    def restore_error(self, binary_id: str) -> str | None:
        """Why a restore of the reload in progress failed, or ``None``."""

    def rearm(self, binary_id: str) -> None:
        """Offer the captured state again (rollback)."""

    def finish(self, binary_id: str) -> None:
        """The reload is settled; drop the captured state."""


def _controller_set() -> MutableSet[Any]:
    return weakref.WeakSet()


class PluginFactory:
    """Wraps one factory of a plugin; see the module docstring."""

    def __init__(self, inner: Factory, bus: Bus, on_construct: ConstructHook | None = None) -> None:
        self._inner = inner
        self._on_construct = on_construct
        self._bus = bus
        self._done = asyncio.Event()
        # Weak, so a stopped controller of a long-lived plugin is not kept alive here.
        self._controllers: MutableSet[Any] = _controller_set()
        self._strong: list[Controller] = []

    @property
    def inner(self) -> Factory:
        """The plugin's own factory object."""
        return self._inner

    def config_id(self) -> str:
        return self._inner.config_id()

    def controller_id(self) -> str:
        return self._inner.controller_id()

    def construct_config(self) -> Config:
        return self._inner.construct_config()

    def version(self) -> str:
        return self._inner.version()

    def construct(self, config: Config, opts: ConstructOpts) -> Controller:
        controller = self._inner.construct(config, opts)
        try:
            self._controllers.add(controller)
        except TypeError:
            # A controller class with __slots__ and no __weakref__: keep it strongly
            # until unload instead.
            self._strong.append(controller)
        if self._on_construct is not None and (error := self._on_construct(config, controller)):
            # Only text leaves: the bus keeps construct errors, and a traceback through
            # this frame would pin the factory (and so the plugin generation) alive.
            del self, config, controller
            raise ControllerBusError(error)
        return controller

    def factory_context(self) -> asyncio.Event:
        """Set when the plugin unloads (Go: the factory ctx is cancelled)."""
        return self._done

    def constructed(self) -> list[Controller]:
        """Controllers constructed by this factory that are still alive."""
        return [*self._controllers, *self._strong]

    def close(self) -> list[asyncio.Task[None]]:
        """Set the factory context and remove every constructed controller from the bus.

        Returns:
            The cancelled resolver tasks of those controllers (await them).
        """
        self._done.set()
        tasks: list[asyncio.Task[None]] = []
        for controller in self.constructed():
            tasks.extend(self._bus.remove_controller(controller))
        self._controllers.clear()
        self._strong.clear()
        return tasks


class PluginResolver:
    """A factory resolver over one loaded plugin's factories."""

    def __init__(
        self,
        bus: Bus,
        binary_id: str,
        binary_version: str,
        factories: Iterable[Factory],
        *,
        on_construct: ConstructHook | None = None,
    ) -> None:
        self._id = f"controllerbus/hot/plugin/{binary_id}/{binary_version}/static-resolver"
        self._factories: dict[str, PluginFactory] = {}
        for factory in factories:
            config_id = factory.config_id()
            if config_id in self._factories:
                logger.warning(
                    "plugin %s: two factories for config id %s; keeping the first",
                    binary_id,
                    config_id,
                )
                continue
            self._factories[config_id] = PluginFactory(factory, bus, on_construct)

    def resolver_id(self) -> str:
        return self._id

    def resolver_version(self) -> str:
        return "0.0.1"

    def factories(self) -> list[PluginFactory]:
        """The wrapped factories, ordered by config id."""
        return [self._factories[k] for k in sorted(self._factories)]

    def config_ids(self) -> list[str]:
        """The config ids this plugin serves, sorted."""
        return sorted(self._factories)

    async def get_config_ctor_by_id(self, config_id: str) -> ConfigConstructor | None:
        factory = self._factories.get(config_id)
        if factory is None:
            return None
        return ConfigConstructor(config_id, factory.construct_config)

    async def get_factory_matching_config(self, config: Config) -> Factory | None:
        """The factory for ``config``, if ``config`` is an instance of this plugin's class.

        A config of another generation's class (same id, old code) is not answered:
        constructing from it would mix generations and keep the old one alive. The
        config set re-types its configs after a reload (see ``PluginHost(on_change)``).
        """
        factory = self._factories.get(config.config_id())
        if factory is None or not isinstance(config, type(factory.construct_config())):
            return None
        return factory

    def pre_plugin_unload(self) -> list[asyncio.Task[None]]:
        """Close every factory wrapper; return the cancelled tasks to await."""
        tasks: list[asyncio.Task[None]] = []
        for factory in self._factories.values():
            tasks.extend(factory.close())
        return tasks

    def release(self) -> None:
        """Drop every reference to the plugin's objects (after unload)."""
        self._factories.clear()
