"""The seams of the bus: what controllers, factories, directives and resolvers provide.

These are :class:`typing.Protocol` classes, so plugins need not inherit from them;
those that do inherit get the default method bodies (for example a directive that
never supersedes). See docs/bus.md#pieces through docs/bus.md#resolvers for the semantics.

Python shape versus the Go original:

* ``ctx`` arguments are gone: a controller's :meth:`Controller.execute` and a
  resolver's :meth:`Resolver.resolve` run in their own asyncio task, and the bus
  cancels that task where Go cancels the context.
* :meth:`Controller.handle_directive` returns a list of resolvers (empty = not
  handled) instead of one-or-nil.
* :meth:`ResolverHandler.add_value` returns the new value id or ``None`` when the
  value was rejected, instead of an ``(id, accepted)`` pair.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import asyncio

    from controllerbus.bus.config import Config

__all__ = [
    "AttachedValue",
    "ConfigConstructor",
    "ConstructOpts",
    "Controller",
    "ControllerInfo",
    "Directive",
    "DirectiveHandler",
    "DirectiveInstance",
    "FactoriesChanged",
    "Factory",
    "FactoryResolver",
    "Reference",
    "ReferenceHandler",
    "Resolver",
    "ResolverHandler",
    "ValueOptions",
    "WatchableFactoryResolver",
]


@dataclass(frozen=True, slots=True)
class ValueOptions:
    """How many values a directive wants and how long it lingers unreferenced.

    Attributes:
        max_value_count: 0 = unlimited. When an accepted value brings the count to
            this number, every resolver of the instance is cancelled.
        max_value_hard_cap: reject values once ``max_value_count`` is reached.
        unref_dispose_dur: seconds to wait after the last strong reference is
            released before disposing the instance; 0 disposes at once.
    """

    max_value_count: int = 0
    max_value_hard_cap: bool = False
    unref_dispose_dur: float = 0.0


@dataclass(frozen=True, slots=True)
class AttachedValue:
    """A value attached to a directive instance, with its per-instance id (from 1)."""

    value_id: int
    value: Any


@dataclass(frozen=True, slots=True)
class ControllerInfo:
    """What a controller says about itself: id, semantic version, description."""

    id: str
    version: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class ConstructOpts:
    """Options a factory receives when constructing a controller."""

    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("controllerbus"))


@runtime_checkable
class Directive(Protocol):
    """A declarative request on the bus; resolvers attach values to it."""

    def validate(self) -> None:
        """Raise ``ValueError`` if the directive is malformed."""

    def value_options(self) -> ValueOptions:
        """Value limits and dispose delay; unlimited by default."""
        return ValueOptions()

    def is_equivalent(self, other: Directive) -> bool:
        """Whether ``other`` asks for the same thing (de-duplication key)."""
        ...

    def superceeds(self, other: Directive) -> bool:
        """Whether this directive replaces an equivalent ``other`` (upstream spelling)."""
        return False

    def get_name(self) -> str:
        """Display name, e.g. ``"Boilerplate"``."""
        ...

    def get_debug_vals(self) -> dict[str, list[str]]:
        """Key/values shown in the debug label ``Name<k=v>``."""
        return {}


class ReferenceHandler(Protocol):
    """Receives a directive instance's value and dispose events for one reference.

    Callbacks are called synchronously from the loop and must not block.
    """

    def handle_value_added(self, inst: DirectiveInstance, value: AttachedValue) -> None: ...

    def handle_value_removed(self, inst: DirectiveInstance, value: AttachedValue) -> None: ...

    def handle_instance_disposed(self, inst: DirectiveInstance) -> None: ...


class Reference(Protocol):
    """A reference to a directive instance; :meth:`release` is idempotent."""

    def release(self) -> None: ...


class DirectiveInstance(Protocol):
    """A running directive on the bus: its values, references and resolvers."""

    def get_directive(self) -> Directive: ...

    def get_values(self) -> list[AttachedValue]: ...

    @property
    def released(self) -> bool: ...

    def add_reference(
        self, handler: ReferenceHandler | None = None, *, weak: bool = False
    ) -> Reference | None: ...

    def add_dispose_callback(self, cb: Callable[[], None]) -> Callable[[], None]: ...

    def add_idle_callback(self, cb: Callable[[], None]) -> Callable[[], None]: ...

    def close(self) -> None: ...


class ResolverHandler(Protocol):
    """What a running resolver uses to add and remove its values."""

    def add_value(self, value: Any) -> int | None:
        """Attach ``value``; return its id, or ``None`` if it was rejected."""
        ...

    def remove_value(self, value_id: int) -> AttachedValue | None:
        """Remove a value this resolver added; ``None`` if unknown or already gone."""
        ...


class Resolver(Protocol):
    """Resolves one directive instance by adding values through ``handler``."""

    async def resolve(self, handler: ResolverHandler) -> None: ...


class DirectiveHandler(Protocol):
    """Something offered every directive on the bus (usually a controller)."""

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]: ...


@runtime_checkable
class Controller(Protocol):
    """A long-running unit on the bus that answers directives."""

    def get_controller_info(self) -> ControllerInfo: ...

    async def execute(self) -> None:
        """Run until done; return normally to stay attached, raise on failure."""
        ...

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        """Return resolvers for ``inst``, or an empty list if not handled."""
        ...

    def close(self) -> None:
        """Release resources; called by whoever constructed the controller."""
        ...


@dataclass(frozen=True, slots=True)
class ConfigConstructor:
    """A config id and a constructor of an empty config of that type."""

    config_id: str
    construct: Callable[[], Config]


@runtime_checkable
class Factory(Protocol):
    """Constructs controllers of one type from configs of one type."""

    def config_id(self) -> str: ...

    def controller_id(self) -> str: ...

    def construct_config(self) -> Config: ...

    def construct(self, config: Config, opts: ConstructOpts) -> Controller: ...

    def version(self) -> str:
        """Semantic version; a strictly higher one supersedes a running controller."""
        ...


class FactoryContext(Protocol):
    """Optional extension of :class:`Factory`: an event set when its plugin unloads."""

    def factory_context(self) -> asyncio.Event: ...


class FactoryResolver(Protocol):
    """Looks up factories and config constructors (static map, plugin, ...)."""

    def resolver_id(self) -> str: ...

    def resolver_version(self) -> str: ...

    async def get_config_ctor_by_id(self, config_id: str) -> ConfigConstructor | None: ...

    async def get_factory_matching_config(self, config: Config) -> Factory | None: ...


FactoriesChanged = Callable[[frozenset[str]], None]
"""Told the config ids whose factory was added, replaced or removed."""


class WatchableFactoryResolver(FactoryResolver, Protocol):
    """Optional extension of :class:`FactoryResolver`: factories that change at runtime.

    A resolver controller subscribes while it runs and, on each call, offers the live
    directives for those config ids to itself again (:meth:`Bus.reoffer`), so a
    directive waiting for a factory is answered once one is added, and one served by
    a removed factory loses that answer.
    """

    def subscribe(self, callback: FactoriesChanged) -> Callable[[], None]:
        """Call ``callback`` after every change; return a function that unsubscribes."""
        ...
