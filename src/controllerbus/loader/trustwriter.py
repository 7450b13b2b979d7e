"""Write a trust file for a directory of wheels (what CI runs after compiling).

``cbus plugins trust DIR [-o FILE]`` pins every ``*.whl`` of ``DIR`` (plugins and
dependency wheels alike) by file name and sha256, sorted, in the syntax that
:mod:`controllerbus.loader.trust` reads.
"""

from __future__ import annotations

from pathlib import Path

from controllerbus._fs import write_atomic
from controllerbus.errors import LoaderError
from controllerbus.loader.trust import parse_trust_file, sha256_of

__all__ = ["render_trust_file", "write_trust_file"]

_HEADER = (
    "# controllerbus trust file: the wheels this host may load, pinned by sha256.\n"
    "# Written by `cbus plugins trust`; pip requirements syntax (--require-hashes style).\n"
)


def render_trust_file(wheels: dict[str, str]) -> str:
    """The trust-file text pinning ``wheels`` (file name → sha256), sorted by name."""
    lines = [_HEADER]
    for name in sorted(wheels):
        lines.append(f"{name} \\\n    --hash=sha256:{wheels[name]}\n")
    text = "".join(lines)
    parse_trust_file(text)  # what we write must be what we read
    return text


def write_trust_file(directory: Path, output: Path | None = None) -> str:
    """Pin every wheel in ``directory``; write the text to ``output`` (atomically) if given.

    Returns:
        The trust-file text.

    Raises:
        LoaderError: the directory cannot be read or holds no wheel.
    """
    try:
        wheels = sorted(p for p in directory.iterdir() if p.name.endswith(".whl") and p.is_file())
    except OSError as exc:
        raise LoaderError(f"cannot list wheels in {directory}: {exc}") from exc
    if not wheels:
        raise LoaderError(f"{directory} holds no *.whl file to pin; compile the plugins first")
    text = render_trust_file({p.name: sha256_of(p) for p in wheels})
    if output is not None:
        write_atomic(output, text.encode("utf-8"))
    return text
