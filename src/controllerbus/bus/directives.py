"""The directives of the loader path (docs/bus.md#loader-directives).

``LoadControllerWithConfig(config)`` is what users add; resolver controllers answer
it by adding ``ExecController(factory, config)``, which the loader controller
resolves by constructing and executing the controller. ``LoadFactoryByConfig`` and
``LoadConfigConstructorByID`` look up factories and config constructors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from packaging.version import InvalidVersion, Version

from controllerbus.bus.config import Config
from controllerbus.bus.protocols import Controller, Directive, Factory, ValueOptions

__all__ = [
    "ExecController",
    "ExecControllerValue",
    "LoadConfigConstructorByID",
    "LoadControllerWithConfig",
    "LoadFactoryByConfig",
    "strip_traceback",
]

_ONE_HARD = ValueOptions(max_value_count=1, max_value_hard_cap=True)


def _config_debug_vals(config: Config) -> dict[str, list[str]]:
    # The config's own keys never override config-id (docs/bus.md#loader-directives).
    vals = {k: list(v) for k, v in config.debug_vals().items() if k != "config-id"}
    vals["config-id"] = [config.config_id()]
    return vals


def _require_config(config: object) -> None:
    if not isinstance(config, Config):
        raise ValueError("config cannot be empty")


def strip_traceback(exc: BaseException) -> BaseException:
    """Drop the tracebacks of ``exc`` and of its causes and contexts; return ``exc``.

    An error kept as a value (on a directive, in a config-set state) would otherwise
    keep every frame it passed through alive, and with them the objects, classes
    and modules of a plugin generation that has since been unloaded. Log the
    traceback where the error happens; keep only the error itself.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
    return exc


@dataclass(frozen=True, slots=True)
class ExecControllerValue:
    """The state of an executing controller, attached to ``ExecController`` directives.

    ``controller`` may be set together with ``error``; ``next_retry_timestamp`` is set
    while the loader waits before retrying a failed controller. The error's traceback
    is dropped (see :func:`strip_traceback`).
    """

    controller: Controller | None = None
    error: BaseException | None = None
    next_retry_timestamp: float | None = None
    updated_timestamp: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.error is not None:
            strip_traceback(self.error)


@dataclass(frozen=True, eq=False, slots=True)
class LoadControllerWithConfig(Directive):
    """Load and run the controller for ``config``; values are ``ExecControllerValue``."""

    config: Config

    def validate(self) -> None:
        _require_config(self.config)

    def is_equivalent(self, other: Directive) -> bool:
        return isinstance(other, LoadControllerWithConfig) and self.config.equals_config(
            other.config
        )

    def get_name(self) -> str:
        return "LoadControllerWithConfig"

    def get_debug_vals(self) -> dict[str, list[str]]:
        return _config_debug_vals(self.config)


@dataclass(frozen=True, eq=False, slots=True)
class ExecController(Directive):
    """Execute a controller from ``factory`` and ``config`` (Go: ``ExecControllerSingleton``).

    Equal controller id and config join one controller; a factory with a strictly
    higher version supersedes the running one.
    """

    factory: Factory
    config: Config

    def validate(self) -> None:
        if self.factory is None:
            raise ValueError("factory cannot be empty")
        _require_config(self.config)
        self.config.validate_config()

    def is_equivalent(self, other: Directive) -> bool:
        return (
            isinstance(other, ExecController)
            and self.factory.controller_id() == other.factory.controller_id()
            and self.config.equals_config(other.config)
        )

    def superceeds(self, other: Directive) -> bool:
        if not isinstance(other, ExecController):
            return False
        try:
            return Version(self.factory.version()) > Version(other.factory.version())
        except InvalidVersion:
            return False

    def get_name(self) -> str:
        return "ExecController"

    def get_debug_vals(self) -> dict[str, list[str]]:
        vals = _config_debug_vals(self.config)
        vals["controller-id"] = [self.factory.controller_id()]
        return vals


@dataclass(frozen=True, eq=False, slots=True)
class LoadFactoryByConfig(Directive):
    """Find the factory for ``config``; one value, held while the resolver runs."""

    config: Config

    def validate(self) -> None:
        _require_config(self.config)

    def value_options(self) -> ValueOptions:
        return _ONE_HARD

    def is_equivalent(self, other: Directive) -> bool:
        return isinstance(other, LoadFactoryByConfig) and self.config.equals_config(other.config)

    def get_name(self) -> str:
        return "LoadFactoryByConfig"

    def get_debug_vals(self) -> dict[str, list[str]]:
        return _config_debug_vals(self.config)


@dataclass(frozen=True, eq=False, slots=True)
class LoadConfigConstructorByID(Directive):
    """Find the constructor of configs with id ``config_id`` (value: ``ConfigConstructor``)."""

    config_id: str

    def validate(self) -> None:
        if not self.config_id:
            raise ValueError("config ID cannot be empty")

    def value_options(self) -> ValueOptions:
        return _ONE_HARD

    def is_equivalent(self, other: Directive) -> bool:
        return isinstance(other, LoadConfigConstructorByID) and self.config_id == other.config_id

    def get_name(self) -> str:
        return "LoadConfigConstructorByID"

    def get_debug_vals(self) -> dict[str, list[str]]:
        return {"config-id": [self.config_id]}
