"""A :class:`~controllerbus.bus.protocols.Factory` from a config class and a constructor.

Most factories only say "configs of this class make controllers like this"; write
that as::

    def new_factory(bus: Bus) -> ControllerFactory[GreeterConfig]:
        return ControllerFactory(GreeterConfig, GreeterController, version="0.0.1")

where ``GreeterController(config, opts)`` builds the controller. The controller id
defaults to the config id, as in every example of the Go original.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from controllerbus.bus.config import Config
from controllerbus.bus.protocols import ConstructOpts, Controller

__all__ = ["ControllerFactory"]

C = TypeVar("C", bound=Config)


class ControllerFactory(Generic[C]):
    """Constructs controllers from configs of one class.

    Args:
        config_type: the config class; its ``CONFIG_ID`` is the factory's config id.
        construct: ``(config, opts) -> Controller``; may raise to refuse a config.
        version: the factory's semantic version (a higher one supersedes).
        controller_id: defaults to the config id.
    """

    def __init__(
        self,
        config_type: type[C],
        construct: Callable[[C, ConstructOpts], Controller],
        *,
        version: str,
        controller_id: str | None = None,
    ) -> None:
        self._config_type = config_type
        self._construct = construct
        self._version = version
        self._controller_id = controller_id or config_type.config_id()

    def __repr__(self) -> str:
        return f"<ControllerFactory {self._controller_id}@{self._version}>"

    def config_id(self) -> str:
        return self._config_type.config_id()

    def controller_id(self) -> str:
        return self._controller_id

    def construct_config(self) -> Config:
        return self._config_type()

    def construct(self, config: Config, opts: ConstructOpts) -> Controller:
        """Build a controller for ``config``.

        Raises:
            TypeError: ``config`` is not an instance of the factory's config class.
        """
        if not isinstance(config, self._config_type):
            raise TypeError(
                f"{self._controller_id} expects a {self._config_type.__qualname__}, "
                f"got {type(config).__qualname__}"
            )
        return self._construct(config, opts)

    def version(self) -> str:
        return self._version
