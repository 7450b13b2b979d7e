"""A second factory, so the generated module lists more than one."""

from __future__ import annotations


class EchoFactory:
    """Echoes; exists to be found by the AST scan."""

    def __init__(self, bus: object) -> None:
        self.bus = bus

    def config_id(self) -> str:
        return "compiler/echo"

    def controller_id(self) -> str:
        return "compiler/echo"

    def version(self) -> str:
        return "0.1.0"


def new_factory(bus: object) -> EchoFactory:
    """Construct the echo factory for ``bus``."""
    return EchoFactory(bus)
