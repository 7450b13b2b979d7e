"""The options of one compile, as one frozen value.

The CLI builds a :class:`CompileOptions` once from its flags and environment
variables and passes it to :func:`~controllerbus.compiler.compile_plugin`,
:func:`~controllerbus.compiler.codegen` and
:func:`~controllerbus.compiler.watch_compile`, so a new option is added in one
place instead of in every signature that forwards it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_OUTPUT_DIR", "CompileOptions"]

#: Where wheels go when no output directory is given (relative to the working directory).
DEFAULT_OUTPUT_DIR = Path("dist-plugins")


@dataclass(frozen=True, slots=True, kw_only=True)
class CompileOptions:
    """How to compile; every field has the CLI's default.

    Attributes:
        output_dir: where the wheel is written (created if missing).
        codegen_dir: the overlay directory; ``None``: ``./.cbus-codegen/<distribution>``.
        binary_id: ``BINARY_ID`` and entry point name; ``None``: the target's name.
        binary_version: ``BINARY_VERSION``; ``{buildHash}`` is replaced by the first
            16 hex digits of the build hash; ``None``: ``cbus-hot-{buildHash}``.
        build_prefix: import-name prefix of the generated module; ``None``: ``cbus_plugin_``.
        isolated: build with ``python -m build`` in a fresh environment instead of
            in-process hatchling (same bytes, about a second slower).
        cleanup: remove older wheels of the same plugin from ``output_dir``.
    """

    output_dir: Path = DEFAULT_OUTPUT_DIR
    codegen_dir: Path | None = None
    binary_id: str | None = None
    binary_version: str | None = None
    build_prefix: str | None = None
    isolated: bool = False
    cleanup: bool = True
