"""File trust like OpenSSH's StrictModes: refuse code that someone else could have written.

The daemon imports code from the plugins directory (wheels) and the state directory
(generations). Whoever can write either, or rename entries in one of their parent
directories, can make the daemon run their code. So, unless trust is switched off
(``cbus daemon --insecure-permissions``, ``PluginHost(insecure_permissions=True)``):

* the plugins directory, the state directory and every wheel must be owned by the
  daemon's user or by root, and not be writable by group or others;
* so must every parent directory up to ``/``, with one exception: a parent directory
  with the sticky bit set (``/tmp``, mode ``1777``) that is owned by root or the
  daemon's user, because there others may add entries but cannot rename or remove
  ours. OpenSSH does not make that exception; it stops at the home directory instead.

Symbolic links are resolved first (``realpath``) and the real path is checked, as
ssh does. The walk opens each directory with ``O_NOFOLLOW`` relative to its parent's
descriptor and checks the open descriptor (``fstat``), and a wheel is checked on the
descriptor it is then read from (:func:`open_checked`): a path swapped between the
check and the use is either caught by ``O_NOFOLLOW`` or is what was checked.

Every refusal is an :class:`~controllerbus.loader.errors.InsecurePath` naming the
path and the command that fixes it (``chmod go-w PATH`` or ``chown USER PATH``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import shlex
import stat
from pathlib import Path

from controllerbus.loader.errors import InsecurePath

__all__ = ["check_directory", "check_stat", "open_checked"]

_DIR_FLAGS = os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_PATH", os.O_RDONLY)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def check_stat(st: os.stat_result, path: Path, what: str, *, parent: bool = False) -> None:
    """Refuse ``path`` (already opened, ``st`` from ``fstat``) if others could write it.

    Args:
        st: the path's stat, taken on an open descriptor.
        path: the path, for the message.
        what: what is being checked, e.g. ``"plugins directory /srv/plugins"``.
        parent: ``path`` is a parent of the checked path (sticky directories pass).

    Raises:
        InsecurePath: owned by another non-root user, or writable by group/others.
    """
    me = os.geteuid()
    quoted = shlex.quote(str(path))
    label = f"its parent directory {path}" if parent else "it"
    if st.st_uid not in (0, me):
        raise InsecurePath(
            path,
            what,
            f"{label} is owned by {_user_name(st.st_uid)} (uid {st.st_uid}), neither by "
            f"the daemon's user {_user_name(me)} nor by root",
            f"chown {shlex.quote(_user_name(me))} {quoted}",
        )
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if not writable:
        return
    if parent and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
        return
    by = {
        stat.S_IWGRP: "group",
        stat.S_IWOTH: "others",
        stat.S_IWGRP | stat.S_IWOTH: "group and others",
    }[writable]
    raise InsecurePath(
        path,
        what,
        f"{label} is writable by {by} (mode {stat.S_IMODE(st.st_mode):04o})",
        f"chmod go-w {quoted}",
    )


def _walk(real: Path, what: str, *, parents_only: bool = False) -> int:
    """Open ``real`` (a resolved absolute path) component by component; return its fd.

    Checks each component's descriptor on the way (``real`` itself as a parent too
    with ``parents_only``: the directory of a checked file); the caller closes it.
    """
    fd = os.open("/", _DIR_FLAGS)
    stats: list[tuple[Path, os.stat_result]] = [(Path("/"), os.fstat(fd))]
    current = Path("/")
    try:
        for part in real.parts[1:]:
            current = current / part
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise InsecurePath(
                        current,
                        what,
                        f"{current} changed into a symbolic link or file while it was checked",
                        "check who else writes there, then start again",
                    ) from exc
                raise
            os.close(fd)
            fd = child
            stats.append((current, os.fstat(fd)))
        # The nearest problem first: the checked path, then its parents upwards.
        for index, (path, st) in enumerate(reversed(stats)):
            check_stat(st, path, what, parent=parents_only or index > 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_directory(path: Path, what: str) -> None:
    """Refuse directory ``path`` if it or a parent could be written by someone else.

    Args:
        path: the directory (plugins or state directory); symlinks are resolved.
        what: how the message names it, e.g. ``"plugins directory"``.

    Raises:
        InsecurePath: see :func:`check_stat`.
        OSError: the directory does not exist or cannot be opened.
    """
    real = Path(os.path.realpath(path))
    label = f"{what} {path}" if real == Path(path).absolute() else f"{what} {path} (-> {real})"
    os.close(_walk(real, label))


def open_checked(path: Path, *, strict: bool, what: str = "wheel") -> tuple[int, os.stat_result]:
    """Open file ``path`` for reading and ``fstat`` it; with ``strict``, check its trust.

    The file is opened without blocking (a FIFO does not hang the caller) and, with
    ``strict``, its resolved directory chain and the open descriptor are checked.
    The caller reads from the returned descriptor and closes it.

    Raises:
        InsecurePath: ``strict`` and the file or a directory above it is not trusted.
        OSError: the file cannot be opened.
    """
    real = Path(os.path.realpath(path))
    label = f"{what} {path}" if real == Path(path).absolute() else f"{what} {path} (-> {real})"
    if strict:
        dir_fd = _walk(real.parent, label, parents_only=True)
        try:
            fd = os.open(real.name, _FILE_FLAGS, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    else:
        fd = os.open(real, _FILE_FLAGS)
    try:
        st = os.fstat(fd)
        if strict and stat.S_ISREG(st.st_mode):
            check_stat(st, real, label)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return fd, st
