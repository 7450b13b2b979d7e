"""Greetings for the hot-demo plugin; edit GREETING and watch a running daemon reload."""

GREETING = "hello"


def greet(name: str) -> str:
    """The greeting for ``name``."""
    return f"{GREETING}, {name}"
