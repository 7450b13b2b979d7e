"""Sample library vendored into the hello plugin."""

from __future__ import annotations

from compiler_util import shout


def greet(name: str) -> str:
    """Return a greeting for ``name``."""
    return shout(f"greetings, {name}")
