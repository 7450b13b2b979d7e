"""A host-owned controller that keeps asking ``Hello`` and writes every answer down.

Config ``controllerbus/example/hello-probe/1`` with ``name`` and ``out`` (a file):
the probe holds one ``Hello(name)`` directive for as long as it runs and appends
one JSON line per value it receives (``{"text", "responder", "count"}``) to
``out``. Because the probe lives in the host, it survives plugin reloads: after a
hot reload the new generation's greeter answers the same directive, and a new
line appears. That makes the probe a window into a daemon running in another
process (the hot-reload end-to-end test reads it), without a control socket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from controllerbus.bus.config import Config
from controllerbus.bus.factory import ControllerFactory
from controllerbus.bus.helpers import CallbackHandler
from controllerbus.bus.protocols import (
    AttachedValue,
    ConstructOpts,
    ControllerInfo,
    DirectiveInstance,
    Resolver,
)
from controllerbus.example.hello import Hello, HelloReply

if TYPE_CHECKING:
    from controllerbus.bus.bus import Bus

__all__ = ["CONTROLLER_ID", "HelloProbeConfig", "HelloProbeController", "new_factory"]

CONTROLLER_ID = "controllerbus/example/hello-probe/1"
VERSION = "0.0.1"


class HelloProbeConfig(Config):
    """``name`` to greet; ``out``: the file to append one JSON line per answer to."""

    CONFIG_ID: ClassVar[str] = CONTROLLER_ID

    name: str = "world"
    out: str = ""

    def validate_config(self) -> None:
        if not self.out:
            raise ValueError("out must name a file to write the answers to")


class HelloProbeController:
    """Holds ``Hello(name)`` while running; writes each answer to ``out``."""

    def __init__(self, config: HelloProbeConfig, opts: ConstructOpts, bus: Bus) -> None:
        self._config = config
        self._bus = bus

    def get_controller_info(self) -> ControllerInfo:
        return ControllerInfo(CONTROLLER_ID, VERSION, "writes every Hello answer to a file")

    async def execute(self) -> None:
        out = Path(self._config.out)

        def added(_inst: DirectiveInstance, av: AttachedValue) -> None:
            reply = av.value
            if isinstance(reply, HelloReply):
                line = {"text": reply.text, "responder": reply.responder, "count": reply.count}
                with out.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(line) + "\n")

        _inst, ref = self._bus.add_directive(Hello(self._config.name), CallbackHandler(added))
        try:
            await asyncio.Event().wait()
        finally:
            ref.release()

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        return []

    def close(self) -> None:
        return None


def new_factory(bus: Bus) -> ControllerFactory[HelloProbeConfig]:
    """The probe's factory (built into ``cbus daemon``)."""
    return ControllerFactory(
        HelloProbeConfig,
        lambda config, opts: HelloProbeController(config, opts, bus),
        version=VERSION,
    )
