"""Crash-loop protection: a generation that killed the daemon is not activated blindly again.

Before a generation is imported into the daemon, :meth:`ActivationGuard.begin` writes
``<state-dir>/activating.json`` (atomically, fsynced) naming it; :meth:`end` removes
the file once the import and ``factories(bus)`` returned or raised. A marker found
when the state directory is opened means the previous daemon died in the middle of
an activation: :meth:`recover` counts one crash for that generation in
``<state-dir>/crashes.json``.

A generation with one crash is **suspect**: it is loaded again only after a trial
import in a separate process passed (even with ``prepare="inprocess"``). A
generation with :data:`QUARANTINE_AFTER` crashes is **quarantined**: it is refused
until ``cbus plugins retry BINARY_ID`` (or deleting ``crashes.json``) clears it.
A successful activation clears the generation's count (Erlang/OTP's restart
intensity, with the intensity window being "until it works once").
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from controllerbus import _fs
from controllerbus.loader.manifest import utc_now

__all__ = ["QUARANTINE_AFTER", "ActivationGuard", "Crash", "GuardStatus"]

logger = logging.getLogger(__name__)

MARKER_NAME = "activating.json"
CRASHES_NAME = "crashes.json"
QUARANTINE_AFTER = 2
"""Crashes during activation after which a generation is quarantined."""

GuardStatus = Literal["suspect", "quarantined"]


@dataclass(frozen=True, slots=True)
class Crash:
    """A generation the daemon died activating, and how often."""

    binary_id: str
    generation: str
    wheel: str
    count: int
    last: str

    @property
    def status(self) -> GuardStatus:
        """``suspect`` or ``quarantined``."""
        return "quarantined" if self.count >= QUARANTINE_AFTER else "suspect"


class ActivationGuard:
    """The activation marker and crash counts of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir
        self._marker = state_dir / MARKER_NAME
        self._crashes = state_dir / CRASHES_NAME

    def begin(self, binary_id: str, generation: str, wheel: Path) -> None:
        """Record that ``generation`` is about to be imported in-process (durably)."""
        data = {
            "binary_id": binary_id,
            "generation": generation,
            "wheel": str(wheel),
            "pid": os.getpid(),
            "started_at": utc_now().isoformat(),
        }
        _fs.write_atomic(self._marker, (json.dumps(data) + "\n").encode())

    def end(self, generation: str, *, ok: bool) -> None:
        """The activation returned (``ok``: and the plugin serves); remove the marker."""
        try:
            self._marker.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("cannot remove the activation marker %s: %s", self._marker, exc)
        if ok:
            crashes = self._read()
            if crashes.pop(generation, None) is not None:
                self._write(crashes)

    def recover(self) -> Crash | None:
        """Count a crash for an activation the previous process did not finish."""
        try:
            marker = json.loads(self._marker.read_text())
            binary_id, generation = str(marker["binary_id"]), str(marker["generation"])
            wheel = str(marker.get("wheel", ""))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring an unreadable activation marker %s: %s", self._marker, exc)
            self._marker.unlink(missing_ok=True)
            return None
        crashes = self._read()
        entry = crashes.get(generation, {})
        count = int(entry.get("count", 0)) + 1
        crash = Crash(binary_id, generation, wheel, count, utc_now().isoformat())
        crashes[generation] = {
            "binary_id": binary_id,
            "wheel": wheel,
            "count": count,
            "last": crash.last,
        }
        self._write(crashes)
        self._marker.unlink(missing_ok=True)
        return crash

    def crash(self, generation: str) -> Crash | None:
        """The crash record of ``generation`` (read from disk: a retry applies at once)."""
        entry = self._read().get(generation)
        if entry is None:
            return None
        return Crash(
            str(entry.get("binary_id", "")),
            generation,
            str(entry.get("wheel", "")),
            int(entry.get("count", 1)),
            str(entry.get("last", "")),
        )

    def retry(self, binary_id: str) -> list[str]:
        """Forget the crashes of every generation of ``binary_id``; the generations cleared."""
        crashes = self._read()
        cleared = [g for g, e in crashes.items() if e.get("binary_id") == binary_id]
        for generation in cleared:
            del crashes[generation]
        if cleared:
            self._write(crashes)
        return sorted(cleared)

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            raw = json.loads(self._crashes.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("ignoring an unreadable %s: %s", self._crashes, exc)
            return {}
        if not isinstance(raw, dict):
            return {}
        return {str(k): v for k, v in raw.items() if isinstance(v, dict)}

    def _write(self, crashes: dict[str, dict[str, Any]]) -> None:
        if not crashes:
            self._crashes.unlink(missing_ok=True)
            return
        payload = json.dumps(crashes, indent=2, sort_keys=True) + "\n"
        _fs.write_atomic(self._crashes, payload.encode())
