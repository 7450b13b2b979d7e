"""The state directory: generations, temp space and manifest, owned by one process.

Layout::

    <state-dir>/
      .lock            filelock; held while a StateDir is entered
      .lock.pid        the holder's pid, to name it when another process is refused
      manifest.json    see controllerbus.loader.manifest
      generations/<sha256>/   published generations (immutable)
      tmp/             work directories of installs and removals; emptied on entry
      cache/           a skeleton venv per interpreter, copied by fast installs

Only one process at a time may use a state directory: the lock is taken with a
short timeout and a second process gets :class:`StateDirLocked` naming the holder's
pid. Because the lock is exclusive, anything left in ``tmp/`` on entry belongs to a
process that died mid-install and is removed.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Collection
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from controllerbus import _fs
from controllerbus.loader.errors import StateDirError, StateDirLocked

if TYPE_CHECKING:
    from filelock import BaseFileLock

__all__ = ["DEFAULT_LOCK_TIMEOUT", "StateDir"]

logger = logging.getLogger(__name__)

DEFAULT_LOCK_TIMEOUT = 0.5
"""Seconds to wait for the state directory's lock before giving up."""

_GENERATION_NAME = re.compile(r"^[0-9a-f]{64}$")


class StateDir:
    """Exclusive use of a state directory, as a context manager.

    Args:
        path: the state directory; created if missing.
        lock_timeout: seconds to wait for another holder to let go.

    Raises (on ``__enter__``):
        StateDirLocked: another process holds the lock.
        StateDirError: the directory cannot be created or written.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    ) -> None:
        self.path = Path(os.path.abspath(path))
        self.lock_timeout = lock_timeout
        self._lock: BaseFileLock | None = None

    @property
    def generations_dir(self) -> Path:
        """``<state-dir>/generations``: published generations."""
        return self.path / "generations"

    @property
    def tmp_dir(self) -> Path:
        """``<state-dir>/tmp``: work directories; emptied on entry."""
        return self.path / "tmp"

    @property
    def lock_path(self) -> Path:
        """``<state-dir>/.lock``."""
        return self.path / ".lock"

    @property
    def pid_path(self) -> Path:
        """``<state-dir>/.lock.pid``: the holder's pid."""
        return self.path / ".lock.pid"

    @property
    def locked(self) -> bool:
        """Whether this object currently holds the lock."""
        return self._lock is not None

    def __enter__(self) -> Self:
        from filelock import FileLock, Timeout

        try:
            # 0o755, not the umask's default: with a umask of 002 the new directory
            # would be group-writable, which the loader's trust check refuses.
            self.path.mkdir(mode=0o755, parents=True, exist_ok=True)
            self.generations_dir.mkdir(mode=0o755, exist_ok=True)
            self.tmp_dir.mkdir(mode=0o755, exist_ok=True)
        except OSError as exc:
            raise StateDirError(self.path, f"cannot create it: {exc}") from exc
        # fallback_to_soft=False: a lock that silently degrades to a marker file on
        # filesystems without flock would let two daemons share the directory.
        lock = FileLock(
            self.lock_path,
            timeout=self.lock_timeout,
            fallback_to_soft=False,
            preserve_lock_file=True,
        )
        try:
            lock.acquire()
        except Timeout as exc:
            raise StateDirLocked(self.path, self._holder_pid()) from exc
        except OSError as exc:
            raise StateDirError(self.path, f"cannot lock {self.lock_path}: {exc}") from exc
        try:
            _fs.write_atomic(self.pid_path, f"{os.getpid()}\n".encode())
            self._clean_tmp()
        except OSError as exc:
            lock.release()
            raise StateDirError(self.path, f"cannot write to it: {exc}") from exc
        except BaseException:
            lock.release()
            raise
        self._lock = lock
        logger.debug("locked state directory %s", self.path)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock (idempotent)."""
        lock, self._lock = self._lock, None
        if lock is None:
            return
        try:
            if self._holder_pid() == os.getpid():
                self.pid_path.unlink(missing_ok=True)
        finally:
            lock.release()

    def _holder_pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text("ascii").strip())
        except (OSError, ValueError):
            return None

    def _clean_tmp(self) -> None:
        for entry in sorted(self.tmp_dir.iterdir()):
            logger.info("removing leftover %s from an interrupted run", entry)
            _fs.remove_tree(entry)

    def _require_lock(self) -> None:
        if self._lock is None:
            raise StateDirError(self.path, "not locked; use it as 'with StateDir(path) as state:'")

    def generation_ids(self) -> list[str]:
        """Ids of the published generations, sorted.

        Raises:
            StateDirError: the state directory is not entered.
        """
        self._require_lock()
        return sorted(
            entry.name
            for entry in self.generations_dir.iterdir()
            if entry.is_dir() and _GENERATION_NAME.match(entry.name)
        )

    def gc_generations(self, keep: Collection[str]) -> list[str]:
        """Delete every generation not in ``keep``; return the removed ids.

        Each one is first renamed into ``tmp/`` (atomic: it is either published or
        gone) and then deleted. A generation whose directory is on ``sys.path`` in
        this process is never removed, whatever ``keep`` says: its code is live.
        Entries that are not generation directories are left alone; a generation
        that cannot be removed (permissions) is logged and skipped.

        Args:
            keep: generation ids to keep (e.g. ``manifest.generations()``).

        Raises:
            StateDirError: the state directory is not entered.
        """
        self._require_lock()
        live = {os.path.abspath(p) for p in sys.path if isinstance(p, str) and p}
        removed: list[str] = []
        for gen_id in self.generation_ids():
            if gen_id in keep:
                continue
            root = self.generations_dir / gen_id
            if any(p == str(root) or p.startswith(f"{root}{os.sep}") for p in live):
                logger.warning("not removing generation %s: it is on sys.path", gen_id)
                continue
            try:
                graveyard = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix=f"{gen_id[:16]}.gc."))
                os.replace(root, graveyard / gen_id)
                _fs.remove_tree(graveyard)
            except OSError as exc:
                # Best effort: the generation stays (published or in tmp/, which the
                # next start empties); the others are still collected.
                logger.warning("cannot remove generation %s: %s", gen_id, exc)
                continue
            removed.append(gen_id)
            logger.info("removed generation %s", gen_id, extra={"generation": gen_id})
        if removed:
            _fs.fsync_dir(self.generations_dir)
        return removed
