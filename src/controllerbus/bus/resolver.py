"""Factory resolvers and the controller that puts one on the bus.

Semantics: docs/bus.md#resolver-controllers.

A :class:`ResolverController` wraps one :class:`FactoryResolver` (the static map
here, or a plugin's) and answers ``LoadControllerWithConfig``,
``LoadFactoryByConfig`` and ``LoadConfigConstructorByID``. Several resolver
controllers answer the same ``LoadControllerWithConfig``; the ``ExecController``
directives they add de-duplicate on the bus, and a factory with a strictly higher
version supersedes.

A resolver with a ``subscribe`` method (:class:`StaticResolver`) reports factory
changes while its controller runs; the controller then re-offers the directives for
the changed config ids to itself (:meth:`Bus.reoffer`), so waiting directives are
answered and withdrawn factories stop serving (docs/bus.md, "Factories added at
runtime").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
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
from controllerbus.bus.helpers import CallbackHandler, PassThruHandler
from controllerbus.bus.protocols import (
    ConfigConstructor,
    ControllerInfo,
    DirectiveInstance,
    FactoriesChanged,
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
    """A map of config id to factory (resolver id ``static``, version ``0.0.1``).

    Factories may be added and removed while it is on the bus: every change is told
    to the subscribers (:class:`~controllerbus.bus.WatchableFactoryResolver`), so
    directives already waiting for a config id are answered. Change it from the
    event loop's thread; a resolver controller hands calls from other threads over
    to its loop.
    """

    def __init__(self, factories: Iterable[Factory] = ()) -> None:
        self._factories: dict[str, Factory] = {}
        self._subscribers: dict[int, FactoriesChanged] = {}
        self._next_key = 0
        for factory in factories:
            self.add_factory(factory)

    def resolver_id(self) -> str:
        return "static"

    def resolver_version(self) -> str:
        return "0.0.1"

    def add_factory(self, factory: Factory) -> bool:
        """Register ``factory``; an existing one with an equal or higher version stays.

        Returns:
            Whether ``factory`` was registered (subscribers are told only then).
        """
        config_id = factory.config_id()
        existing = self._factories.get(config_id)
        if existing is not None and _version_ge(existing.version(), factory.version()):
            return False
        self._factories[config_id] = factory
        self._notify(config_id)
        return True

    def remove_factory(self, config_id: str) -> Factory | None:
        """Forget the factory for ``config_id``; return it if there was one."""
        factory = self._factories.pop(config_id, None)
        if factory is not None:
            self._notify(config_id)
        return factory

    def get_factories(self) -> list[Factory]:
        """The registered factories, ordered by config id."""
        return [self._factories[k] for k in sorted(self._factories)]

    def subscribe(self, callback: FactoriesChanged) -> Callable[[], None]:
        """Call ``callback(config_ids)`` after each change; return the unsubscriber."""
        self._next_key += 1
        key = self._next_key
        self._subscribers[key] = callback

        def unsubscribe() -> None:
            self._subscribers.pop(key, None)

        return unsubscribe

    async def get_config_ctor_by_id(self, config_id: str) -> ConfigConstructor | None:
        factory = self._factories.get(config_id)
        if factory is None:
            return None
        return ConfigConstructor(config_id, factory.construct_config)

    async def get_factory_matching_config(self, config: Config) -> Factory | None:
        return self._factories.get(config.config_id())

    def _notify(self, config_id: str) -> None:
        changed = frozenset((config_id,))
        for callback in list(self._subscribers.values()):
            try:
                callback(changed)
            except Exception:
                logger.exception("factory change subscriber raised (config id %s)", config_id)


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
        """Follow the resolver's factory changes while on the bus, if it reports them."""
        subscribe = getattr(self._resolver, "subscribe", None)
        if not callable(subscribe):
            return
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        def changed(config_ids: frozenset[str]) -> None:
            if threading.get_ident() == loop_thread:
                self._factories_changed(config_ids)
                return
            # A closed loop raises RuntimeError: nothing is waiting any more then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._factories_changed, config_ids)

        unsubscribe = subscribe(changed)
        try:
            await forever()
        finally:
            unsubscribe()

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

    def _factories_changed(self, config_ids: frozenset[str]) -> None:
        # Withdraw this controller's answers to the directives for those ids and
        # answer them again from the resolver as it is now.
        if self._closed.is_set() or self._bus.closed:
            return
        logger.debug("%s: factories changed for %s", self._info.id, ", ".join(sorted(config_ids)))
        self._bus.reoffer(self, lambda inst: _config_id_of(inst.get_directive()) in config_ids)


def _config_id_of(directive: object) -> str | None:
    """The config id a directive answered by resolver controllers asks for."""
    if isinstance(directive, (LoadControllerWithConfig, LoadFactoryByConfig)):
        return directive.config.config_id()
    if isinstance(directive, LoadConfigConstructorByID):
        return directive.config_id
    return None


class _LoadControllerResolver:
    def __init__(self, ctrl: ResolverController, config: Config) -> None:
        self._ctrl = ctrl
        self._config = config

    async def resolve(self, handler: ResolverHandler) -> None:
        ctrl = self._ctrl
        factory = await ctrl.resolver.get_factory_matching_config(self._config)
        if factory is None:
            return
        stops = [ctrl._closed]
        if (factory_done := _factory_event(factory)) is not None:
            stops.append(factory_done)
        # One round per ExecController instance this resolver follows. Another
        # resolver's strictly newer factory supersedes ours; an equal or older one of
        # ours joins theirs. Theirs is only watched, through a weak reference: its
        # owner reports its values, and it goes when the owner withdraws it (factory
        # removed, plugin unloaded); ours then serves again in the next round.
        while not any(event.is_set() for event in stops) and not ctrl._bus.closed:
            if not await self._follow(handler, factory, stops):
                return

    async def _follow(
        self, handler: ResolverHandler, factory: Factory, stops: list[asyncio.Event]
    ) -> bool:
        """Serve through one ExecController instance; whether to go round again."""
        ctrl = self._ctrl
        try:
            inst, ref = ctrl._bus.add_directive(ExecController(factory, self._config))
        except Exception as exc:
            # Log text, not the exception: a retained log record must not pin its frames.
            logger.warning(
                "cannot execute controller for %s: %s", self._config.config_id(), str(exc)
            )
            handler.add_value(ExecControllerValue(error=exc))
            return False
        exec_disposed = asyncio.Event()

        def disposed(_inst: DirectiveInstance) -> None:
            exec_disposed.set()

        directive = inst.get_directive()
        passthru: PassThruHandler | None = None
        if isinstance(directive, ExecController) and directive.factory is factory:
            passthru = PassThruHandler(handler, on_disposed=disposed)
            held = inst.add_reference(passthru)
        else:
            held = inst.add_reference(CallbackHandler(on_disposed=disposed), weak=True)
        ref.release()
        if held is None:  # pragma: no cover - the instance cannot go in between
            return True
        try:
            await wait_first([exec_disposed, *stops])
        finally:
            held.release()
            if passthru is not None:
                passthru.clear()
        return exec_disposed.is_set()


class _LoadFactoryResolver:
    def __init__(self, resolver: FactoryResolver, config: Config) -> None:
        self._resolver = resolver
        self._config = config

    async def resolve(self, handler: ResolverHandler) -> None:
        factory = await self._resolver.get_factory_matching_config(self._config)
        if factory is None:
            return
        # The value stays until the directive goes, this controller leaves the bus or
        # the factory changes (re-offer). Removing it when the run is cancelled would
        # loop: the max-one limit cancels the run, removal restarts it, it adds again.
        handler.add_value(factory)


class _ConfigCtorResolver:
    def __init__(self, resolver: FactoryResolver, config_id: str) -> None:
        self._resolver = resolver
        self._config_id = config_id

    async def resolve(self, handler: ResolverHandler) -> None:
        ctor = await self._resolver.get_config_ctor_by_id(self._config_id)
        if ctor is not None:
            handler.add_value(ctor)
