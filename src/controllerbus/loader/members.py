"""Archive-level rules for a wheel's members: names as stored, entry modes, size limits.

:func:`check_members` looks only at the zip's directory (names, sizes, attributes,
offsets), never at member contents, so it runs before anything is decompressed.
:func:`verify_wheel <controllerbus.loader.verify.verify_wheel>` calls it and reads
member contents only when it found no limit exceeded.

Names are checked **as stored**: Python's :mod:`zipfile` cuts a name at its first NUL
byte and decodes it as UTF-8 or CP437 depending on flag bit 11; other tools do
neither, so the checks run on the raw bytes (recovered losslessly from
``ZipInfo.orig_filename``) and reject anything two tools could read differently.

Limits (:class:`WheelLimits`, defaults in brackets): the wheel file [64 MiB], the
sum of uncompressed member sizes [256 MiB], the number of members [10 000], the
compression ratio of any member above 1 MiB [100:1], and the size of each
``.dist-info`` text file read into memory (RECORD, METADATA, WHEEL,
``entry_points.txt``) [4 MiB]. The sizes are the ones the zip directory declares;
:mod:`zipfile` never decompresses more than a member's declared size, so they bound
the work done.
"""

from __future__ import annotations

import itertools
import stat
import struct
import unicodedata
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_LIMITS",
    "WheelLimits",
    "check_members",
    "declared_member_count",
    "member_name_issues",
    "raw_name",
]

_MiB = 1024 * 1024
_UTF8_FLAG = 0x800
_ENCRYPTED_FLAG = 0x1
_UNIX = 3
_UNICODE_PATH_EXTRA = 0x7075
_MAX_COMPONENT_BYTES = 255
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_EOCD_SIGNATURE = b"PK\x05\x06"


@dataclass(frozen=True, slots=True)
class WheelLimits:
    """Size limits checked before a wheel's members are read.

    Attributes:
        wheel_bytes: the wheel file itself.
        unpacked_bytes: the sum of the members' uncompressed sizes.
        members: the number of members (directory entries included).
        ratio: the largest uncompressed/compressed ratio of a member ...
        ratio_floor_bytes: ... whose uncompressed size exceeds this (small,
            repetitive files compress well and are harmless).
        text_bytes: each ``.dist-info`` file read into memory (RECORD, METADATA, ...).
    """

    wheel_bytes: int = 64 * _MiB
    unpacked_bytes: int = 256 * _MiB
    members: int = 10_000
    ratio: float = 100.0
    ratio_floor_bytes: int = _MiB
    text_bytes: int = 4 * _MiB


DEFAULT_LIMITS = WheelLimits()
"""The limits :func:`~controllerbus.loader.verify.verify_wheel` applies by default."""


def raw_name(info: zipfile.ZipInfo) -> bytes:
    """The member name's bytes as stored in the central directory (NUL included).

    :mod:`zipfile` decodes with UTF-8 when flag bit 11 is set and CP437 otherwise;
    both decodings it accepted re-encode to the original bytes.
    """
    encoding = "utf-8" if info.flag_bits & _UTF8_FLAG else "cp437"
    return info.orig_filename.encode(encoding)


def _is_bad_char(ch: str) -> bool:
    # Cc: C0/C1 controls and DEL; Cf: format characters (bidi overrides, zero-width
    # joiners) that make a name display as something it is not.
    return unicodedata.category(ch) in ("Cc", "Cf")


def member_name_issues(name: str) -> list[str]:
    """Return why ``name`` is not a safe relative POSIX member path (empty if it is).

    A name that passes joins under any root without escaping it (the Hypothesis
    tests check this), contains no control or format characters, no backslash, and
    is in Unicode NFKC form (the form Python normalises identifiers to).
    """
    if not name:
        return ["a member has an empty name"]
    issues: list[str] = []
    if "\x00" in name:
        issues.append(f"{name!r}: NUL byte in member name (zipfile would cut the name there)")
    elif not (name.isascii() and name.isprintable()) and any(_is_bad_char(ch) for ch in name):
        issues.append(f"{name!r}: control or format character in member name")
    if "\\" in name:
        issues.append(
            f"{name!r}: backslash in member name (a Windows separator on some tools, "
            "a literal character on others)"
        )
    if name.startswith("/"):
        issues.append(f"{name!r}: absolute member path")
    elif len(name) >= 2 and name[1] == ":" and name[0].isascii() and name[0].isalpha():
        issues.append(f"{name!r}: member path starts with a drive letter")
    parts = (name[:-1] if name.endswith("/") else name).split("/")
    if ".." in parts:
        issues.append(f"{name!r}: path traversal ('..' component)")
    if not name.startswith("/") and any(part in ("", ".") for part in parts):
        issues.append(f"{name!r}: empty or '.' path component")
    if any(len(part.encode("utf-8", "surrogatepass")) > _MAX_COMPONENT_BYTES for part in parts):
        issues.append(f"{name!r}: a path component is longer than {_MAX_COMPONENT_BYTES} bytes")
    if not issues and not name.isascii() and unicodedata.normalize("NFKC", name) != name:
        issues.append(
            f"{name!r}: not in Unicode NFKC form (it normalises to "
            f"{unicodedata.normalize('NFKC', name)!r}, the name Python's import would look for)"
        )
    return issues


def _raw_name_issues(info: zipfile.ZipInfo) -> list[str]:
    raw = raw_name(info)
    shown = repr(raw)[1:]
    issues: list[str] = []
    if b"\x00" in raw:
        issues.append(f"{shown}: NUL byte in member name (zipfile would cut the name there)")
    if not info.flag_bits & _UTF8_FLAG and not raw.isascii():
        issues.append(
            f"{shown}: non-ASCII member name not marked as UTF-8 (zip flag bit 11); "
            "tools decode it differently (CP437 or UTF-8)"
        )
    if _has_extra(info.extra, _UNICODE_PATH_EXTRA):
        issues.append(
            f"{shown}: carries an Info-ZIP Unicode path extra field; unzip would extract it "
            "under another name than Python's zipfile"
        )
    return issues


def _has_extra(extra: bytes, wanted: int) -> bool:
    pos = 0
    while pos + 4 <= len(extra):
        header_id, size = struct.unpack_from("<HH", extra, pos)
        if header_id == wanted:
            return True
        pos += 4 + size
    return False


def _mode_issues(info: zipfile.ZipInfo) -> list[str]:
    name = info.filename
    issues: list[str] = []
    if info.flag_bits & _ENCRYPTED_FLAG:
        issues.append(f"{name!r}: encrypted member")
    # Unix mode bits live in the high 16 bits of external_attr when made on Unix
    # (create_system 3); other systems leave them zero or meaningless.
    mode = info.external_attr >> 16
    if info.create_system != _UNIX or not mode:
        return issues
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        issues.append(f"{name!r}: symbolic link (wheels may contain regular files only)")
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        issues.append(f"{name!r}: device node (mode {oct(mode)})")
    elif stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        issues.append(f"{name!r}: FIFO or socket (mode {oct(mode)})")
    elif kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        issues.append(f"{name!r}: not a regular file (mode {oct(mode)})")
    if mode & (stat.S_ISUID | stat.S_ISGID):
        issues.append(f"{name!r}: setuid/setgid bit in its mode ({oct(mode)})")
    return issues


def _collision_key(name: str) -> str:
    stripped = name.rstrip("/")
    if stripped.isascii():
        return stripped.lower()
    return unicodedata.normalize("NFKC", stripped).casefold()


def _duplicate_issues(infos: Sequence[zipfile.ZipInfo]) -> list[str]:
    issues: list[str] = []
    seen: dict[str, str] = {}
    for info in infos:
        name = info.filename
        key = _collision_key(name)
        other = seen.get(key)
        if other is None:
            seen[key] = name
        elif other == name:
            issues.append(f"{name!r}: duplicate member (an installer would overwrite one copy)")
        elif other.rstrip("/") == name.rstrip("/"):
            issues.append(f"{name!r}: is both a file and a directory in the archive")
        elif unicodedata.normalize("NFC", other) == unicodedata.normalize("NFC", name):
            issues.append(
                f"{name!r} and {other!r} differ only by Unicode normalisation (one file "
                "on macOS, two on Linux)"
            )
        elif other.casefold() == name.casefold():
            issues.append(
                f"{name!r} and {other!r} differ only in case (they collide on "
                "case-insensitive filesystems)"
            )
        else:
            issues.append(
                f"{name!r} and {other!r} are the same name after Unicode NFKC "
                "normalisation and case folding"
            )
    return issues


def _overlap_issues(infos: Sequence[zipfile.ZipInfo], data: bytes) -> list[str]:
    """Members whose data ranges overlap: the construction of non-recursive zip bombs."""
    spans: list[tuple[int, int, str]] = []
    for info in infos:
        start = info.header_offset
        if start < 0 or start + _LOCAL_HEADER.size > len(data):
            return [f"{info.filename!r}: local header lies outside the file"]
        fields = _LOCAL_HEADER.unpack_from(data, start)
        if fields[0] != b"PK\x03\x04":
            return [f"{info.filename!r}: no local file header at its offset"]
        name_len, extra_len = fields[-2], fields[-1]
        end = start + _LOCAL_HEADER.size + name_len + extra_len + info.compress_size
        spans.append((start, end, info.filename))
    spans.sort()
    for (_s1, end1, name1), (start2, _e2, name2) in itertools.pairwise(spans):
        if start2 < end1:
            return [
                f"members {name1!r} and {name2!r} overlap in the archive (a zip-bomb "
                "construction); rebuild the wheel"
            ]
    return []


def declared_member_count(data: bytes) -> int | None:
    """The member count the end-of-central-directory record declares, before parsing.

    Returns ``None`` when there is no plain record or it defers to a Zip64 one
    (``0xFFFF``); :mod:`zipfile` then reports or counts.
    """
    pos = data.rfind(_EOCD_SIGNATURE, max(0, len(data) - 65_557))
    if pos < 0 or pos + 22 > len(data):
        return None
    (entries,) = struct.unpack_from("<H", data, pos + 10)
    return None if entries == 0xFFFF else int(entries)


def check_members(
    infos: Sequence[zipfile.ZipInfo], data: bytes, limits: WheelLimits = DEFAULT_LIMITS
) -> tuple[list[str], bool]:
    """Check every member's stored name, mode and size; never decompresses.

    Args:
        infos: the archive's members (``ZipFile.infolist()``).
        data: the whole wheel file (to read local headers for the overlap check).
        limits: the size limits.

    Returns:
        The issues found, and whether the sizes are within the limits (when not,
        the caller must not read member contents).
    """
    issues: list[str] = []
    if len(infos) > limits.members:
        issues.append(
            f"the archive has {len(infos)} members, more than the limit of {limits.members}"
        )
    total = 0
    sizes_ok = len(infos) <= limits.members
    for info in infos:
        issues.extend(_raw_name_issues(info))
        issues.extend(member_name_issues(info.filename))
        issues.extend(_mode_issues(info))
        total += info.file_size
        if info.file_size > limits.ratio_floor_bytes and info.file_size > limits.ratio * max(
            info.compress_size, 1
        ):
            ratio = info.file_size / max(info.compress_size, 1)
            issues.append(
                f"{info.filename!r}: compression ratio {ratio:.0f}:1 exceeds the limit of "
                f"{limits.ratio:.0f}:1 (zip bomb?)"
            )
            sizes_ok = False
    issues.extend(_duplicate_issues(infos))
    overlap = _overlap_issues(infos, data)
    if overlap:
        issues.extend(overlap)
        sizes_ok = False
    if total > limits.unpacked_bytes:
        issues.append(
            f"archive unpacks to {total} bytes, more than the limit of {limits.unpacked_bytes}"
        )
        sizes_ok = False
    return issues, sizes_ok
