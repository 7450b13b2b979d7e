"""verify_wheel: a real wheel passes; each broken variant fails with a clear message."""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.tags import Tag
from packaging.version import Version

from controllerbus.errors import LoaderError
from controllerbus.loader import InvalidWheel, build_hash_of, verify_wheel
from controllerbus.loader.members import WheelLimits
from controllerbus.loader.members import member_name_issues as _member_name_issues

from .wheelkit import corrupt_member, dist_info_of, repack, snapshot

DIST = "cbus_loader_hello-1.0.0+cbus.0123456789abcdef"
DATA = f"{DIST}.data"
ENTRY_POINTS = f"{DIST}.dist-info/entry_points.txt"
WHEEL = f"{DIST}.dist-info/WHEEL"
PLUGIN_PY = "cbus_loader_hello/plugin.py"


def test_good_wheel_is_described(hello_wheel: Path) -> None:
    verified = verify_wheel(hello_wheel)
    assert verified.name == "cbus-loader-hello"
    assert verified.version == Version("1.0.0+cbus.0123456789abcdef")
    assert verified.build_hash == "0123456789abcdef"
    assert verified.entry_point_map == {"hello": "cbus_loader_hello.plugin:PLUGIN"}
    assert verified.top_level == ("cbus_loader_hello", "cbusns_shared")
    assert verified.requires_dist == ("click>=8", "pytest-nonexistent-extra; python_version < '3'")
    assert verified.tags == {Tag("py3", "none", "any")}
    assert verified.dist_info == f"{DIST}.dist-info"
    assert len(verified.sha256) == 64
    assert verified.size == hello_wheel.stat().st_size
    paths = [item.path for item in verified.records]
    assert PLUGIN_PY in paths
    assert paths[-1] == f"{DIST}.dist-info/RECORD"


def test_build_hash_of() -> None:
    assert build_hash_of("1.0+cbus.abc123") == "abc123"
    assert build_hash_of("1.0+local.abc") == ""
    assert build_hash_of("1.0") == ""


Mutation = Callable[[Path, Path], Path]


def _truncate(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return dst


def _rename(new_name: str) -> Mutation:
    def mutate(src: Path, dst: Path) -> Path:
        target = dst.with_name(new_name)
        shutil.copyfile(src, target)
        return target

    return mutate


def _variant(**kwargs: object) -> Mutation:
    def mutate(src: Path, dst: Path) -> Path:
        return repack(src, dst, **kwargs)  # type: ignore[arg-type]  # test table of kwargs

    return mutate


BAD_WHEELS: list[tuple[str, Mutation, str]] = [
    ("truncated", _truncate, "not a valid zip archive"),
    ("bad-crc", lambda s, d: corrupt_member(s, d, PLUGIN_PY), f"'{PLUGIN_PY}' is corrupt"),
    (
        "record-hash-mismatch",
        _variant(replace={PLUGIN_PY: b"PLUGIN = None\n"}, fix_record=False),
        f"'{PLUGIN_PY}': content does not match its RECORD hash/size",
    ),
    (
        "member-not-in-record",
        _variant(add={"cbus_loader_hello/extra.py": b"X = 1\n"}, fix_record=False),
        "'cbus_loader_hello/extra.py' is not listed in RECORD",
    ),
    (
        "record-lists-missing-member",
        _variant(remove={"cbus_loader_hello/sub/deep.py"}, fix_record=False),
        "RECORD lists 'cbus_loader_hello/sub/deep.py', which the archive does not contain",
    ),
    ("path-traversal", _variant(add={"../evil.py": b""}), "path traversal"),
    (
        "nested-traversal",
        _variant(add={"cbus_loader_hello/../../evil.py": b""}),
        "path traversal",
    ),
    ("absolute-path", _variant(add={"/tmp/evil.py": b""}), "absolute member path"),
    ("backslash", _variant(add={"cbus_loader_hello\\..\\evil.py": b""}), "backslash"),
    (
        "outside-layout-file",
        _variant(add={"LICENSE": b"MIT"}),
        "'LICENSE': outside the plugin layout",
    ),
    ("pth-file", _variant(add={"evil.pth": b"import os"}), "'evil.pth': outside the plugin layout"),
    (
        "non-identifier-dir",
        _variant(add={"my-data/file.txt": b""}),
        "top-level directory 'my-data' is not a Python package name",
    ),
    (
        "reserved-controllerbus",
        _variant(add={"controllerbus/__init__.py": b""}),
        "ships the 'controllerbus' package, which the host owns",
    ),
    (
        "pycache",
        _variant(add={"cbus_loader_hello/__pycache__/x.cpython-311.pyc": b""}),
        "__pycache__ in a wheel",
    ),
    (
        "data-scheme",
        _variant(add={f"{DATA}/data/etc/conf": b""}),
        ".data/data is not supported",
    ),
    (
        "data-duplicates-root",
        _variant(add={f"{DATA}/purelib/{PLUGIN_PY}": b""}),
        "installs to the same path as another member",
    ),
    (
        "symlink",
        _variant(
            add={"cbus_loader_hello/link.py": b"/etc/passwd"},
            modes={"cbus_loader_hello/link.py": stat.S_IFLNK | 0o777},
        ),
        "symbolic link",
    ),
    (
        "duplicate-member",
        _variant(add={PLUGIN_PY: b"X = 2\n"}),
        f"'{PLUGIN_PY}': duplicate member",
    ),
    (
        "missing-entry-point",
        _variant(replace={ENTRY_POINTS: b"[console_scripts]\nx = cbus_loader_hello.plugin:main\n"}),
        "no entry point in group 'controllerbus.plugins'",
    ),
    (
        "no-entry-points-file",
        _variant(remove={ENTRY_POINTS}),
        "no entry_points.txt",
    ),
    (
        "entry-point-outside-wheel",
        _variant(replace={ENTRY_POINTS: b"[controllerbus.plugins]\nhello = json:dumps\n"}),
        "names module 'json', which this wheel does not ship",
    ),
    (
        "entry-point-missing-module",
        _variant(
            replace={ENTRY_POINTS: b"[controllerbus.plugins]\nhello = cbus_loader_hello.nope:X\n"}
        ),
        "names module 'cbus_loader_hello.nope', which this wheel does not ship",
    ),
    (
        "entry-point-malformed",
        _variant(replace={ENTRY_POINTS: b"[controllerbus.plugins]\nhello = not a module\n"}),
        "is not of the form 'module:attr'",
    ),
    (
        "non-purelib",
        _variant(
            replace={
                WHEEL: b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                b"Tag: py3-none-any\n"
            }
        ),
        "platform (non-pure) wheels are not supported",
    ),
    (
        "wheel-version-2",
        _variant(replace={WHEEL: b"Wheel-Version: 2.0\nRoot-Is-Purelib: true\n"}),
        "Wheel-Version '2.0' is not supported",
    ),
    (
        "name-mismatch",
        _rename("other_plugin-1.0.0+cbus.0123456789abcdef-py3-none-any.whl"),
        "does not match the filename's distribution 'other-plugin'",
    ),
    (
        "version-mismatch",
        _rename("cbus_loader_hello-2.0-py3-none-any.whl"),
        "does not match the filename's version 2.0",
    ),
    ("invalid-filename", _rename("plugin.zip"), "does not end in .whl"),
    ("invalid-wheel-name", _rename("plugin-x.whl"), "invalid wheel filename"),
    (
        "unsupported-tag",
        _rename(f"{DIST}-cp27-cp27mu-manylinux1_x86_64.whl"),
        "are not supported by the target interpreter",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [pytest.param(m, e, id=case) for case, m, e in BAD_WHEELS],
)
def test_bad_wheel_rejected_and_nothing_written(
    hello_wheel: Path, tmp_path: Path, mutate: Mutation, expected: str
) -> None:
    bad = mutate(hello_wheel, tmp_path / hello_wheel.name)
    before = snapshot(tmp_path)
    with pytest.raises(InvalidWheel) as caught:
        verify_wheel(bad)
    message = str(caught.value)
    assert expected in message, message
    assert str(bad) in message
    assert "nothing was installed" in message
    assert any(expected in issue for issue in caught.value.issues)
    assert isinstance(caught.value, LoaderError)
    assert snapshot(tmp_path) == before


def test_all_issues_are_reported_at_once(hello_wheel: Path, tmp_path: Path) -> None:
    bad = repack(
        hello_wheel,
        tmp_path / hello_wheel.name,
        add={"LICENSE": b"x", "../evil.py": b"", "cbus_loader_hello/new.py": b""},
        replace={ENTRY_POINTS: b"[other]\nx = a:b\n"},
    )
    with pytest.raises(InvalidWheel) as caught:
        verify_wheel(bad)
    issues = "\n".join(caught.value.issues)
    for expected in ("outside the plugin layout", "path traversal", "no entry point in group"):
        assert expected in issues


def test_missing_file_is_invalid_wheel(tmp_path: Path) -> None:
    with pytest.raises(InvalidWheel, match="cannot read the file"):
        verify_wheel(tmp_path / "absent-1.0-py3-none-any.whl")


def test_data_scripts_and_purelib_are_allowed(hello_wheel: Path, tmp_path: Path) -> None:
    good = repack(
        hello_wheel,
        tmp_path / hello_wheel.name,
        add={
            f"{DATA}/scripts/hello-tool": b"#!python\nprint('hi')\n",
            f"{DATA}/purelib/cbus_loader_hello/extra.py": b"X = 1\n",
        },
    )
    verified = verify_wheel(good)
    assert "cbus_loader_hello/extra.py" not in [r.path for r in verified.records]
    assert f"{DATA}/purelib/cbus_loader_hello/extra.py" in [r.path for r in verified.records]


def test_multiple_entry_points_allowed(hello_wheel: Path, tmp_path: Path) -> None:
    text = (
        b"[controllerbus.plugins]\nb = cbus_loader_hello.plugin:PLUGIN\na = cbus_loader_hello:X\n"
    )
    good = repack(hello_wheel, tmp_path / hello_wheel.name, replace={ENTRY_POINTS: text})
    assert verify_wheel(good).entry_point_map == {
        "a": "cbus_loader_hello:X",
        "b": "cbus_loader_hello.plugin:PLUGIN",
    }


def test_dist_info_of_helper_matches(hello_wheel: Path) -> None:
    assert dist_info_of(hello_wheel) == f"{DIST}.dist-info"


# --- member names: property tests -------------------------------------------------

_component = st.sampled_from(["a", "pkg", "..", ".", "", "x.py", "C:", "b\\c", "d\x00", " "])
_names = st.one_of(
    st.lists(_component, min_size=1, max_size=5).map("/".join),
    st.lists(_component, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts)),
    st.text(alphabet="a./\\:C\x00", max_size=12),
)


@given(name=_names)
def test_accepted_names_cannot_escape(name: str) -> None:
    if _member_name_issues(name):
        return
    root = "/srv/generation"
    joined = os.path.abspath(os.path.join(root, name))
    assert joined.startswith(root + "/")
    stripped = name.rstrip("/")
    assert posixpath.normpath(stripped) == stripped
    assert "\\" not in name


@given(parts=st.lists(st.sampled_from(["a", "b.py", "pkg"]), max_size=3), tail=_component)
def test_dotdot_component_always_rejected(parts: list[str], tail: str) -> None:
    name = "/".join([*parts, "..", tail])
    assert any("traversal" in issue for issue in _member_name_issues(name))


@given(
    parts=st.lists(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), min_size=1, max_size=4)
)
def test_plain_names_accepted(parts: list[str]) -> None:
    assert _member_name_issues("/".join(parts)) == []


def test_unpacked_size_limit(hello_wheel: Path, tmp_path: Path) -> None:
    # Compresses to almost nothing, unpacks to 1 MB: the shape of a zip bomb.
    bomb = repack(
        hello_wheel, tmp_path / hello_wheel.name, add={"cbus_loader_hello/zeros.bin": bytes(2**20)}
    )
    assert bomb.stat().st_size < 50_000
    with pytest.raises(InvalidWheel, match=r"unpacks to .* more than the limit of 50000"):
        verify_wheel(bomb, limits=WheelLimits(unpacked_bytes=50_000))


def test_supported_tags_can_be_given(hello_wheel: Path) -> None:
    with pytest.raises(InvalidWheel, match="not supported by the target interpreter"):
        verify_wheel(hello_wheel, supported_tags=[Tag("cp312", "cp312", "win_amd64")])
    assert verify_wheel(hello_wheel, supported_tags=[Tag("py3", "none", "any")]).tags


@pytest.mark.parametrize("name", ["class/__init__.py", "def.py"])
def test_keyword_top_level_rejected(hello_wheel: Path, tmp_path: Path, name: str) -> None:
    bad = repack(hello_wheel, tmp_path / hello_wheel.name, add={name: b""})
    with pytest.raises(InvalidWheel, match=r"not a Python package name|outside the plugin layout"):
        verify_wheel(bad)


def test_file_size_limit_checked_before_reading(hello_wheel: Path) -> None:
    limit = hello_wheel.stat().st_size - 1
    with pytest.raises(InvalidWheel, match=f"larger than the limit of {limit} bytes"):
        verify_wheel(hello_wheel, limits=WheelLimits(wheel_bytes=limit))
