"""The trust file: which wheels, by sha256, a production host may load.

Rules: docs/production.md#trust-file.

A trust file uses pip's requirements-file syntax in ``--require-hashes`` style. Each
entry names a wheel, either by its exact file name or as ``name==version`` (the
distribution name, normalised as pip does), followed by one or more
``--hash=sha256:<hex>`` options. Lines may be continued with a trailing ``\\`` and
``#`` starts a comment::

    # written by `cbus plugins trust dist-plugins -o trust.txt`
    hot_demo-0.1.0+cbus.4f2a-py3-none-any.whl \\
        --hash=sha256:9c1e...
    attrs==23.2.0 --hash=sha256:99b8... --hash=sha256:1c2d...

:meth:`TrustFile.check` hashes a wheel file (streaming, nothing is unpacked) and
raises :class:`UntrustedWheel` naming the file and its actual hash unless an entry
matching the file pins that hash. :class:`TrustPolicy` re-reads the file whenever its
stat changes; a file that cannot be read or parsed fails closed (every check is
refused until it is fixed), while generations already active keep serving.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import (
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from controllerbus.errors import LoaderError

__all__ = [
    "TrustEntry",
    "TrustFile",
    "TrustFileError",
    "TrustPolicy",
    "UntrustedWheel",
    "parse_trust_file",
    "sha256_of",
]

logger = logging.getLogger(__name__)

_HASH = re.compile(r"^--hash[= ](?P<algo>[A-Za-z0-9]+):(?P<hex>[0-9A-Fa-f]+)$")
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;]+)$")
_CHUNK = 1024 * 1024


class TrustFileError(LoaderError):
    """The trust file cannot be read or parsed; every wheel is refused until it is fixed."""

    def __init__(self, path: Path, issues: Iterable[str]) -> None:
        self.path = path
        self.issues = tuple(issues)
        super().__init__(path, self.issues)

    def __str__(self) -> str:
        bullets = "\n".join(f"  - {issue}" for issue in self.issues)
        return (
            f"trust file {self.path} is unusable, so no wheel is trusted (running plugins "
            f"keep serving); fix it or regenerate it with `cbus plugins trust`:\n{bullets}"
        )


class UntrustedWheel(LoaderError):
    """A wheel whose sha256 the trust file does not pin; nothing was unpacked.

    Attributes:
        path: the wheel file.
        sha256: its actual sha256.
        reason: what the trust file says about it.
    """

    def __init__(self, path: Path, sha256: str, reason: str, trust_file: Path | None) -> None:
        self.path = path
        self.sha256 = sha256
        self.reason = reason
        self.trust_file = trust_file
        super().__init__(path, sha256, reason)

    def __str__(self) -> str:
        where = f" {self.trust_file}" if self.trust_file is not None else ""
        return (
            f"{self.path.name}: refused, {self.reason}; its sha256 is {self.sha256}. "
            f"Nothing was unpacked. If this wheel is the one CI built, pin it in the trust "
            f"file{where}: {self.path.name} --hash=sha256:{self.sha256}"
        )


@dataclass(frozen=True, slots=True)
class TrustEntry:
    """One pinned wheel (by file name) or distribution version, with its hashes.

    Attributes:
        filename: the wheel file name, or ``""`` for a ``name==version`` entry.
        name: canonical distribution name.
        version: the pinned version.
        hashes: the allowed sha256 hex digests (lower case).
        line: line number in the trust file (for messages).
    """

    filename: str
    name: NormalizedName
    version: Version
    hashes: frozenset[str]
    line: int

    def matches(self, filename: str, name: NormalizedName, version: Version) -> bool:
        """Whether this entry is about the wheel file ``filename``."""
        if self.filename:
            return self.filename == filename
        return self.name == name and self.version == version

    def __str__(self) -> str:
        return self.filename or f"{self.name}=={self.version}"


@dataclass(frozen=True, slots=True)
class TrustFile:
    """A parsed trust file (see the module docstring)."""

    entries: tuple[TrustEntry, ...]
    path: Path | None = None

    def __iter__(self) -> Iterator[TrustEntry]:
        return iter(self.entries)

    def entries_for(self, filename: str) -> list[TrustEntry]:
        """The entries about the wheel file named ``filename`` (empty: not pinned)."""
        try:
            name, version, _build, _tags = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            return [e for e in self.entries if e.filename == filename]
        return [e for e in self.entries if e.matches(filename, name, version)]

    def allows(self, filename: str, sha256: str) -> bool:
        """Whether the trust file pins ``sha256`` for the wheel named ``filename``."""
        return any(sha256 in e.hashes for e in self.entries_for(filename))

    def reason(self, filename: str, sha256: str) -> str | None:
        """Why ``filename`` with ``sha256`` is refused, or ``None`` if it is pinned."""
        entries = self.entries_for(filename)
        if not entries:
            return "it is not pinned in the trust file (every loaded wheel must be)"
        if any(sha256 in e.hashes for e in entries):
            return None
        pinned = ", ".join(sorted(h[:16] + "..." for e in entries for h in e.hashes))
        lines = ", ".join(str(e.line) for e in entries)
        return (
            f"its hash does not match the trust file (line {lines} pins {pinned}): "
            "the file is not the wheel CI built"
        )

    def check(self, path: Path) -> str:
        """Hash ``path`` and return its sha256 if pinned (nothing is unpacked).

        Raises:
            UntrustedWheel: not pinned, or pinned with other hashes.
            LoaderError: the file cannot be read.
        """
        sha = sha256_of(path)
        reason = self.reason(path.name, sha)
        if reason is not None:
            raise UntrustedWheel(path, sha, reason, self.path)
        return sha


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in chunks.

    Raises:
        LoaderError: the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise LoaderError(f"{path}: cannot read the wheel to check its hash: {exc}") from exc
    return digest.hexdigest()


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Join ``\\`` continuations and strip comments, as pip does; yields (line, text)."""
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer.append(line[:-1])
            continue
        buffer.append(line)
        joined = " ".join(part.strip() for part in buffer).strip()
        buffer = []
        if joined:
            yield start, joined
    if buffer and (joined := " ".join(part.strip() for part in buffer).strip()):
        yield start, joined


def _parse_line(number: int, line: str, issues: list[str]) -> TrustEntry | None:
    tokens = line.split()
    target, options = tokens[0], tokens[1:]
    hashes: set[str] = set()
    for option in options:
        match = _HASH.match(option)
        if match is None:
            issues.append(
                f"line {number}: unexpected {option!r} (only --hash=sha256:<hex> options)"
            )
            continue
        if match["algo"].lower() != "sha256" or len(match["hex"]) != 64:
            issues.append(f"line {number}: {option!r} is not a sha256 hash (64 hex digits)")
            continue
        hashes.add(match["hex"].lower())
    if not hashes:
        issues.append(f"line {number}: {target} has no --hash=sha256:... (every entry needs one)")
        return None
    if target.endswith(".whl"):
        try:
            name, version, _build, _tags = parse_wheel_filename(target)
        except InvalidWheelFilename as exc:
            issues.append(f"line {number}: {target!r} is not a wheel file name: {exc}")
            return None
        return TrustEntry(target, name, version, frozenset(hashes), number)
    pin = _PIN.match(target)
    if pin is None:
        issues.append(
            f"line {number}: {target!r} is neither a wheel file name nor name==version "
            "(ranges are not allowed: a pin names exactly one version)"
        )
        return None
    try:
        version = Version(pin["version"])
    except InvalidVersion:
        issues.append(f"line {number}: {pin['version']!r} is not a valid version")
        return None
    return TrustEntry("", canonicalize_name(pin["name"]), version, frozenset(hashes), number)


def parse_trust_file(text: str, *, path: Path | None = None) -> TrustFile:
    """Parse trust-file text (pure).

    Raises:
        TrustFileError: with every malformed line listed.
    """
    issues: list[str] = []
    entries: list[TrustEntry] = []
    for number, line in _logical_lines(text):
        entry = _parse_line(number, line, issues)
        if entry is not None:
            entries.append(entry)
    if issues:
        raise TrustFileError(path or Path("<trust file>"), issues)
    return TrustFile(tuple(entries), path)


def read_trust_file(path: Path) -> TrustFile:
    """Read and parse the trust file at ``path``.

    Raises:
        TrustFileError: unreadable or malformed.
    """
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrustFileError(path, [f"cannot read it: {exc}"]) from exc
    return parse_trust_file(text, path=path)


class TrustPolicy:
    """The trust file at ``path``, re-read whenever its stat (inode, size, mtime) changes.

    A missing, unreadable or malformed file fails closed: :meth:`current` raises
    :class:`TrustFileError` until the file is fixed.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(os.path.abspath(path))
        self._stat: tuple[int, int, int] | None = None
        self._trust: TrustFile | None = None
        self._error: TrustFileError | None = None

    def current(self) -> TrustFile:
        """The trust file as it is on disk now.

        Raises:
            TrustFileError: it cannot be read or parsed.
        """
        try:
            st = self.path.stat()
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError as exc:
            self._stat, self._trust = None, None
            raise TrustFileError(self.path, [f"cannot stat it: {exc}"]) from exc
        if key != self._stat:
            self._stat = key
            try:
                self._trust, self._error = read_trust_file(self.path), None
                logger.info("trust file %s: %d entries", self.path, len(self._trust.entries))
            except TrustFileError as exc:
                self._trust, self._error = None, exc
                logger.error("%s", exc)
        if self._error is not None:
            # A fresh error each time: re-raising one object would grow its traceback.
            raise TrustFileError(self._error.path, self._error.issues)
        assert self._trust is not None
        return self._trust

    def key(self) -> tuple[int, int, int] | None:
        """The trust file's (inode, size, mtime), or ``None`` if it cannot be stat-ed."""
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def check(self, path: Path) -> str:
        """:meth:`TrustFile.check` against the current file."""
        return self.current().check(path)
