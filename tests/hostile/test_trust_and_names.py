"""Hostile files through a real daemon: trust (permissions), member names, modes, sizes,
and files in the plugins directory that are not loadable wheels.

Each wheel case is a newer version of the good plugin, made hostile in exactly one
way at the byte level; each must be refused before anything is installed, recorded
as ``rejected`` under ``wheel:<file name>`` with its reason, and logged, while the
good generation keeps answering ``Hello``. Cases that need the file placed in a
particular way (its mode, a FIFO, a dangling link, a directory's mode) use
:func:`run_placed`, which asserts the same as the harness's ``run_case``. The
start-up cases check that a daemon refuses an untrusted plugins or state directory
with the ``chmod`` that fixes it (exit status 1, no traceback), and that
``--insecure-permissions`` lets it start.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..loader.wheelkit import dist_info_of, patch_bytes, repack, wheel_members, write_zip
from .harness import DaemonUnderTest, GoodPlugin, HostileCase, run_case

pytestmark = pytest.mark.slow

OTHER_UID = 54_321
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")

Make = Callable[[GoodPlugin, Path, Path], Path]


def _package(good: GoodPlugin) -> str:
    return good.projects.package


def add_member(name: str, data: bytes = b"X = 1\n", mode: int | None = None) -> Make:
    """A wheel with one extra member ``{package}/{name}`` (RECORD fixed)."""

    def make(good: GoodPlugin, src: Path, dst: Path) -> Path:
        member = f"{_package(good)}/{name}"
        modes = {member: mode} if mode is not None else None
        return repack(src, dst, add={member: data}, modes=modes)

    return make


def add_members(names: dict[str, bytes]) -> Make:
    def make(good: GoodPlugin, src: Path, dst: Path) -> Path:
        return repack(src, dst, add={f"{_package(good)}/{n}": d for n, d in names.items()})

    return make


def raw_name(placeholder: str, raw: bytes) -> Make:
    """A member stored with name bytes zipfile refuses to write (patched in place)."""

    def make(good: GoodPlugin, src: Path, dst: Path) -> Path:
        repack(src, dst, add={f"{_package(good)}/{placeholder}.py": b""})
        return patch_bytes(dst, {placeholder.encode(): raw})

    return make


def root_member(name: str) -> Make:
    def make(_good: GoodPlugin, src: Path, dst: Path) -> Path:
        return repack(src, dst, add={name: b""})

    return make


def many_members(count: int) -> Make:
    def make(good: GoodPlugin, src: Path, dst: Path) -> Path:
        pkg = _package(good)
        return repack(src, dst, add={f"{pkg}/m{i}.py": b"" for i in range(count)})

    return make


def big_record(good: GoodPlugin, src: Path, dst: Path) -> Path:
    del good
    repack(src, dst)
    record = f"{dist_info_of(dst)}/RECORD"
    members = [(n, d) for n, d in wheel_members(dst) if n != record]
    text = dict(wheel_members(dst))[record] + b"#" * (5 * 2**20) + b"\n"
    return write_zip(dst, [*members, (record, text)])


def unicode_extra(good: GoodPlugin, src: Path, dst: Path) -> Path:
    name = f"{_package(good)}/x.py"
    repack(src, dst, add={name: b""})
    members = wheel_members(dst)
    return write_zip(dst, members, extra={name: struct.pack("<HHB", 0x7075, 1, 1)})


def overlapping(good: GoodPlugin, src: Path, dst: Path) -> Path:
    del good
    repack(src, dst, compression=zipfile.ZIP_STORED)
    raw = bytearray(dst.read_bytes())
    with zipfile.ZipFile(dst) as zf:
        infos = zf.infolist()
    pos = raw.index(b"PK\x01\x02")
    for _ in infos[:-1]:
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", raw, pos + 28)
        pos += 46 + name_len + extra_len + comment_len
    struct.pack_into("<L", raw, pos + 42, infos[0].header_offset)
    dst.write_bytes(bytes(raw))
    return dst


def renamed(new_name: Callable[[Path], str], data: Callable[[Path], bytes] | None = None) -> Make:
    """The (loadable) newer wheel under another file name, or other bytes under it."""

    def make(_good: GoodPlugin, src: Path, dst: Path) -> Path:
        target = dst.with_name(new_name(src))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data(src) if data is not None else src.read_bytes())
        return target

    return make


def _wrong_tag(src: Path) -> str:
    return src.name.replace("-py3-none-any.whl", "-cp27-cp27mu-manylinux1_x86_64.whl")


NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")

WHEEL_CASES = [
    # -- member names, as stored
    HostileCase(
        "nul-in-name", raw_name("evil_Q", b"evil\x00Q"), "NUL byte in member name", "wheel"
    ),
    HostileCase("control-char", add_member("ev\x07il.py"), "control or format character", "wheel"),
    HostileCase(
        "bidi-override", add_member("evil\u202eyp.py"), "control or format character", "wheel"
    ),
    HostileCase("backslash", add_member("..\\..\\evil.py"), "backslash in member name", "wheel"),
    HostileCase("traversal", root_member("../../evil.py"), "path traversal", "wheel"),
    HostileCase("absolute", root_member("/tmp/evil.py"), "absolute member path", "wheel"),
    HostileCase("drive-letter", root_member("C:/evil.py"), "drive letter", "wheel"),
    HostileCase(
        "case-duplicate", add_members({"a.py": b"", "A.py": b""}), "differ only in case", "wheel"
    ),
    HostileCase(
        "nfc-nfd-duplicate",
        add_members({f"{NFC}.py": b"", f"{NFD}.py": b""}),
        "differ only by Unicode normalisation",
        "wheel",
    ),
    HostileCase(
        "non-ascii-without-utf8-flag",
        raw_name("name_QQ", "name_é".encode()),
        "not marked as UTF-8",
        "wheel",
    ),
    HostileCase("unicode-path-extra", unicode_extra, "Unicode path extra field", "wheel"),
    # -- entry modes
    HostileCase(
        "symlink-member",
        add_member("link.py", b"/etc/passwd", stat.S_IFLNK | 0o777),
        "symbolic link",
        "wheel",
    ),
    HostileCase(
        "device-member", add_member("dev.py", b"", stat.S_IFCHR | 0o644), "device node", "wheel"
    ),
    HostileCase(
        "fifo-member", add_member("fifo.py", b"", stat.S_IFIFO | 0o644), "FIFO or socket", "wheel"
    ),
    HostileCase(
        "setuid-member",
        add_member("suid.py", b"", stat.S_IFREG | stat.S_ISUID | 0o755),
        "setuid/setgid bit",
        "wheel",
    ),
    # -- sizes, before extraction
    HostileCase("too-many-members", many_members(10_001), "more than the limit of 10000", "wheel"),
    HostileCase(
        "compression-ratio", add_member("zeros.bin", bytes(4 * 2**20)), "compression ratio", "wheel"
    ),
    HostileCase("record-too-big", big_record, "RECORD is", "wheel"),
    HostileCase("overlapping-members", overlapping, "overlap in the archive", "wheel"),
    # -- files that are not loadable wheels
    HostileCase(
        "readme",
        renamed(lambda _s: "README.txt", lambda _s: b"notes\n"),
        "does not end in .whl",
        "wheel",
    ),
    HostileCase(
        "bad-wheel-name", renamed(lambda _s: "plugin-latest.whl"), "invalid wheel filename", "wheel"
    ),
    HostileCase("wrong-tag", renamed(_wrong_tag), "are not supported by the target", "wheel"),
    HostileCase(
        "not-a-zip",
        renamed(lambda s: s.name, lambda _s: b"<html>404 Not Found</html>\n"),
        "not a valid zip archive",
        "wheel",
    ),
]


@pytest.fixture(scope="module")
def daemon(
    good_plugin: GoodPlugin, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonUnderTest]:
    root = tmp_path_factory.mktemp("hostile-trust")
    dut = DaemonUnderTest(root, good_plugin)
    dut.plugins.chmod(0o755)
    dut.start()
    try:
        yield dut
        dut.stop()
    finally:
        dut.kill()


@pytest.mark.parametrize("case", WHEEL_CASES, ids=[c.name for c in WHEEL_CASES])
def test_hostile_file_is_rejected_and_the_good_generation_serves(
    daemon: DaemonUnderTest, case: HostileCase, tmp_path: Path
) -> None:
    record = run_case(daemon, case, tmp_path)
    assert record["status"] == "rejected"
    assert case.says in (record["error"] or "")
    assert record["generation"] == ""


# -- cases placed by hand -------------------------------------------------------------------------


def run_placed(
    dut: DaemonUnderTest,
    name: str,
    place: Callable[[Path], None],
    says: str,
    *,
    restore: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """``place(path)`` puts an entry at ``plugins/name``; assert what ``run_case`` does."""
    path = dut.plugins / name
    key = f"wheel:{name}"
    mark = dut.mark()
    place(path)
    try:
        found: dict[str, Any] = {}

        def refused() -> bool:
            record = dut.record(key)
            if record is None or says not in (record.get("error") or ""):
                return False
            found.update(record)
            return True

        dut.wait_until(refused, f"{name}: refusal recorded ({says!r})", within=60)
        assert found["status"] == "rejected", found
        dut.wait_for(says, after=mark, within=10)
        dut.assert_serving()
        dut.wait_until(lambda: not dut.stray_processes(), f"{name}: nothing left running")
        json.loads((dut.state / "manifest.json").read_text())
        assert "Traceback" not in dut.text()[mark:], dut.text()[mark:]
        return found
    finally:
        restore()
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _newer(dut: DaemonUnderTest, tmp_path: Path) -> Path:
    return dut.next_wheel(tmp_path)


def _place_with_mode(src: Path, mode: int, uid: int = -1) -> Callable[[Path], None]:
    """Write ``src`` at the path with ``mode`` (and owner) set before it appears there."""

    def place(path: Path) -> None:
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_bytes(src.read_bytes())
        os.chmod(tmp, mode)
        if uid != -1:
            os.chown(tmp, uid, -1)
        os.replace(tmp, path)

    return place


def test_wheel_writable_by_others_is_refused(daemon: DaemonUnderTest, tmp_path: Path) -> None:
    src = _newer(daemon, tmp_path)
    record = run_placed(
        daemon,
        src.name,
        _place_with_mode(src, 0o666),
        "it is writable by group and others (mode 0666)",
    )
    assert f"Fix: chmod go-w {daemon.plugins / src.name}" in record["error"]


@needs_root
def test_wheel_owned_by_another_user_is_refused(daemon: DaemonUnderTest, tmp_path: Path) -> None:
    src = _newer(daemon, tmp_path)
    record = run_placed(
        daemon, src.name, _place_with_mode(src, 0o644, OTHER_UID), f"(uid {OTHER_UID})"
    )
    assert f"Fix: chown root {daemon.plugins / src.name}" in record["error"]


def test_wheel_in_a_group_writable_plugins_dir_is_refused(
    daemon: DaemonUnderTest, tmp_path: Path
) -> None:
    src = _newer(daemon, tmp_path)

    def place(path: Path) -> None:
        daemon.plugins.chmod(0o775)
        daemon.drop(src, path.name)

    record = run_placed(
        daemon,
        src.name,
        place,
        f"its parent directory {daemon.plugins} is writable by group",
        restore=lambda: daemon.plugins.chmod(0o755),
    )
    assert f"Fix: chmod go-w {daemon.plugins}" in record["error"]


def test_a_load_into_a_writable_state_dir_is_refused(
    daemon: DaemonUnderTest, tmp_path: Path
) -> None:
    src = _newer(daemon, tmp_path)
    mode = stat.S_IMODE(daemon.state.stat().st_mode)

    def place(path: Path) -> None:
        daemon.state.chmod(mode | 0o002)
        daemon.drop(src, path.name)

    record = run_placed(
        daemon,
        src.name,
        place,
        f"refusing to trust the state directory {daemon.state}",
        restore=lambda: daemon.state.chmod(mode),
    )
    assert f"Fix: chmod go-w {daemon.state}" in record["error"]


def test_a_fifo_named_like_a_wheel_is_refused_without_hanging(
    daemon: DaemonUnderTest, tmp_path: Path
) -> None:
    name = _newer(daemon, tmp_path).name
    run_placed(daemon, name, os.mkfifo, "not a regular file (a device, FIFO or socket)")


def test_a_directory_named_like_a_wheel_is_refused(daemon: DaemonUnderTest) -> None:
    run_placed(daemon, "zeta-1.0-py3-none-any.whl", os.mkdir, "not a regular file (a directory)")


def test_a_dangling_symlink_is_refused(daemon: DaemonUnderTest, tmp_path: Path) -> None:
    run_placed(
        daemon,
        "eta-1.0-py3-none-any.whl",
        lambda path: path.symlink_to(tmp_path / "missing.whl"),
        "cannot read the file",
    )


# -- start-up -------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["plugins", "state"])
def test_daemon_refuses_to_start_on_an_untrusted_directory(
    good_plugin: GoodPlugin, tmp_path: Path, which: str
) -> None:
    dut = DaemonUnderTest(tmp_path, good_plugin)
    directory = dut.plugins if which == "plugins" else dut.state
    directory.mkdir(exist_ok=True)
    directory.chmod(0o777)
    try:
        dut.start(wait=None)
        assert dut.proc is not None
        code = dut.proc.wait(timeout=60)
        log = dut.text()
        assert code == 1, log
        what = "plugins directory" if which == "plugins" else "state directory"
        assert f"refusing to trust the {what} {directory}" in log, log
        assert f"Fix: chmod go-w {directory}" in log, log
        assert "--insecure-permissions" in log
        assert "Traceback" not in log, log
        dut.wait_until(lambda: not dut.processes(), "nothing left running")
    finally:
        dut.kill()


def test_insecure_permissions_trusts_a_writable_plugins_dir(
    good_plugin: GoodPlugin, tmp_path: Path
) -> None:
    dut = DaemonUnderTest(tmp_path, good_plugin, args=("--insecure-permissions",))
    dut.plugins.chmod(0o777)
    try:
        dut.start()
        dut.assert_serving()
        assert "permission checks are off (--insecure-permissions)" in dut.text()
        dut.stop()
    finally:
        dut.kill()
