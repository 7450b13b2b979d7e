"""The hot-compile demo controller: says hello, optionally exits the process.

Semantics: docs/bus.md#hot-demo-controller.

With ``exitAfterDur`` set it waits that long, then asks the process to shut down
cleanly with SIGTERM (Go calls ``os.Exit(0)``; a signal lets the daemon stop every
controller and unload plugins first).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence
from typing import ClassVar

from cbus_hot_demo.duration import parse_go_duration
from controllerbus.bus import (
    Bus,
    Config,
    ConstructOpts,
    ControllerFactory,
    ControllerInfo,
    DirectiveInstance,
    Resolver,
)

CONTROLLER_ID = "controllerbus/example/hot-demo/demo-controller/1"
VERSION = "0.0.1"


class DemoConfig(Config):
    """``exitAfterDur``: a Go duration after which the process exits; empty = never."""

    CONFIG_ID: ClassVar[str] = CONTROLLER_ID

    exit_after_dur: str = ""

    def validate_config(self) -> None:
        if self.exit_after_dur:
            parse_go_duration(self.exit_after_dur)


class DemoController:
    """Logs a greeting; exits the process after ``exit_after_dur`` if set."""

    def __init__(self, config: DemoConfig, opts: ConstructOpts) -> None:
        self._config = config
        self._logger = opts.logger

    def get_controller_info(self) -> ControllerInfo:
        return ControllerInfo(CONTROLLER_ID, VERSION, "hot compile demo controller")

    async def execute(self) -> None:
        self._logger.info("hello from hot compile demo controller")
        if not self._config.exit_after_dur:
            return
        delay = parse_go_duration(self._config.exit_after_dur)
        self._logger.info("exiting after %s as configured", self._config.exit_after_dur)
        await asyncio.sleep(delay)
        os.kill(os.getpid(), signal.SIGTERM)

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        return []

    def close(self) -> None:
        return None


def new_factory(bus: Bus) -> ControllerFactory[DemoConfig]:
    """The demo controller's factory."""
    return ControllerFactory(DemoConfig, DemoController, version=VERSION)
