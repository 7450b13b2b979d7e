"""Moved to :mod:`controllerbus.api.hello`; kept so that plugin wheels compiled
against this path keep loading (the classes are the same objects)."""

from controllerbus.api.hello import Hello, HelloReply

__all__ = ["Hello", "HelloReply"]
