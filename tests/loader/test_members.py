"""Hostile wheels built at the byte level: names as stored, entry modes, size limits."""

from __future__ import annotations

import os
import stat
import struct
import unicodedata
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from controllerbus.loader import InvalidWheel, verify_wheel
from controllerbus.loader.members import WheelLimits, declared_member_count, raw_name

from .wheelkit import patch_bytes, repack, wheel_members, write_zip

PKG = "cbus_loader_hello"
PLUGIN_PY = f"{PKG}/plugin.py"

Build = Callable[[Path, Path], Path]


def _add(name: str, data: bytes = b"X = 1\n", **kwargs: object) -> Build:
    def build(src: Path, dst: Path) -> Path:
        return repack(src, dst, add={name: data}, **kwargs)  # type: ignore[arg-type]

    return build


def _patched(placeholder: str, raw: bytes) -> Build:
    """Add a member named with ``placeholder``, then store ``raw`` in its place."""

    def build(src: Path, dst: Path) -> Path:
        repack(src, dst, add={f"{PKG}/{placeholder}.py": b""})
        return patch_bytes(dst, {placeholder.encode(): raw})

    return build


def _mode(mode: int) -> Build:
    return _add(f"{PKG}/odd.py", b"", modes={f"{PKG}/odd.py": mode})


def _extra(name: str, extra: bytes) -> Build:
    def build(src: Path, dst: Path) -> Path:
        members = [*wheel_members(src), (name, b"")]
        return write_zip(dst, members, extra={name: extra})

    return build


def _overlap(src: Path, dst: Path) -> Path:
    # Point the central-directory entry of the last member at the first one's data.
    repack(src, dst, compression=zipfile.ZIP_STORED)
    raw = bytearray(dst.read_bytes())
    with zipfile.ZipFile(dst) as zf:
        infos = zf.infolist()
    cd_start = raw.index(b"PK\x01\x02")
    pos = cd_start
    for _ in infos[:-1]:
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", raw, pos + 28)
        pos += 46 + name_len + extra_len + comment_len
    struct.pack_into("<L", raw, pos + 42, infos[0].header_offset)
    dst.write_bytes(bytes(raw))
    return dst


NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")

HOSTILE: list[tuple[str, Build, str]] = [
    ("nul-in-name", _patched("evil_Q", b"evil\x00Q"), "NUL byte in member name"),
    ("bell-in-name", _add(f"{PKG}/ev\x07il.py"), "control or format character"),
    ("c1-control", _add(f"{PKG}/ev\x85il.py"), "control or format character"),
    ("bidi-override", _add(f"{PKG}/evil\u202eyp.py"), "control or format character"),
    ("backslash", _add(f"{PKG}\\evil.py"), "backslash"),
    ("drive-letter", _add("C:/evil.py"), "drive letter"),
    ("absolute", _add("/etc/evil.py"), "absolute member path"),
    ("dotdot", _add(f"{PKG}/../../evil.py"), "path traversal"),
    ("dot-component", _add(f"{PKG}/./evil.py"), "empty or '.' path component"),
    ("long-component", _add(f"{PKG}/{'a' * 300}.py"), "longer than 255 bytes"),
    ("case-duplicate", _add(f"{PKG}/Plugin.py"), "differ only in case"),
    ("exact-duplicate", _add(PLUGIN_PY), "duplicate member"),
    ("file-and-dir", _add(f"{PLUGIN_PY}/", b""), "both a file and a directory"),
    ("not-nfkc", _add(f"{PKG}/\ufb01le.py"), "not in Unicode NFKC form"),
    (
        "nfc-nfd-pair",
        lambda s, d: repack(s, d, add={f"{PKG}/{NFC}.py": b"", f"{PKG}/{NFD}.py": b""}),
        "differ only by Unicode normalisation",
    ),
    (
        "non-ascii-without-utf8-flag",
        _patched("name_QQ", "name_é".encode()),
        "not marked as UTF-8",
    ),
    (
        "unicode-path-extra",
        _extra(f"{PKG}/x.py", struct.pack("<HHB", 0x7075, 1, 1)),
        "Unicode path extra field",
    ),
    ("symlink", _mode(stat.S_IFLNK | 0o777), "symbolic link"),
    ("char-device", _mode(stat.S_IFCHR | 0o644), "device node"),
    ("block-device", _mode(stat.S_IFBLK | 0o644), "device node"),
    ("fifo", _mode(stat.S_IFIFO | 0o644), "FIFO or socket"),
    ("socket", _mode(stat.S_IFSOCK | 0o644), "FIFO or socket"),
    ("setuid", _mode(stat.S_IFREG | stat.S_ISUID | 0o755), "setuid/setgid bit"),
    ("setgid", _mode(stat.S_IFREG | stat.S_ISGID | 0o755), "setuid/setgid bit"),
    ("overlapping-members", _overlap, "overlap in the archive"),
]


@pytest.mark.parametrize(("case", "build", "message"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_member_rejected(
    hello_wheel: Path, tmp_path: Path, case: str, build: Build, message: str
) -> None:
    bad = build(hello_wheel, tmp_path / hello_wheel.name)
    with pytest.raises(InvalidWheel) as info:
        verify_wheel(bad)
    assert any(message in issue for issue in info.value.issues), info.value.issues


def test_nul_name_is_checked_on_the_stored_bytes(hello_wheel: Path, tmp_path: Path) -> None:
    bad = _patched("evil_Q", b"evil\x00Q")(hello_wheel, tmp_path / hello_wheel.name)
    with zipfile.ZipFile(bad) as zf:
        info = next(i for i in zf.infolist() if i.orig_filename.startswith(f"{PKG}/evil"))
    assert info.filename == f"{PKG}/evil"  # what zipfile shows: cut at the NUL
    assert raw_name(info) == f"{PKG}/evil\x00Q.py".encode()


def test_invalid_utf8_with_flag_is_a_clear_error(hello_wheel: Path, tmp_path: Path) -> None:
    bad = repack(hello_wheel, tmp_path / hello_wheel.name, add={f"{PKG}/é_x.py": b""})
    patch_bytes(bad, {"é".encode(): b"\xff\xfe"})
    with pytest.raises(InvalidWheel, match=r"marked UTF-8 .* but is not UTF-8"):
        verify_wheel(bad)


def test_dos_made_members_modes_are_ignored(hello_wheel: Path, tmp_path: Path) -> None:
    good = repack(hello_wheel, tmp_path / "stage" / hello_wheel.name)
    raw = bytearray(good.read_bytes())
    # "version made by" high byte 0 (MS-DOS): external_attr's high half means nothing.
    pos = raw.index(b"PK\x01\x02")
    while pos >= 0:
        raw[pos + 5] = 0
        struct.pack_into("<L", raw, pos + 38, (stat.S_IFLNK | 0o777) << 16)
        pos = raw.find(b"PK\x01\x02", pos + 4)
    out = tmp_path / hello_wheel.name
    out.write_bytes(bytes(raw))
    assert verify_wheel(out).name == "cbus-loader-hello"


def test_hostile_wheel_good_baseline(hello_wheel: Path, tmp_path: Path) -> None:
    # The builders change nothing else: without the hostile member the copy verifies.
    assert verify_wheel(repack(hello_wheel, tmp_path / hello_wheel.name)).name


LIMIT_CASES: list[tuple[str, dict[str, bytes], WheelLimits, str]] = [
    (
        "member-count",
        {f"{PKG}/m{i}.py": b"" for i in range(20)},
        WheelLimits(members=20),
        "more than the limit of 20",
    ),
    (
        "ratio",
        {f"{PKG}/zeros.bin": bytes(2 * 2**20)},
        WheelLimits(),
        "compression ratio",
    ),
    (
        "unpacked-total",
        {f"{PKG}/a.txt": b"a" * 40_000, f"{PKG}/b.txt": b"b" * 40_000},
        WheelLimits(unpacked_bytes=60_000),
        "unpacks to",
    ),
    (
        "record-size",
        {f"{PKG}/m{i}.py": b"" for i in range(40)},
        WheelLimits(text_bytes=2_000),
        "RECORD is",
    ),
]


@pytest.mark.parametrize(
    ("case", "add", "limits", "message"), LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES]
)
def test_size_limits(
    hello_wheel: Path,
    tmp_path: Path,
    case: str,
    add: dict[str, bytes],
    limits: WheelLimits,
    message: str,
) -> None:
    bad = repack(hello_wheel, tmp_path / hello_wheel.name, add=add)
    with pytest.raises(InvalidWheel) as info:
        verify_wheel(bad, limits=limits)
    assert any(message in issue for issue in info.value.issues), info.value.issues


def test_limits_are_checked_before_decompressing(
    hello_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = repack(hello_wheel, tmp_path / hello_wheel.name, add={f"{PKG}/z.bin": bytes(2**22)})
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy(self: zipfile.ZipFile, name: object, *args: object, **kwargs: object) -> object:
        opened.append(str(getattr(name, "filename", name)))
        return real_open(self, name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    with pytest.raises(InvalidWheel, match="compression ratio"):
        verify_wheel(bomb)
    assert f"{PKG}/z.bin" not in opened


def test_member_count_is_read_before_parsing(hello_wheel: Path, tmp_path: Path) -> None:
    many = repack(
        hello_wheel, tmp_path / hello_wheel.name, add={f"{PKG}/m{i}.py": b"" for i in range(50)}
    )
    with zipfile.ZipFile(many) as zf:
        assert declared_member_count(many.read_bytes()) == len(zf.infolist())
    with pytest.raises(InvalidWheel, match="more than the limit of 10"):
        verify_wheel(many, limits=WheelLimits(members=10))


def test_fifo_is_not_opened_for_ever(tmp_path: Path) -> None:
    fifo = tmp_path / "cbus_x-1.0-py3-none-any.whl"
    os.mkfifo(fifo)
    with pytest.raises(InvalidWheel, match="not a regular file"):
        verify_wheel(fifo)


def test_directory_named_like_a_wheel(tmp_path: Path) -> None:
    (tmp_path / "cbus_x-1.0-py3-none-any.whl").mkdir()
    with pytest.raises(InvalidWheel, match="not a regular file"):
        verify_wheel(tmp_path / "cbus_x-1.0-py3-none-any.whl")
