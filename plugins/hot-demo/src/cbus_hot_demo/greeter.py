"""A controller answering the host-owned ``Hello`` directive with ``demo_greeting``."""

from __future__ import annotations

from collections.abc import Sequence
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
    def __init__(self, name: str, punctuation: str) -> None:
        self._name = name
        self._punctuation = punctuation

    async def resolve(self, handler: ResolverHandler) -> None:
        text = demo_greeting.greet(self._name) + self._punctuation
        handler.add_value(HelloReply(text=text, responder=CONTROLLER_ID))


class GreeterController:
    """Answers ``Hello(name)``."""

    def __init__(self, config: GreeterConfig, opts: ConstructOpts) -> None:
        self._config = config
        self._logger = opts.logger

    def get_controller_info(self) -> ControllerInfo:
        return ControllerInfo(CONTROLLER_ID, VERSION, "greets through demo_greeting")

    async def execute(self) -> None:
        self._logger.info("greeter ready: %s", demo_greeting.greet("world"))

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        directive = inst.get_directive()
        if isinstance(directive, Hello):
            return [_HelloResolver(directive.name, self._config.punctuation)]
        return []

    def close(self) -> None:
        return None


def new_factory(bus: Bus) -> ControllerFactory[GreeterConfig]:
    """The greeter's factory."""
    return ControllerFactory(GreeterConfig, GreeterController, version=VERSION)
