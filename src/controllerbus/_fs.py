"""Durable filesystem helpers shared by the packages (docs/loader.md#durable-writes): atomic writes,
directory and tree fsync, quiet removal."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["fsync_dir", "fsync_tree", "is_within", "remove_tree", "write_atomic"]


def is_within(path: str, root: str) -> bool:
    """Whether absolute, normalised ``path`` is ``root`` or lies below it.

    A plain prefix test is wrong: ``/state/generations2`` is not inside
    ``/state/generations``.
    """
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename or a new file in it) to disk."""
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new bytes, never a mix.

    Writes a temp file in the same directory, fsyncs it, ``os.replace``-s it over
    ``path`` and fsyncs the directory (docs/loader.md#durable-writes). On any failure the temp
    file is removed and ``path`` is untouched.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            # mkstemp creates 0600; the files we publish are meant to be readable.
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_tree(root: Path) -> None:
    """Flush every regular file and directory under ``root`` (symlinks are not followed).

    Called before a generation is renamed into place, so a crash right after the
    rename cannot publish a directory whose files are still only in the page cache.
    """
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            file_path = os.path.join(dirpath, name)
            if os.path.islink(file_path):
                continue
            fd = os.open(file_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def remove_tree(path: Path) -> None:
    """Remove a file or directory tree if it exists; a missing path is not an error."""
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
