"""Sample single-module library at the end of the path-dependency chain."""


def shout(text: str) -> str:
    """Upper-case ``text`` with an exclamation mark."""
    return text.upper() + "!"
