"""A tiny plugin for process-isolation tests: boilerplate plus an echo controller."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from controllerbus.bus import (
    Bus,
    Config,
    ConstructOpts,
    ControllerFactory,
    ControllerInfo,
    Directive,
    DirectiveInstance,
    Resolver,
    ResolverHandler,
    ValueOptions,
    exec_one_off,
)
from controllerbus.example import boilerplate
from controllerbus.plugin import StaticPlugin


class EchoConfig(Config):
    CONFIG_ID: ClassVar[str] = "test/ipc/echo/1"
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class Echo:
    """Answered with one EchoReply(text=prefix+text, pid)."""

    text: str

    def validate(self) -> None:
        pass

    def value_options(self) -> ValueOptions:
        return ValueOptions(max_value_count=1, max_value_hard_cap=True)

    def is_equivalent(self, other: Directive) -> bool:
        return isinstance(other, Echo) and other.text == self.text

    def superceeds(self, other: Directive) -> bool:
        return False

    def get_name(self) -> str:
        return "Echo"

    def get_debug_vals(self) -> dict[str, list[str]]:
        return {"text": [self.text]}


@dataclass(frozen=True, slots=True)
class EchoReply:
    text: str
    pid: int


@dataclass(frozen=True, slots=True)
class Stream:
    """Answered with ``count`` values 0..count-1."""

    count: int

    def validate(self) -> None:
        pass

    def value_options(self) -> ValueOptions:
        return ValueOptions()

    def is_equivalent(self, other: Directive) -> bool:
        return isinstance(other, Stream) and other.count == self.count

    def superceeds(self, other: Directive) -> bool:
        return False

    def get_name(self) -> str:
        return "Stream"

    def get_debug_vals(self) -> dict[str, list[str]]:
        return {}


@dataclass(frozen=True, slots=True)
class StreamItem:
    n: int


class _EchoResolver:
    def __init__(self, prefix: str, text: str) -> None:
        self._reply = EchoReply(prefix + text, os.getpid())

    async def resolve(self, handler: ResolverHandler) -> None:
        handler.add_value(self._reply)


class _StreamResolver:
    def __init__(self, count: int) -> None:
        self._count = count

    async def resolve(self, handler: ResolverHandler) -> None:
        for n in range(self._count):
            handler.add_value(StreamItem(n))


class EchoController:
    def __init__(self, config: EchoConfig, opts: ConstructOpts) -> None:
        self._config = config

    def get_controller_info(self) -> ControllerInfo:
        return ControllerInfo(EchoConfig.CONFIG_ID, "0.0.1", "echo")

    async def execute(self) -> None:
        return None

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        d = inst.get_directive()
        if isinstance(d, Echo):
            return [_EchoResolver(self._config.prefix, d.text)]
        if isinstance(d, Stream):
            return [_StreamResolver(d.count)]
        return []

    def close(self) -> None:
        pass


class AskConfig(Config):
    CONFIG_ID: ClassVar[str] = "test/ipc/ask/1"
    message: str = "from the child"


class _AskResolver:
    def __init__(self, ctrl: AskController) -> None:
        self._ctrl = ctrl

    async def resolve(self, handler: ResolverHandler) -> None:
        await self._ctrl._answered.wait()
        handler.add_value(EchoReply(self._ctrl._answer, os.getpid()))


class AskController:
    """Asks the host's bus (a Boilerplate directive) and answers Echo("ask") with it."""

    def __init__(self, bus: Bus, config: AskConfig) -> None:
        self._bus = bus
        self._config = config
        self._answer = ""
        self._answered = asyncio.Event()

    def get_controller_info(self) -> ControllerInfo:
        return ControllerInfo(AskConfig.CONFIG_ID, "0.0.1", "ask")

    async def execute(self) -> None:
        av, ref = await exec_one_off(self._bus, boilerplate.Boilerplate(self._config.message))
        assert av is not None
        self._answer = f"host says printed_len={av.value.printed_len}"
        self._answered.set()
        ref.release()

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        d = inst.get_directive()
        if isinstance(d, Echo) and d.text == "ask":
            return [_AskResolver(self)]
        return []

    def close(self) -> None:
        pass


def _factories(bus: Bus) -> list[object]:
    return [
        ControllerFactory(EchoConfig, EchoController, version="0.0.1"),
        ControllerFactory(AskConfig, lambda c, _o: AskController(bus, c), version="0.0.1"),
        boilerplate.new_factory(bus),
    ]


PLUGIN = StaticPlugin("test-ipc-echo", "1", _factories)  # type: ignore[arg-type]
