"""The loader manifest: ``<state-dir>/manifest.json``, one record per plugin.

Records are keyed by **plugin binary id**: a binary id names a plugin across its
versions, so a reload replaces the plugin's record instead of piling up one per
wheel, and ``cbus plugins list`` shows one line per plugin. When a wheel fails
before its plugin object could be read (it does not verify, its host dependencies
are missing), the loader has no binary id yet and records it under
:func:`wheel_key` (``wheel:<file name>``) instead.

A record's ``status`` describes the generation it names: ``active`` (serving),
``failed`` (could not be loaded; ``error`` says why), ``rejected`` (the file was
refused before anything was installed: not a loadable wheel, or not trusted) or
``unloaded`` (removed; ``leaks`` lists what survived the unload). After a
rolled-back reload the record stays ``active`` on the old generation and ``error``
carries the failed reload's message.

The file is written atomically (temp file, fsync, ``os.replace``, directory fsync),
with records sorted by key so that diffs stay readable.

:class:`ManifestBook` is the loader's one writer: its :meth:`~ManifestBook.loaded`,
:meth:`~ManifestBook.failed`, :meth:`~ManifestBook.unloaded` and
:meth:`~ManifestBook.interrupted` build a record for an outcome and write the whole
manifest atomically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from controllerbus import _fs
from controllerbus.loader.errors import CorruptManifest

if TYPE_CHECKING:
    from controllerbus.loader.verify import VerifiedWheel

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "Failure",
    "Manifest",
    "ManifestBook",
    "ManifestRecord",
    "PluginStatus",
    "read_manifest",
    "utc_now",
    "wheel_key",
    "write_manifest",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION: Final = 1

PluginStatus = Literal["active", "failed", "rejected", "unloaded", "suspect", "quarantined"]

MAX_FAILURES = 5
"""How many recent failures a record keeps in ``failures``."""


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC (what ``loaded_at`` expects)."""
    return datetime.now(UTC)


def wheel_key(wheel: str | Path) -> str:
    """The record key of a wheel whose plugin binary id is unknown: ``wheel:<name>``."""
    return f"wheel:{Path(wheel).name}"


class Failure(BaseModel):
    """One failed load: when, why, where in the plugin's code, which wheel."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    time: AwareDatetime
    error: str
    at: str | None = None
    wheel: str = ""


class ManifestRecord(BaseModel):
    """One plugin's state.

    Attributes:
        binary_id: the plugin's binary id (or :func:`wheel_key` if unknown); the key.
        binary_version: the plugin's binary version ("" if unknown).
        build_hash: the ``+cbus.<hash>`` label of the wheel's version, else "".
        wheel: path of the wheel file.
        wheel_sha256: hex sha256 of the wheel file ("" if unreadable).
        generation: the generation id (its directory under ``generations/``), or "".
        status: ``active``, ``failed``, ``rejected`` (the file was refused before
            anything was installed), ``unloaded``, ``suspect`` (the daemon died
            activating it; loaded again only after a trial) or ``quarantined``
            (it did so repeatedly; refused until ``cbus plugins retry``).
        since: when ``status`` last changed, UTC.
        error: why the last load or reload failed, else ``None`` (a successful load
            clears it).
        error_at: ``file:line`` in the plugin's code the error points at, if known.
        error_time: when the last error happened, UTC.
        failures: the most recent failures, oldest first (at most ``MAX_FAILURES``).
        factories: factory ids the plugin registered.
        loaded_at: when the record's generation was (last) loaded, UTC.
        load_ms: how long verify + install + activate took.
        unloaded_at: when it was unloaded, UTC.
        leaks: descriptions of objects that survived the unload.
        isolation: ``inprocess`` or ``process`` (a child process, see docs/ipc.md).
        pid: the child's process id while a process plugin serves, else ``None``.
        restarts: how often the child was restarted after a crash or hang.
        last_exit: why the child last ended (exit status, missed heartbeats, ...).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    binary_id: str = Field(min_length=1)
    binary_version: str = ""
    build_hash: str = ""
    wheel: str
    wheel_sha256: str = ""
    generation: str = ""
    status: PluginStatus
    since: AwareDatetime | None = None
    error: str | None = None
    error_at: str | None = None
    error_time: AwareDatetime | None = None
    failures: list[Failure] = Field(default_factory=list)
    factories: list[str] = Field(default_factory=list)
    loaded_at: AwareDatetime | None = None
    load_ms: float = 0.0
    unloaded_at: AwareDatetime | None = None
    leaks: list[str] = Field(default_factory=list)
    isolation: Literal["inprocess", "process"] = "inprocess"
    pid: int | None = None
    restarts: int = 0
    last_exit: str | None = None


class Manifest(BaseModel):
    """All plugin records, keyed by ``binary_id``; immutable (methods return copies)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = MANIFEST_VERSION
    plugins: list[ManifestRecord] = Field(default_factory=list)

    def get(self, binary_id: str) -> ManifestRecord | None:
        """The record with ``binary_id``, or ``None``."""
        return next((r for r in self.plugins if r.binary_id == binary_id), None)

    def upsert(self, record: ManifestRecord) -> Manifest:
        """Return a manifest with ``record`` replacing any record with the same key."""
        others = [r for r in self.plugins if r.binary_id != record.binary_id]
        return Manifest(plugins=sorted([*others, record], key=lambda r: r.binary_id))

    def remove(self, binary_id: str) -> Manifest:
        """Return a manifest without the record ``binary_id`` (no error if absent)."""
        return Manifest(plugins=[r for r in self.plugins if r.binary_id != binary_id])

    def generations(self, statuses: Iterable[PluginStatus] = ("active",)) -> set[str]:
        """Generation ids referenced by records with one of ``statuses``.

        Pass the result as ``keep`` to :meth:`StateDir.gc_generations
        <controllerbus.loader.state.StateDir.gc_generations>`.
        """
        wanted = set(statuses)
        return {r.generation for r in self.plugins if r.status in wanted and r.generation}


def read_manifest(state_dir: Path) -> Manifest:
    """Read ``<state_dir>/manifest.json``; a missing file is an empty manifest.

    Raises:
        CorruptManifest: the file exists but is unreadable, not JSON, or not a
            manifest of a version this controllerbus understands.
    """
    path = state_dir / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Manifest()
    except OSError as exc:
        raise CorruptManifest(path, [f"cannot read it: {exc}"]) from exc
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptManifest(path, [f"not valid JSON: {exc}"]) from exc
    if isinstance(raw, dict) and raw.get("version", MANIFEST_VERSION) != MANIFEST_VERSION:
        raise CorruptManifest(
            path,
            [
                f"manifest version {raw.get('version')!r} is not supported (this "
                f"controllerbus reads version {MANIFEST_VERSION}); was it written by a "
                "newer release?"
            ],
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        issues = [
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise CorruptManifest(path, issues) from exc
    keys = [r.binary_id for r in manifest.plugins]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise CorruptManifest(path, [f"duplicate records for {', '.join(duplicates)}"])
    return manifest


def write_manifest(state_dir: Path, manifest: Manifest) -> Path:
    """Write ``manifest`` to ``<state_dir>/manifest.json`` atomically; return the path.

    Readers see the old or the new manifest, never a mix; a crash leaves no
    partial file (at worst a ``.manifest.json.*.tmp`` that the state directory
    does not read).

    Raises:
        OSError: the state directory is not writable (the old manifest is intact).
    """
    path = state_dir / MANIFEST_NAME
    ordered = Manifest(plugins=sorted(manifest.plugins, key=lambda r: r.binary_id))
    payload = ordered.model_dump_json(indent=2) + "\n"
    _fs.write_atomic(path, payload.encode("utf-8"))
    logger.debug("wrote manifest %s (%d records)", path, len(ordered.plugins))
    return path


class ManifestBook:
    """The manifest of one state directory, kept by recording outcomes.

    Each outcome method builds the record, replaces the plugin's record in memory
    and writes the whole manifest atomically (:func:`write_manifest`).

    Records saying ``active`` are from a previous process (nothing is loaded when a
    book opens): the book reads them as ``unloaded``. Records that are not active
    and whose wheel file is gone are pruned when the book opens and on every load
    outcome (an unload's record stays until then, with its leaks). A manifest that
    cannot be read is moved aside (``manifest.json.corrupt-<time>``, logged) and the
    book starts empty: the manifest reports, the wheels are the truth. A write that
    fails (disk full, read-only) is logged; the file keeps its last good content.

    Args:
        state_dir: the state directory holding ``manifest.json``.
        on_write: called with each record after it was written.

    """

    def __init__(
        self, state_dir: Path, *, on_write: Callable[[ManifestRecord], None] | None = None
    ) -> None:
        self._state_dir = state_dir
        self._on_write = on_write
        from controllerbus.loader.records import pruned

        read = _read_or_move_aside(state_dir)
        self._manifest = pruned(
            Manifest(
                plugins=[
                    r.model_copy(update={"status": "unloaded"}) if r.status == "active" else r
                    for r in read.plugins
                ]
            ),
            set(),
        )

    @property
    def manifest(self) -> Manifest:
        """The manifest as last written (or read)."""
        return self._manifest

    def get(self, key: str) -> ManifestRecord | None:
        """The record under ``key`` (a binary id or a :func:`wheel_key`), or ``None``."""
        return self._manifest.get(key)

    def loaded(
        self,
        verified: VerifiedWheel,
        *,
        binary_id: str,
        binary_version: str,
        wheel: Path,
        generation: str,
        factories: Sequence[str],
        load_ms: float,
        leaks: Sequence[str] = (),
        process: Mapping[str, Any] | None = None,
    ) -> ManifestRecord:
        """Record generation ``generation`` of ``binary_id`` as ``active`` (error cleared)."""
        from controllerbus.loader.records import with_success

        record = ManifestRecord(
            binary_id=binary_id,
            binary_version=binary_version,
            build_hash=verified.build_hash,
            wheel=str(wheel),
            wheel_sha256=verified.sha256,
            generation=generation,
            status="active",
            factories=list(factories),
            loaded_at=utc_now(),
            load_ms=round(load_ms, 3),
            leaks=list(leaks),
            **_process_fields(process),
        )
        return self._commit(with_success(self._manifest, record), binary_id)

    def process_changed(self, binary_id: str, process: Mapping[str, Any]) -> None:
        """Record a process plugin's new pid, restart count and last exit."""
        record = self._manifest.get(binary_id)
        if record is not None and record.status == "active":
            self._write(record.model_copy(update=_process_fields(process)))

    def failed(
        self,
        key: str,
        wheel: Path,
        verified: VerifiedWheel | None,
        error: str,
        *,
        serving: bool,
        status: PluginStatus = "failed",
    ) -> ManifestRecord:
        """Record that loading ``wheel`` under ``key`` failed with ``error``.

        With ``serving`` (the previous generation keeps serving) the plugin's record
        stays ``active`` and carries the error; otherwise the record is ``status``
        (``rejected`` when the file itself was refused: not a loadable wheel, or not
        trusted).
        Either way the failure goes into the record's bounded ``failures``.
        """
        from controllerbus.loader.records import with_failure

        record = ManifestRecord(
            binary_id=key,
            binary_version="",
            build_hash=verified.build_hash if verified is not None else "",
            wheel=str(wheel),
            wheel_sha256=verified.sha256 if verified is not None else "",
            generation="",
            status=status,
            loaded_at=utc_now(),
        )
        serving = serving and self._manifest.get(key) is not None
        return self._commit(with_failure(self._manifest, record, error, serving=serving), key)

    def crashed(
        self, binary_id: str, wheel: Path, generation: str, error: str, status: PluginStatus
    ) -> ManifestRecord:
        """Record that the previous process died activating ``generation`` (suspect)."""
        from controllerbus.loader.records import with_failure, with_status

        record = self._manifest.get(binary_id) or ManifestRecord(
            binary_id=binary_id, wheel=str(wheel), status=status
        )
        record = record.model_copy(update={"generation": generation, "wheel": str(wheel)})
        manifest = with_failure(self._manifest, record, error, serving=False)
        updated = manifest.get(binary_id)
        assert updated is not None
        return self._commit(with_status(manifest, updated, status), binary_id, prune=False)

    def unloaded(self, binary_id: str, leaks: Sequence[str]) -> ManifestRecord | None:
        """Record ``binary_id`` as ``unloaded`` with what survived; ``None`` if unknown."""
        return self._update(binary_id, status="unloaded", unloaded_at=utc_now(), leaks=list(leaks))

    def interrupted(self, binary_id: str) -> ManifestRecord | None:
        """Record that the unload of ``binary_id`` was cancelled after its purge."""
        return self._update(
            binary_id,
            status="unloaded",
            unloaded_at=utc_now(),
            error="unload interrupted (cancelled); the generation was purged",
        )

    def _update(self, key: str, **update: object) -> ManifestRecord | None:
        record = self._manifest.get(key)
        if record is None:
            return None
        return self._write(record.model_copy(update=update))

    def _write(self, record: ManifestRecord) -> ManifestRecord:
        return self._commit(self._manifest.upsert(record), record.binary_id, prune=False)

    def _commit(self, manifest: Manifest, key: str, *, prune: bool = True) -> ManifestRecord:
        from controllerbus.loader.records import pruned

        if prune:
            manifest = pruned(manifest, {key})
        self._manifest = manifest
        try:
            write_manifest(self._state_dir, manifest)
        except OSError as exc:
            # Disk full or read-only: keep serving; the file keeps its last good content.
            logger.error("cannot write the manifest in %s: %s", self._state_dir, exc)
        record = manifest.get(key)
        assert record is not None
        if self._on_write is not None:
            self._on_write(record)
        return record


def _read_or_move_aside(state_dir: Path) -> Manifest:
    try:
        return read_manifest(state_dir)
    except CorruptManifest as exc:
        path = state_dir / MANIFEST_NAME
        aside = path.with_name(f"{MANIFEST_NAME}.corrupt-{utc_now().strftime('%Y%m%dT%H%M%S')}")
        try:
            path.replace(aside)
        except OSError as move_error:
            logger.error("%s; cannot move it aside either: %s", exc, move_error)
        else:
            logger.error("%s; moved it to %s and started with an empty manifest", exc, aside)
        return Manifest()


def _process_fields(process: Mapping[str, Any] | None) -> dict[str, Any]:
    if process is None:
        return {}
    return {
        "isolation": "process",
        "pid": process.get("pid"),
        "restarts": int(process.get("restarts", 0)),
        "last_exit": process.get("last_exit"),
    }
