"""The hello controller's factory (a module-level ``new_factory``)."""

from __future__ import annotations

from compiler_greeting import greet


class HelloFactory:
    """A minimal factory: enough for the loader and the tests to identify it."""

    def __init__(self, bus: object) -> None:
        self.bus = bus

    def config_id(self) -> str:
        return "compiler/hello"

    def controller_id(self) -> str:
        return "compiler/hello"

    def version(self) -> str:
        return "0.1.0"

    def greeting(self) -> str:
        return greet("hello")


def new_factory(bus: object) -> HelloFactory:
    """Construct the hello factory for ``bus``."""
    return HelloFactory(bus)
