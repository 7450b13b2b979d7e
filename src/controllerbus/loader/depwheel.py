"""Plugin wheels and dependency wheels: tell them apart, and verify the latter.

A wheel with an entry point in group ``controllerbus.plugins`` is a *plugin*; any
other wheel is a *dependency* that a plugin may name in ``Requires-Dist``. A plugins
directory may hold both (it is the default ``--find-links`` location), so the
filesystem loader skips dependency wheels instead of failing to load them.

:func:`classify_wheel` only reads ``entry_points.txt`` (cheap; cached by file stat).
A file that cannot be read as a wheel counts as a plugin: loading it then fails
with the full verification report, which is the clearer message.
"""

from __future__ import annotations

import configparser
import functools
import os
import zipfile
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Literal

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from controllerbus.loader.verify import VerifiedWheel, verify_wheel
from controllerbus.plugin import ENTRY_POINT_GROUP

__all__ = [
    "WheelKind",
    "classify_wheel",
    "split_dependency_wheels",
    "verify_dependency_wheel",
]

WheelKind = Literal["plugin", "dependency"]


def classify_wheel(path: Path) -> WheelKind:
    """``"plugin"`` if the wheel declares a ``controllerbus.plugins`` entry point."""
    try:
        st = os.stat(path)
    except OSError:
        return "plugin"
    return _classify(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _classify(path: str, _size: int, _mtime_ns: int) -> WheelKind:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [
                n
                for n in zf.namelist()
                if n.count("/") == 1 and n.endswith(".dist-info/entry_points.txt")
            ]
            if len(names) != 1:
                # No entry points at all: a dependency, unless it is no wheel (no dist-info).
                has_info = any(n.split("/", 1)[0].endswith(".dist-info") for n in zf.namelist())
                return "dependency" if has_info and not names else "plugin"
            text = zf.read(names[0]).decode("utf-8")
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, ValueError, EOFError):
        return "plugin"
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        return "plugin"
    if parser.has_section(ENTRY_POINT_GROUP) and parser.items(ENTRY_POINT_GROUP):
        return "plugin"
    return "dependency"


def verify_dependency_wheel(path: Path) -> VerifiedWheel:
    """Verify a dependency wheel with the plugin rules, minus the entry point.

    Raises:
        InvalidWheel: every problem found (platform wheel, bad RECORD, unsafe path, a
            ``.pth`` file, ...); nothing was written.
    """
    return verify_wheel(path, plugin=False)


def split_dependency_wheels(
    wheels: Iterable[Path], plugin_distributions: Collection[str] = ()
) -> tuple[list[Path], list[Path]]:
    """Split the wheels of a plugins directory into (plugins, dependencies).

    A wheel without the entry point is a dependency, unless its distribution is also
    that of a plugin wheel among ``wheels`` or in ``plugin_distributions`` (a loaded
    plugin): then it is a broken plugin wheel, and the loader offers it to the host,
    which refuses it with the reason.
    """
    kinds = {path: classify_wheel(path) for path in wheels}
    plugins = {_dist(p) for p, kind in kinds.items() if kind == "plugin"}
    plugins.update(canonicalize_name(d) for d in plugin_distributions)
    deps = [p for p, kind in kinds.items() if kind == "dependency" and _dist(p) not in plugins]
    return [p for p in kinds if p not in deps], deps


def _dist(path: Path) -> str:
    try:
        return canonicalize_name(parse_wheel_filename(path.name)[0])
    except InvalidWheelFilename:
        return path.name
