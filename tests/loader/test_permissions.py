"""File trust (StrictModes): directories and wheels others could write are refused."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from controllerbus.loader import verify_wheel
from controllerbus.loader.errors import InsecurePath
from controllerbus.loader.permissions import check_directory, open_checked

OTHER_UID = 54_321
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``tmp_path/a/b`` with safe modes (the test changes one of them)."""
    leaf = tmp_path / "a" / "b"
    leaf.mkdir(parents=True)
    for path in (tmp_path / "a", leaf):
        path.chmod(0o755)
    return leaf


def test_safe_directory_passes(tree: Path) -> None:
    check_directory(tree, "plugins directory")


@pytest.mark.parametrize(
    ("mode", "by"),
    [
        (0o775, "group"),
        (0o757, "others"),
        (0o777, "group and others"),
        (0o1777, "group and others"),
    ],
)
def test_writable_directory_refused_with_the_chmod(tree: Path, mode: int, by: str) -> None:
    tree.chmod(mode)
    with pytest.raises(InsecurePath) as info:
        check_directory(tree, "plugins directory")
    message = str(info.value)
    assert info.value.path == tree
    assert f": it is writable by {by} (mode {mode:04o})" in message
    assert f"Fix: chmod go-w {tree}" in message
    assert "--insecure-permissions" in message
    assert message.startswith(f"refusing to trust the plugins directory {tree}:")


def test_writable_parent_is_named(tree: Path) -> None:
    parent = tree.parent
    parent.chmod(0o777)
    with pytest.raises(InsecurePath) as info:
        check_directory(tree, "state directory")
    assert info.value.path == parent
    assert f"its parent directory {parent} is writable by group and others" in str(info.value)
    assert info.value.fix == f"chmod go-w {parent}"


def test_sticky_parent_is_trusted(tree: Path) -> None:
    tree.parent.chmod(0o1777)  # like /tmp: others cannot rename or remove our entries
    check_directory(tree, "plugins directory")


def test_path_with_spaces_is_quoted_in_the_fix(tmp_path: Path) -> None:
    odd = tmp_path / "my plugins"
    odd.mkdir(mode=0o777)
    odd.chmod(0o777)
    with pytest.raises(InsecurePath) as info:
        check_directory(odd, "plugins directory")
    assert info.value.fix == f"chmod go-w '{odd}'"


@needs_root
def test_directory_owned_by_another_user_refused_with_the_chown(tree: Path) -> None:
    os.chown(tree, OTHER_UID, -1)
    with pytest.raises(InsecurePath) as info:
        check_directory(tree, "plugins directory")
    assert f"owned by {OTHER_UID} (uid {OTHER_UID})" in str(info.value)
    assert info.value.fix == f"chown root {tree}"


def test_symlinked_directory_checks_the_target(tree: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tree)
    tree.chmod(0o777)
    with pytest.raises(InsecurePath) as info:
        check_directory(link, "plugins directory")
    assert info.value.path == tree
    assert f"plugins directory {link} (-> {tree})" in str(info.value)


def test_wheel_writable_by_others_refused_only_when_strict(hello_wheel: Path, tree: Path) -> None:
    wheel = Path(shutil.copy(hello_wheel, tree / hello_wheel.name))
    wheel.chmod(0o666)
    assert verify_wheel(wheel).name == "cbus-loader-hello"
    with pytest.raises(InsecurePath) as info:
        verify_wheel(wheel, strict_permissions=True)
    assert info.value.fix == f"chmod go-w {wheel}"
    wheel.chmod(0o644)
    assert verify_wheel(wheel, strict_permissions=True).name == "cbus-loader-hello"


def test_wheel_in_a_writable_directory_refused(hello_wheel: Path, tree: Path) -> None:
    wheel = Path(shutil.copy(hello_wheel, tree / hello_wheel.name))
    tree.chmod(0o770)
    with pytest.raises(InsecurePath, match=f"its parent directory {tree} is writable by group"):
        verify_wheel(wheel, strict_permissions=True)


@needs_root
def test_wheel_owned_by_another_user_refused(hello_wheel: Path, tree: Path) -> None:
    wheel = Path(shutil.copy(hello_wheel, tree / hello_wheel.name))
    os.chown(wheel, OTHER_UID, -1)
    with pytest.raises(InsecurePath, match="chown root"):
        verify_wheel(wheel, strict_permissions=True)


def test_symlinked_wheel_checks_the_real_file(
    hello_wheel: Path, tree: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o777)
    elsewhere.chmod(0o777)
    real = Path(shutil.copy(hello_wheel, elsewhere / hello_wheel.name))
    (tree / hello_wheel.name).symlink_to(real)
    with pytest.raises(InsecurePath) as info:
        verify_wheel(tree / hello_wheel.name, strict_permissions=True)
    assert info.value.path == elsewhere


def test_check_is_on_the_descriptor_that_is_read(hello_wheel: Path, tree: Path) -> None:
    wheel = Path(shutil.copy(hello_wheel, tree / hello_wheel.name))
    fd, st = open_checked(wheel, strict=True)
    try:
        # Swapping the path after the check does not change what the descriptor reads.
        wheel.rename(tree / "old.whl")
        (tree / hello_wheel.name).write_bytes(b"swapped")
        assert os.fstat(fd).st_ino == st.st_ino
        assert os.read(fd, 4) == b"PK\x03\x04"
        assert stat.S_ISREG(st.st_mode)
    finally:
        os.close(fd)


def test_component_swapped_for_a_symlink_is_caught(tree: Path, tmp_path: Path) -> None:
    # A path whose resolved form contains a symlink (as if swapped in after realpath):
    # O_NOFOLLOW refuses to walk through it.
    from controllerbus.loader.permissions import _walk

    target = tmp_path / "target"
    target.mkdir()
    swapped = tree / "swapped"
    swapped.symlink_to(target)
    with pytest.raises(InsecurePath, match="changed into a symbolic link"):
        os.close(_walk(swapped, "plugins directory"))
