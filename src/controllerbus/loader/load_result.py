"""What a load returns (:class:`LoadResult`) and the wall time of its phases."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from controllerbus.loader.activation import UnloadReport

if TYPE_CHECKING:
    from controllerbus.loader.activation import ActivePlugin
    from controllerbus.loader.generation import Generation

__all__ = ["LoadResult", "Phases", "in_process_loaded"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """A plugin now active on the bus.

    Attributes:
        binary_id / binary_version: the plugin's identity.
        generation: the generation id (the wheel's sha256).
        factories: config ids the plugin serves.
        load_ms: verify + install + (trial import) + activate, in milliseconds.
        reused: the generation directory already existed.
        unchanged: this exact wheel was already active; nothing was done.
        replaced: the unload report of the generation this one replaced.
        phases: milliseconds per phase (verify, install, trial, stop old, activate, ...).
    """

    binary_id: str
    binary_version: str
    generation: str
    factories: tuple[str, ...]
    load_ms: float
    reused: bool = False
    unchanged: bool = False
    replaced: UnloadReport | None = None
    phases: dict[str, float] = field(default_factory=dict)


class Phases:
    """Wall time of each phase of a load, for the debug log."""

    def __init__(self, started: float) -> None:
        self._last = started
        self._marks: list[tuple[str, float]] = []

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self._marks.append((name, (now - self._last) * 1000))
        self._last = now

    def __str__(self) -> str:
        return ", ".join(f"{name} {ms:.1f} ms" for name, ms in self._marks)

    def as_dict(self) -> dict[str, float]:
        return dict(self._marks)


def in_process_loaded(
    key: str,
    active: ActivePlugin,
    generation: Generation,
    load_ms: float,
    replaced: UnloadReport | None,
    phases: Phases,
) -> LoadResult:
    """Log an in-process plugin now serving; its :class:`LoadResult`."""
    logger.info(
        "plugin %s %s active (generation %s, %.1f ms%s)",
        key,
        active.binary_version,
        generation.id[:12],
        load_ms,
        ", replaced " + replaced.generation[:12] if replaced is not None else "",
        extra={"plugin": key, "generation": generation.id},
    )
    return LoadResult(
        key,
        active.binary_version,
        generation.id,
        tuple(active.resolver.config_ids()),
        load_ms,
        reused=generation.reused,
        replaced=replaced,
        phases=phases.as_dict(),
    )
