"""Manifest hygiene: one current record per plugin, a bounded failure history, pruning.

Pure functions from a manifest (and facts) to a manifest; the host writes the result.

* :func:`with_failure` records a failed load: the current ``error`` with its
  ``file:line`` and time, appended to the record's bounded ``failures``; a record
  of a generation that keeps serving stays ``active``.
* :func:`with_success` is a successful load: ``error`` cleared, status ``active``;
  a ``wheel:<name>`` failure record of the same wheel file is dropped.
* :func:`pruned` drops records of plugins that are not active and whose wheel file
  is gone (nothing on disk to retry or to explain any more).
"""

from __future__ import annotations

import os
import re
from datetime import datetime

from controllerbus.loader.manifest import (
    MAX_FAILURES,
    Failure,
    Manifest,
    ManifestRecord,
    PluginStatus,
    utc_now,
    wheel_key,
)

__all__ = ["error_location", "pruned", "with_failure", "with_status", "with_success"]

_AT = re.compile(r"\(at (?P<at>[^()]+:\d+)\)")


def error_location(message: str) -> str | None:
    """The last ``(at file:line)`` in an error message, as ``file:line``."""
    found = _AT.findall(message)
    return found[-1] if found else None


def with_failure(
    manifest: Manifest,
    record: ManifestRecord,
    message: str,
    *,
    serving: bool,
    now: datetime | None = None,
) -> Manifest:
    """``record`` (the new failed one, or the serving one) with the failure applied."""
    now = now or utc_now()
    existing = manifest.get(record.binary_id)
    base = existing if serving and existing is not None else record
    history = list(existing.failures) if existing is not None else []
    history.append(Failure(time=now, error=message, at=error_location(message), wheel=record.wheel))
    status: PluginStatus = base.status if serving else record.status
    changed = existing is None or existing.status != status
    update: dict[str, object] = {
        "error": message,
        "error_at": error_location(message),
        "error_time": now,
        "failures": history[-MAX_FAILURES:],
        "since": now if changed or base.since is None else base.since,
        "status": status,
    }
    return manifest.upsert(base.model_copy(update=update))


def with_success(
    manifest: Manifest, record: ManifestRecord, *, now: datetime | None = None
) -> Manifest:
    """``record`` (active) replacing the plugin's record; failure status cleared."""
    now = now or utc_now()
    existing = manifest.get(record.binary_id)
    update: dict[str, object] = {
        "error": None,
        "error_at": None,
        "error_time": None,
        "failures": list(existing.failures) if existing is not None else [],
        "since": now,
    }
    return manifest.upsert(record.model_copy(update=update)).remove(wheel_key(record.wheel))


def with_status(
    manifest: Manifest, record: ManifestRecord, status: PluginStatus, *, now: datetime | None = None
) -> Manifest:
    """``record`` with a new status (and ``since`` if it changed)."""
    now = now or utc_now()
    since = record.since if record.status == status and record.since is not None else now
    return manifest.upsert(record.model_copy(update={"status": status, "since": since}))


def pruned(manifest: Manifest, active: set[str]) -> Manifest:
    """Without records that are not ``active`` and whose wheel file no longer exists."""
    keep = [
        r
        for r in manifest.plugins
        if r.binary_id in active or r.status == "active" or _exists(r.wheel)
    ]
    if len(keep) == len(manifest.plugins):
        return manifest
    return Manifest(plugins=keep)


def _exists(wheel: str) -> bool:
    # Any entry counts, not only a regular file: a directory, FIFO or dangling link
    # in the plugins directory keeps its "rejected" record while it is there.
    try:
        return os.path.lexists(wheel)
    except (OSError, ValueError):
        return True  # cannot tell: keep it
