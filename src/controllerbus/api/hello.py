"""A host-owned directive that plugins answer: ``Hello(name)`` → ``HelloReply``.

The host owns the directive and value types and plugins only import them, so a host
can ask a plugin something without importing plugin code, and ``isinstance`` checks
keep working across reloads (the classic failure of in-place reloaders).
"""

from __future__ import annotations

from dataclasses import dataclass

from controllerbus.bus.protocols import Directive, ValueOptions

__all__ = ["Hello", "HelloReply"]


@dataclass(frozen=True, slots=True)
class HelloReply:
    """The answer to :class:`Hello`: the greeting, who produced it, and how many
    greetings the responder has given so far (a hot-reloaded greeter keeps counting)."""

    text: str
    responder: str = ""
    count: int = 0


@dataclass(frozen=True, eq=False, slots=True)
class Hello(Directive):
    """Ask for a greeting for ``name``; one value."""

    name: str

    def validate(self) -> None:
        if not self.name:
            raise ValueError("name must be specified")

    def value_options(self) -> ValueOptions:
        return ValueOptions(max_value_count=1, max_value_hard_cap=True)

    def is_equivalent(self, other: Directive) -> bool:
        return isinstance(other, Hello) and other.name == self.name

    def get_name(self) -> str:
        return "Hello"

    def get_debug_vals(self) -> dict[str, list[str]]:
        return {"name": [self.name]}
