"""The boilerplate example controller and directive (docs/bus.md#boilerplate).

Load it with ``LoadControllerWithConfig(BoilerplateConfig(example_field="testing"))``;
then ``exec_one_off(bus, Boilerplate("hello world"))`` yields
``BoilerplateResult(printed_len=55)``: the UTF-8 byte length of
``"logging message from boilerplate directive: hello world"``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from controllerbus.bus.config import Config
from controllerbus.bus.factory import ControllerFactory
from controllerbus.bus.protocols import (
    ConstructOpts,
    ControllerInfo,
    Directive,
    DirectiveInstance,
    Resolver,
    ResolverHandler,
    ValueOptions,
)

if TYPE_CHECKING:
    from controllerbus.bus.bus import Bus

__all__ = [
    "CONTROLLER_ID",
    "VERSION",
    "Boilerplate",
    "BoilerplateConfig",
    "BoilerplateController",
    "BoilerplateResult",
    "new_factory",
]

CONTROLLER_ID = "controllerbus/example/boilerplate/1"
VERSION = "0.0.1"


class BoilerplateConfig(Config):
    """Config of the boilerplate controller; ``example_field`` must be set."""

    CONFIG_ID: ClassVar[str] = CONTROLLER_ID

    example_field: str = ""

    def validate_config(self) -> None:
        if not self.example_field:
            raise ValueError("example field must be set")


@dataclass(frozen=True, slots=True)
class BoilerplateResult:
    """The value of a :class:`Boilerplate` directive."""

    printed_len: int


@dataclass(frozen=True, eq=False, slots=True)
class Boilerplate(Directive):
    """Ask the boilerplate controller to log ``message_text``."""

    message_text: str

    def validate(self) -> None:
        if not self.message_text:
            raise ValueError("message text must be specified")

    def value_options(self) -> ValueOptions:
        return ValueOptions(max_value_count=1, max_value_hard_cap=True, unref_dispose_dur=1.0)

    def is_equivalent(self, other: Directive) -> bool:
        return isinstance(other, Boilerplate) and other.message_text == self.message_text

    def get_name(self) -> str:
        return "Boilerplate"

    def get_debug_vals(self) -> dict[str, list[str]]:
        return {"message": [self.message_text]}


class _BoilerplateResolver:
    def __init__(self, logger: logging.Logger, message: str) -> None:
        self._logger = logger
        self._message = message

    async def resolve(self, handler: ResolverHandler) -> None:
        full = "logging message from boilerplate directive: " + self._message
        self._logger.info("%s", full)
        # Go's len() counts UTF-8 bytes, not characters.
        handler.add_value(BoilerplateResult(printed_len=len(full.encode("utf-8"))))


class BoilerplateController:
    """Logs a greeting on start and answers :class:`Boilerplate` directives."""

    def __init__(self, config: BoilerplateConfig, opts: ConstructOpts) -> None:
        self._config = config
        self._logger = opts.logger

    def get_controller_info(self) -> ControllerInfo:
        return ControllerInfo(CONTROLLER_ID, VERSION, "")

    async def execute(self) -> None:
        self._logger.info("hello from boilerplate controller 1: %s", self._config.example_field)

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        directive = inst.get_directive()
        if isinstance(directive, Boilerplate):
            return [_BoilerplateResolver(self._logger, directive.message_text)]
        return []

    def close(self) -> None:
        return None


def new_factory(bus: Bus) -> ControllerFactory[BoilerplateConfig]:
    """The factory of the boilerplate controller (Go: ``NewFactory``)."""
    return ControllerFactory(BoilerplateConfig, BoilerplateController, version=VERSION)
