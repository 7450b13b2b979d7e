"""A misbehaving plugin: writes garbage to its host socket, or blocks its loop."""

from __future__ import annotations

import os
import struct
import sys
import time
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
)
from controllerbus.plugin import StaticPlugin


class EvilConfig(Config):
    CONFIG_ID: ClassVar[str] = "test/ipc/evil/1"


@dataclass(frozen=True, slots=True)
class Misbehave:
    how: str  # "garbage" | "oversize" | "block-once:<marker path>" | "exit"

    def validate(self) -> None:
        pass

    def value_options(self) -> ValueOptions:
        return ValueOptions()

    def is_equivalent(self, other: Directive) -> bool:
        return isinstance(other, Misbehave) and other.how == self.how

    def superceeds(self, other: Directive) -> bool:
        return False

    def get_name(self) -> str:
        return "Misbehave"

    def get_debug_vals(self) -> dict[str, list[str]]:
        return {"how": [self.how]}


def _host_fd() -> int:
    return int(sys.argv[sys.argv.index("--fd") + 1])


class _Resolver:
    def __init__(self, how: str) -> None:
        self._how = how

    async def resolve(self, handler: ResolverHandler) -> None:
        if self._how == "garbage":
            os.write(_host_fd(), struct.pack(">I", 9) + b"not json!")
        elif self._how == "oversize":
            os.write(_host_fd(), struct.pack(">I", 1 << 31))
        elif self._how.startswith("block-once:"):
            marker = self._how.partition(":")[2]
            # Blocking on purpose: a plugin that hangs its own event loop.
            if not os.path.exists(marker):  # noqa: ASYNC240
                open(marker, "w").close()  # noqa: ASYNC230
                time.sleep(30)  # noqa: ASYNC251
        elif self._how == "exit":
            os._exit(7)


class EvilController:
    def __init__(self, config: EvilConfig, opts: ConstructOpts) -> None:
        pass

    def get_controller_info(self) -> ControllerInfo:
        return ControllerInfo(EvilConfig.CONFIG_ID, "0.0.1")

    async def execute(self) -> None:
        return None

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        d = inst.get_directive()
        return [_Resolver(d.how)] if isinstance(d, Misbehave) else []

    def close(self) -> None:
        pass


def _factories(bus: Bus) -> list[object]:
    return [ControllerFactory(EvilConfig, EvilController, version="0.0.1")]


PLUGIN = StaticPlugin("test-ipc-evil", "1", _factories)  # type: ignore[arg-type]
BROKEN = None
