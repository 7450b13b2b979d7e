"""Classify every file in a plugins directory: a loadable wheel, rejected (why), or ignored.

Nothing a user drops into the plugins directory is skipped without a word. Each
entry is one :class:`Candidate`:

* ``ignored``: hidden and temporary names (``.name``, ``*.tmp``, ``*.part``,
  ``*.partial``, ``*~``). Copiers and the compiler write through such names and
  rename into place, so they are never half-read; they are logged at debug level.
* ``rejected``: anything else that is not a loadable wheel, with the reason:
  not a regular file (directory, FIFO, device, dangling link), a name that does not
  end in ``.whl`` or is not a valid wheel filename
  (``packaging.utils.parse_wheel_filename``), tags the interpreter does not support,
  a file over the wheel size limit, or content that does not start like a zip.
* ``wheel``: worth verifying (:func:`~controllerbus.loader.verify.verify_wheel`
  checks the rest).

The checks only use the name, ``stat`` and the first four bytes, so a scan stays
cheap; :func:`verify_wheel <controllerbus.loader.verify.verify_wheel>` applies the
same name and tag rules (:func:`wheel_name_issue`), so a file rejected here is also
refused, with the same reason, when the loader offers it to the host (which records
it in the manifest as ``rejected``).
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from packaging.tags import Tag, sys_tags
from packaging.utils import (
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_wheel_filename,
)

from controllerbus.loader.members import DEFAULT_LIMITS, WheelLimits

__all__ = [
    "Candidate",
    "CandidateKind",
    "classify",
    "is_temporary",
    "scan_candidates",
    "wheel_name_issue",
]

CandidateKind = Literal["wheel", "rejected", "ignored"]

_TEMP_SUFFIXES = (".tmp", ".part", ".partial", "~")
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One directory entry and what the loader makes of it.

    Attributes:
        path: the entry.
        kind: ``wheel``, ``rejected`` or ``ignored``.
        reason: why it is rejected or ignored ("" for a wheel).
        distribution: the canonical distribution name when the file name parses as a
            wheel filename, else ``None``.
        size: file size (0 when it could not be stat-ed).
        mtime_ns: modification time (0 when it could not be stat-ed).
        ctime_ns: status change time (0 when it could not be stat-ed).
        regular: it is a regular file (after following a symbolic link).
    """

    path: Path
    kind: CandidateKind
    reason: str = ""
    distribution: NormalizedName | None = None
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    regular: bool = False


@functools.cache
def _host_tags() -> frozenset[Tag]:
    return frozenset(sys_tags())


def is_temporary(name: str) -> bool:
    """Whether ``name`` is hidden or a writer's temporary name (never looked at)."""
    return name.startswith(".") or name.endswith(_TEMP_SUFFIXES)


def wheel_name_issue(name: str, supported_tags: Collection[Tag] | None = None) -> str | None:
    """Why file name ``name`` is not a loadable wheel's name, or ``None`` if it is.

    Args:
        name: the file name (no directory).
        supported_tags: tags the target interpreter accepts; default: the running one's.
    """
    if not name.endswith(".whl"):
        return (
            "not a wheel: the name does not end in .whl (only plugin wheels belong in the "
            "plugins directory; move other files elsewhere)"
        )
    try:
        _name, _version, _build, tags = parse_wheel_filename(name)
    except InvalidWheelFilename as exc:
        return (
            f"invalid wheel filename: {exc} (a wheel is named "
            "<name>-<version>-<python tag>-<abi tag>-<platform tag>.whl; cbus-compile "
            "writes such names)"
        )
    accepted = _host_tags() if supported_tags is None else frozenset(supported_tags)
    if not tags & accepted:
        shown = ", ".join(sorted(str(tag) for tag in tags)[:4])
        return (
            f"wheel tags ({shown}) are not supported by the target interpreter; plugins "
            "must be pure Python wheels (py3-none-any, what cbus-compile builds)"
        )
    return None


def _distribution(name: str) -> NormalizedName | None:
    try:
        return canonicalize_name(parse_wheel_filename(name)[0])
    except InvalidWheelFilename:
        return None


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return (
            "a directory (plugins are wheel files directly in the plugins directory; "
            "subdirectories are not searched)"
        )
    if stat.S_ISFIFO(mode):
        return "a FIFO, not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    return "a device, not a regular file"


def classify(
    path: Path,
    *,
    supported_tags: Collection[Tag] | None = None,
    limits: WheelLimits = DEFAULT_LIMITS,
) -> Candidate:
    """Classify one entry of a plugins directory (see the module docstring).

    Never raises for a problem with the entry: a problem is a rejection.
    """
    name = path.name
    if is_temporary(name):
        return Candidate(path, "ignored", "hidden or temporary name")
    dist = _distribution(name)
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return Candidate(path, "rejected", "a symbolic link to nothing", dist)
        return Candidate(path, "ignored", "gone while the directory was read")
    except OSError as exc:
        return Candidate(path, "rejected", f"cannot stat it: {exc.strerror or exc}", dist)
    size, mtime, ctime = st.st_size, st.st_mtime_ns, st.st_ctime_ns
    if not stat.S_ISREG(st.st_mode):
        return Candidate(path, "rejected", _kind_of(st.st_mode), dist, size, mtime, ctime)
    issue = wheel_name_issue(name, supported_tags)
    if issue is None and size > limits.wheel_bytes:
        issue = f"the file is larger than the limit of {limits.wheel_bytes} bytes"
    if issue is None:
        issue = _zip_issue(path)
    if issue is not None:
        return Candidate(path, "rejected", issue, dist, size, mtime, ctime, regular=True)
    return Candidate(path, "wheel", "", dist, size, mtime, ctime, regular=True)


def _zip_issue(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot open it: {exc.strerror or exc}"
    try:
        head = os.read(fd, len(_ZIP_MAGIC))
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    finally:
        os.close(fd)
    if head != _ZIP_MAGIC:
        return "not a zip archive (a wheel is a zip file); was it truncated or renamed?"
    return None


def scan_candidates(
    directory: Path,
    *,
    supported_tags: Collection[Tag] | None = None,
    limits: WheelLimits = DEFAULT_LIMITS,
) -> list[Candidate]:
    """Classify every entry of ``directory`` (not recursive), sorted by name.

    Raises:
        OSError: the directory cannot be listed.
    """
    with os.scandir(directory) as entries:
        paths = sorted(Path(entry.path) for entry in entries)
    return [classify(p, supported_tags=supported_tags, limits=limits) for p in paths]
