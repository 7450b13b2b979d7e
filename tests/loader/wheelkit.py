"""Helpers to build real plugin wheels and rewrite them into broken variants."""

from __future__ import annotations

import base64
import hashlib
import os
import warnings
import zipfile
from collections.abc import Collection, Mapping
from pathlib import Path

PACKAGES = Path(__file__).resolve().parents[1] / "packages"
HELLO_PROJECT = PACKAGES / "loader-hello"
DEFAULT_MODE = 0o100644


def build_wheel(project: Path, out_dir: Path) -> Path:
    """Build ``project`` with hatchling in-process (no cwd change); return the wheel."""
    from hatchling.builders.wheel import WheelBuilder

    out_dir.mkdir(parents=True, exist_ok=True)
    built = list(WheelBuilder(str(project)).build(directory=str(out_dir), versions=["standard"]))
    assert len(built) == 1, built
    return Path(built[0])


def record_hash(data: bytes) -> str:
    """``sha256=<urlsafe b64>`` as written in RECORD."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode('ascii')}"


def dist_info_of(wheel: Path) -> str:
    """Name of the wheel's .dist-info directory."""
    with zipfile.ZipFile(wheel) as zf:
        return next(n.split("/")[0] for n in zf.namelist() if ".dist-info/" in n)


def repack(
    src: Path,
    dst: Path,
    *,
    add: Mapping[str, bytes] | None = None,
    replace: Mapping[str, bytes] | None = None,
    remove: Collection[str] = (),
    modes: Mapping[str, int] | None = None,
    fix_record: bool = True,
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """Copy wheel ``src`` to ``dst`` with members added, replaced or removed.

    With ``fix_record`` the RECORD is regenerated so that it matches the new content
    (the variant is then wrong in exactly one intended way).
    """
    add, replace, modes = dict(add or {}), dict(replace or {}), dict(modes or {})
    members: list[tuple[str, bytes, int]] = []
    with zipfile.ZipFile(src) as zf:
        for info in zf.infolist():
            if info.filename in remove:
                continue
            data = replace.pop(info.filename, None)
            if data is None:
                data = zf.read(info)
            members.append((info.filename, data, info.external_attr >> 16))
    assert not replace, f"members to replace not found: {sorted(replace)}"
    record_name = f"{dist_info_of(src)}/RECORD"
    record_index = next((i for i, m in enumerate(members) if m[0] == record_name), None)
    record_member = members.pop(record_index) if record_index is not None else None
    members.extend((name, data, DEFAULT_MODE) for name, data in add.items())
    if record_member is not None:
        if fix_record:
            lines = [
                f"{name},{record_hash(data)},{len(data)}"
                for name, data, _mode in members
                if not name.endswith("/")
            ]
            lines.append(f"{record_name},,")
            record_member = (record_name, ("\n".join(lines) + "\n").encode(), DEFAULT_MODE)
        members.append(record_member)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are a deliberate test case
        with zipfile.ZipFile(dst, "w", compression=compression) as out:
            for name, data, mode in members:
                info = zipfile.ZipInfo(name, date_time=(2020, 2, 2, 0, 0, 0))
                info.external_attr = modes.get(name, mode) << 16
                info.compress_type = compression
                out.writestr(info, data)
    return dst


def corrupt_member(src: Path, dst: Path, member: str) -> Path:
    """Copy ``src`` (stored, not deflated) with one byte of ``member``'s data flipped."""
    repack(src, dst, compression=zipfile.ZIP_STORED)
    with zipfile.ZipFile(dst) as zf:
        info = zf.getinfo(member)
    raw = bytearray(dst.read_bytes())
    name_len, extra_len = (
        int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little"),
        int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little"),
    )
    start = info.header_offset + 30 + name_len + extra_len
    raw[start] ^= 0xFF
    dst.write_bytes(bytes(raw))
    return dst


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and mtime (ns): to prove nothing changed."""
    result: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            result[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return result


def patch_bytes(path: Path, replacements: Mapping[bytes, bytes]) -> Path:
    """Replace byte strings everywhere in ``path`` (same length, so offsets stay valid).

    Used to store member names zipfile refuses to write (NUL bytes, non-ASCII bytes
    without the UTF-8 flag): write a unique placeholder, then patch it in both the
    local header and the central directory.
    """
    raw = path.read_bytes()
    for old, new in replacements.items():
        assert len(old) == len(new), (old, new)
        assert old in raw, old
        raw = raw.replace(old, new)
    path.write_bytes(raw)
    return path


def write_zip(
    dst: Path,
    members: Collection[tuple[str, bytes]],
    *,
    extra: Mapping[str, bytes] | None = None,
    modes: Mapping[str, int] | None = None,
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """A zip of ``members`` (name, data), with optional extra fields and Unix modes."""
    extra, modes = dict(extra or {}), dict(modes or {})
    dst.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(dst, "w", compression=compression) as out:
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=(2020, 2, 2, 0, 0, 0))
                info.external_attr = modes.get(name, DEFAULT_MODE) << 16
                info.compress_type = compression
                info.extra = extra.get(name, b"")
                out.writestr(info, data)
    return dst


def wheel_members(wheel: Path) -> list[tuple[str, bytes]]:
    """Every member of ``wheel`` with its data, in archive order."""
    with zipfile.ZipFile(wheel) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]
