"""Test doubles for the bus: a configurable directive, controller and resolvers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from controllerbus.bus import (
    AttachedValue,
    Config,
    ConstructOpts,
    Controller,
    ControllerInfo,
    Directive,
    DirectiveInstance,
    Resolver,
    ResolverHandler,
    ValueOptions,
)


@dataclass(frozen=True, eq=False)
class Ask(Directive):
    """A directive with a key and chosen value options."""

    key: str
    opts: ValueOptions = field(default_factory=ValueOptions)
    version: int = 0

    def validate(self) -> None:
        if not self.key:
            raise ValueError("key must be set")

    def value_options(self) -> ValueOptions:
        return self.opts

    def is_equivalent(self, other: Directive) -> bool:
        return isinstance(other, Ask) and other.key == self.key

    def superceeds(self, other: Directive) -> bool:
        return isinstance(other, Ask) and self.version > other.version

    def get_name(self) -> str:
        return "Ask"

    def get_debug_vals(self) -> dict[str, list[str]]:
        return {"key": [self.key]}


@dataclass
class Recorder:
    """A ReferenceHandler that records every event."""

    added: list[AttachedValue] = field(default_factory=list)
    removed: list[AttachedValue] = field(default_factory=list)
    disposed: int = 0

    def handle_value_added(self, inst: DirectiveInstance, value: AttachedValue) -> None:
        self.added.append(value)

    def handle_value_removed(self, inst: DirectiveInstance, value: AttachedValue) -> None:
        self.removed.append(value)

    def handle_instance_disposed(self, inst: DirectiveInstance) -> None:
        self.disposed += 1

    @property
    def values(self) -> list[Any]:
        gone = {v.value_id for v in self.removed}
        return [v.value for v in self.added if v.value_id not in gone]


ResolveFn = Callable[[ResolverHandler], Any]


class FnResolver:
    """A resolver running an async function; counts its runs."""

    def __init__(self, fn: ResolveFn) -> None:
        self.fn = fn
        self.runs = 0
        self.cancelled = 0

    async def resolve(self, handler: ResolverHandler) -> None:
        self.runs += 1
        try:
            await self.fn(handler)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


def adds(*values: Any, hold: bool = False) -> ResolveFn:
    """A resolve function adding ``values`` then returning (or holding until cancelled)."""

    async def fn(handler: ResolverHandler) -> None:
        for value in values:
            handler.add_value(value)
        if hold:
            await asyncio.Event().wait()

    return fn


class Answering:
    """A controller answering ``Ask`` directives with fresh resolvers from ``make``."""

    def __init__(
        self, make: Callable[[Ask], Sequence[Resolver]], name: str = "test/answering"
    ) -> None:
        self.make = make
        self.name = name
        self.offered: list[str] = []
        self.closed = False

    def get_controller_info(self) -> ControllerInfo:
        return ControllerInfo(self.name, "0.0.1", "test controller")

    async def execute(self) -> None:
        return None

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        directive = inst.get_directive()
        if isinstance(directive, Ask):
            self.offered.append(directive.key)
            return self.make(directive)
        return []

    def close(self) -> None:
        self.closed = True


async def settle(rounds: int = 5) -> None:
    """Let scheduled callbacks and freshly started tasks run."""
    for _ in range(rounds):
        await asyncio.sleep(0)


# -- a controller type with versions, for the loader path --------------------------------


class WidgetConfig(Config):
    CONFIG_ID: ClassVar[str] = "test/widget/1"
    name: str = "w"


class Widget:
    def __init__(self, version: str, fail_times: int, log: list[str]) -> None:
        self.version = version
        self.fail_times = fail_times
        self.log = log
        self.closed = False

    def get_controller_info(self) -> ControllerInfo:
        return ControllerInfo("test/widget/1", self.version)

    async def execute(self) -> None:
        self.log.append(f"execute {self.version}")
        if self.fail_times > 0:
            raise RuntimeError(f"widget failed ({self.fail_times} left)")

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        return []

    def close(self) -> None:
        self.closed = True
        self.log.append(f"close {self.version}")


class WidgetFactory:
    def __init__(self, version: str = "0.0.1", *, fail_times: int = 0, broken: bool = False):
        self._version = version
        self.fail_times = fail_times
        self.broken = broken
        self.log: list[str] = []
        self.built: list[Widget] = []

    def config_id(self) -> str:
        return WidgetConfig.CONFIG_ID

    def controller_id(self) -> str:
        return "test/widget/1"

    def construct_config(self) -> Config:
        return WidgetConfig()

    def construct(self, config: Config, opts: ConstructOpts) -> Controller:
        if self.broken:
            raise ValueError("cannot build widget")
        widget = Widget(self._version, self.fail_times, self.log)
        self.fail_times = max(0, self.fail_times - 1)
        self.built.append(widget)
        return widget

    def version(self) -> str:
        return self._version
