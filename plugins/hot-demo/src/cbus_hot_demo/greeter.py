"""A controller answering the host-owned ``Hello`` directive with ``demo_greeting``.

It counts the greetings it gave and keeps counting across hot reloads: ``snapshot()``
hands the count to the loader as plain data, ``restore(state)`` takes it back in
the new generation (see docs/hot.md, State handoff).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import demo_greeting

from controllerbus.api.hello import Hello, HelloReply
from controllerbus.bus import (
    Bus,
    Config,
    ConstructOpts,
    ControllerFactory,
    ControllerInfo,
    DirectiveInstance,
    Resolver,
    ResolverHandler,
)

CONTROLLER_ID = "controllerbus/example/hot-demo/greeter/1"
VERSION = "0.0.1"


class GreeterConfig(Config):
    """``punctuation`` is appended to every greeting."""

    CONFIG_ID: ClassVar[str] = CONTROLLER_ID

    punctuation: str = ""


class _HelloResolver:
    def __init__(self, name: str, punctuation: str, count: Callable[[], int]) -> None:
        self._name = name
        self._punctuation = punctuation
        self._count = count

    async def resolve(self, handler: ResolverHandler) -> None:
        text = demo_greeting.greet(self._name) + self._punctuation
        handler.add_value(HelloReply(text=text, responder=CONTROLLER_ID, count=self._count()))


class GreeterController:
    """Answers ``Hello(name)``, counting the greetings (state kept across reloads)."""

    def __init__(self, config: GreeterConfig, opts: ConstructOpts) -> None:
        self._config = config
        self._logger = opts.logger
        self._greeted = 0

    def snapshot(self) -> dict[str, int]:
        """The state a reload carries over: plain JSON data."""
        return {"greeted": self._greeted}

    def restore(self, state: dict[str, int]) -> None:
        """Take over the previous generation's count."""
        self._greeted = int(state["greeted"])

    def _next(self) -> int:
        self._greeted += 1
        return self._greeted

    def get_controller_info(self) -> ControllerInfo:
        return ControllerInfo(CONTROLLER_ID, VERSION, "greets through demo_greeting")

    async def execute(self) -> None:
        self._logger.info("greeter ready: %s", demo_greeting.greet("world"))

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        directive = inst.get_directive()
        if isinstance(directive, Hello):
            return [_HelloResolver(directive.name, self._config.punctuation, self._next)]
        return []

    def close(self) -> None:
        return None


def new_factory(bus: Bus) -> ControllerFactory[GreeterConfig]:
    """The greeter's factory."""
    return ControllerFactory(GreeterConfig, GreeterController, version=VERSION)
