"""Compiled code in a first-party project: a ``py3-none-any`` plugin wheel cannot carry it.

:func:`refuse_build_scripts` looks at how a project is built (``setup.py`` with
``ext_modules``, a ``build.py`` or ``[tool.poetry.build]`` script, maturin, meson,
scikit-build); :data:`BINARY_FILE` matches compiled files inside a package. Both
end in :class:`~controllerbus.compiler.errors.BinaryContent` naming the file and
the fix (ship the compiled part as its own platform wheel, depend on it by name).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controllerbus.compiler.errors import BinaryContent, Issue

__all__ = ["BINARY_FILE", "refuse_build_scripts"]

PYPROJECT = "pyproject.toml"

#: Compiled code: a py3-none-any wheel that carries one of these is broken elsewhere.
BINARY_FILE = re.compile(r"\.(so|pyd|dylib|dll)(\.[0-9.]*)?$")

_BUILD_BACKENDS_WITH_CODE = {
    "maturin": "[build-system] maturin (Rust extension)",
    "mesonpy": "[build-system] meson-python (compiled extension)",
    "scikit_build_core.build": "[build-system] scikit-build-core (CMake extension)",
}


def refuse_build_scripts(root: Path, data: Mapping[str, Any]) -> None:
    """Refuse a project whose build compiles code (a pure plugin wheel cannot carry it)."""
    found: list[tuple[Path, str]] = []
    backend = str(data.get("build-system", {}).get("build-backend", ""))
    tool = data.get("tool", {})
    if backend in _BUILD_BACKENDS_WITH_CODE:
        found.append((root / PYPROJECT, _BUILD_BACKENDS_WITH_CODE[backend]))
    elif isinstance(tool, dict) and "maturin" in tool:
        found.append((root / PYPROJECT, "[tool.maturin] (Rust extension)"))
    setup = root / "setup.py"
    if setup.is_file() and re.search(rb"\b(ext_modules|Extension|cythonize)\b", setup.read_bytes()):
        found.append((setup, "setup.py builds C extensions (ext_modules)"))
    poetry_build = tool.get("poetry", {}).get("build") if isinstance(tool, dict) else None
    if poetry_build is not None or (root / "build.py").is_file():
        found.append((root / "build.py", "a build script (build.py / [tool.poetry.build])"))
    if (root / "meson.build").is_file():
        found.append((root / "meson.build", "meson.build (compiled extension)"))
    if found:
        raise BinaryContent(
            Issue(
                path,
                None,
                f"{what}: a py3-none-any plugin wheel cannot carry compiled code; move the"
                " compiled part into its own distribution, built and published separately,"
                " and depend on it by name (it becomes Requires-Dist)",
            )
            for path, what in found
        )
