"""What the plugin host needs to run a generation as a process plugin.

* :func:`declared_isolation` reads the plugin's own choice from its wheel: an entry
  point in group ``controllerbus.isolation`` named like the plugin entry point, with
  the value ``process`` or ``inprocess``::

      [project.entry-points."controllerbus.isolation"]
      my-plugin = "process"

* :func:`resolve_isolation` applies the precedence: per plugin from the Python API
  (``PluginHost(isolation_overrides=...)``), then the plugin's metadata, then the
  host's default (``cbus daemon --isolation``).
* :func:`process_plugin_for` builds the :class:`~controllerbus.ipc.host.ProcessPlugin`
  of a generation (its own ``bin/python``), and :class:`ProcessActive` is what the
  host keeps for an active one.
"""

from __future__ import annotations

import configparser
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from controllerbus.bus.bus import Bus
from controllerbus.ipc.host import ProcessPlugin
from controllerbus.ipc.spare import SparePool, WarmSite

if TYPE_CHECKING:
    from controllerbus.loader.generation import Generation
    from controllerbus.loader.verify import VerifiedWheel

__all__ = [
    "ISOLATION_GROUP",
    "Isolation",
    "ProcessActive",
    "declared_isolation",
    "process_plugin_for",
    "resolve_isolation",
]

Isolation = Literal["inprocess", "process"]
ISOLATIONS: tuple[str, ...] = get_args(Isolation)
ISOLATION_GROUP = "controllerbus.isolation"


def declared_isolation(verified: VerifiedWheel, name: str) -> Isolation | None:
    """The isolation the wheel declares for entry point ``name``, if any.

    Raises:
        ValueError: the declared value is not ``process`` or ``inprocess``.
    """
    try:
        with zipfile.ZipFile(verified.path) as zf:
            text = zf.read(f"{verified.dist_info}/entry_points.txt").decode()
    except (KeyError, OSError, zipfile.BadZipFile, UnicodeDecodeError):
        return None
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.Error:
        return None
    if not parser.has_option(ISOLATION_GROUP, name):
        return None
    value = parser.get(ISOLATION_GROUP, name).strip()
    if value not in ISOLATIONS:
        raise ValueError(
            f"entry point {name} in group {ISOLATION_GROUP!r} is {value!r}; "
            f"use one of: {', '.join(ISOLATIONS)}"
        )
    return value  # type: ignore[return-value]


def resolve_isolation(
    binary_id: str,
    declared: Isolation | None,
    *,
    default: Isolation,
    overrides: Mapping[str, Isolation],
) -> Isolation:
    """Python API override, then the plugin's metadata, then the host default."""
    if binary_id in overrides:
        return overrides[binary_id]
    return declared if declared is not None else default


def process_plugin_for(
    bus: Bus,
    generation: Generation,
    binary_id: str,
    entry_point: str,
    *,
    spares: SparePool | None = None,
    **options: Any,
) -> ProcessPlugin:
    """A (not yet started) process plugin running ``generation``'s own interpreter.

    With ``spares``, a warm spare of the same base interpreter may stand in for a
    fresh ``<generation>/bin/python`` (see :mod:`controllerbus.ipc.spare`).
    """
    from controllerbus.loader.generation import HOST_PTH

    return ProcessPlugin(
        bus,
        binary_id=binary_id,
        python=generation.python,
        entry_point=entry_point,
        warm_site=WarmSite(str(generation.site_packages), (HOST_PTH,)),
        spares=spares,
        **options,
    )


@dataclass(eq=False, slots=True)
class ProcessActive:
    """A generation serving from a child process."""

    binary_id: str
    generation: Generation
    plugin: ProcessPlugin
    isolation: Isolation = "process"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def binary_version(self) -> str:
        return self.plugin.binary_version

    def config_ids(self) -> list[str]:
        return sorted(f.config_id for f in self.plugin.factories)
