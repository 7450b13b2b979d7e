"""Factory resolvers and the controller that puts one on the bus.

Semantics: docs/bus.md#resolver-controllers.

A :class:`ResolverController` wraps one :class:`FactoryResolver` (the static map
here, or a plugin's) and answers ``LoadControllerWithConfig``,
``LoadFactoryByConfig`` and ``LoadConfigConstructorByID``. Several resolver
controllers answer the same ``LoadControllerWithConfig``; the ``ExecController``
directives they add de-duplicate on the bus, and a factory with a strictly higher
version supersedes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from packaging.version import InvalidVersion, Version

from controllerbus.bus.config import Config
from controllerbus.bus.directives import (
    ExecController,
    ExecControllerValue,
    LoadConfigConstructorByID,
    LoadControllerWithConfig,
    LoadFactoryByConfig,
)
from controllerbus.bus.helpers import PassThruHandler
from controllerbus.bus.protocols import (
    ConfigConstructor,
    ControllerInfo,
    DirectiveInstance,
    Factory,
    FactoryResolver,
    Resolver,
    ResolverHandler,
)
from controllerbus.bus.tasks import forever, wait_first

if TYPE_CHECKING:
    from controllerbus.bus.bus import Bus

__all__ = ["ResolverController", "StaticResolver"]

logger = logging.getLogger(__name__)


def _version_ge(a: str, b: str) -> bool:
    try:
        return Version(a) >= Version(b)
    except InvalidVersion:
        return a == b


class StaticResolver:
    """A map of config id to factory (resolver id ``static``, version ``0.0.1``)."""

    def __init__(self, factories: Iterable[Factory] = ()) -> None:
        self._factories: dict[str, Factory] = {}
        for factory in factories:
            self.add_factory(factory)

    def resolver_id(self) -> str:
        return "static"

    def resolver_version(self) -> str:
        return "0.0.1"

    def add_factory(self, factory: Factory) -> None:
        """Register ``factory``; an existing one with an equal or higher version stays."""
        existing = self._factories.get(factory.config_id())
        if existing is not None and _version_ge(existing.version(), factory.version()):
            return
        self._factories[factory.config_id()] = factory

    def remove_factory(self, config_id: str) -> Factory | None:
        """Forget the factory for ``config_id``; return it if there was one."""
        return self._factories.pop(config_id, None)

    def get_factories(self) -> list[Factory]:
        """The registered factories, ordered by config id."""
        return [self._factories[k] for k in sorted(self._factories)]

    async def get_config_ctor_by_id(self, config_id: str) -> ConfigConstructor | None:
        factory = self._factories.get(config_id)
        if factory is None:
            return None
        return ConfigConstructor(config_id, factory.construct_config)

    async def get_factory_matching_config(self, config: Config) -> Factory | None:
        return self._factories.get(config.config_id())


def _factory_event(factory: Factory) -> asyncio.Event | None:
    # Optional FactoryContext extension: set when the factory's plugin unloads.
    getter = getattr(factory, "factory_context", None)
    return getter() if callable(getter) else None


class ResolverController:
    """Puts a :class:`FactoryResolver` on the bus."""

    def __init__(self, bus: Bus, resolver: FactoryResolver) -> None:
        self._bus = bus
        self._resolver = resolver
        self._closed = asyncio.Event()
        rid, rver = resolver.resolver_id(), resolver.resolver_version()
        self._info = ControllerInfo(
            id=f"controllerbus/resolver/{rid}/{rver}",
            version=rver,
            description=f"controller resolver {rid}@{rver}",
        )

    @property
    def resolver(self) -> FactoryResolver:
        """The wrapped factory resolver."""
        return self._resolver

    def get_controller_info(self) -> ControllerInfo:
        return self._info

    async def execute(self) -> None:
        return None

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        directive = inst.get_directive()
        if isinstance(directive, LoadControllerWithConfig):
            return [_LoadControllerResolver(self, directive.config)]
        if isinstance(directive, LoadFactoryByConfig):
            return [_LoadFactoryResolver(self._resolver, directive.config)]
        if isinstance(directive, LoadConfigConstructorByID):
            return [_ConfigCtorResolver(self._resolver, directive.config_id)]
        return []

    def close(self) -> None:
        """Release every ``ExecController`` reference this controller holds."""
        self._closed.set()


class _LoadControllerResolver:
    def __init__(self, ctrl: ResolverController, config: Config) -> None:
        self._ctrl = ctrl
        self._config = config

    async def resolve(self, handler: ResolverHandler) -> None:
        ctrl = self._ctrl
        factory = await ctrl.resolver.get_factory_matching_config(self._config)
        if factory is None:
            return
        exec_disposed = asyncio.Event()
        passthru = PassThruHandler(handler, on_disposed=lambda _inst: exec_disposed.set())
        try:
            _inst, ref = ctrl._bus.add_directive(ExecController(factory, self._config), passthru)
        except Exception as exc:
            # Log text, not the exception: a retained log record must not pin its frames.
            logger.warning(
                "cannot execute controller for %s: %s", self._config.config_id(), str(exc)
            )
            handler.add_value(ExecControllerValue(error=exc))
            return
        waits = [exec_disposed, ctrl._closed]
        if (factory_done := _factory_event(factory)) is not None:
            waits.append(factory_done)
        try:
            await wait_first(waits)
        finally:
            ref.release()
            passthru.clear()


class _LoadFactoryResolver:
    def __init__(self, resolver: FactoryResolver, config: Config) -> None:
        self._resolver = resolver
        self._config = config

    async def resolve(self, handler: ResolverHandler) -> None:
        factory = await self._resolver.get_factory_matching_config(self._config)
        if factory is None:
            return
        value_id = handler.add_value(factory)
        if value_id is None:
            return
        try:
            await forever()
        finally:
            handler.remove_value(value_id)


class _ConfigCtorResolver:
    def __init__(self, resolver: FactoryResolver, config_id: str) -> None:
        self._resolver = resolver
        self._config_id = config_id

    async def resolve(self, handler: ResolverHandler) -> None:
        ctor = await self._resolver.get_config_ctor_by_id(self._config_id)
        if ctor is not None:
            handler.add_value(ctor)
