"""Every file in the plugins directory is a wheel or rejected with a reason; trust wiring."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from packaging.tags import Tag

from controllerbus.cli.main import format_manifest
from controllerbus.core import new_core_bus
from controllerbus.loader.candidates import classify, scan_candidates, wheel_name_issue
from controllerbus.loader.errors import InsecurePath
from controllerbus.loader.filesystem import (
    FilesystemLoaderConfig,
    FilesystemLoaderController,
    new_filesystem_loader_factory,
)
from controllerbus.loader.host import PluginHost
from controllerbus.loader.manifest import read_manifest, wheel_key
from controllerbus.loader.members import WheelLimits
from controllerbus.loader.state import StateDir

from .pluginkit import PluginProjects, write_projects

if TYPE_CHECKING:
    from controllerbus.compiler import CompileResult

PREFIX = "cbt_cand"
GOOD_NAME = "alpha-1.0-py3-none-any.whl"


def _write(path: Path, data: bytes = b"PK\x03\x04rest") -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "kind", "says"),
    [
        (GOOD_NAME, "wheel", ""),
        (".alpha-1.0-py3-none-any.whl", "ignored", "hidden or temporary"),
        ("alpha-1.0-py3-none-any.whl.part", "ignored", "hidden or temporary"),
        ("alpha-1.0-py3-none-any.whl~", "ignored", "hidden or temporary"),
        ("README.md", "rejected", "does not end in .whl"),
        ("alpha-1.0.tar.gz", "rejected", "does not end in .whl"),
        ("notawheel.whl", "rejected", "invalid wheel filename"),
        ("alpha-py3-none-any.whl", "rejected", "invalid wheel filename"),
        ("alpha-1.0-cp27-cp27mu-manylinux1_x86_64.whl", "rejected", "not supported"),
    ],
)
def test_classify_by_name(tmp_path: Path, name: str, kind: str, says: str) -> None:
    candidate = classify(_write(tmp_path / name))
    assert (candidate.kind, candidate.path.name) == (kind, name)
    assert says in candidate.reason


def test_classify_by_content_and_type(tmp_path: Path) -> None:
    not_zip = classify(_write(tmp_path / GOOD_NAME, b"<html>404</html>"))
    assert (not_zip.kind, not_zip.distribution, not_zip.regular) == ("rejected", "alpha", True)
    assert "not a zip archive" in not_zip.reason
    big = classify(
        _write(tmp_path / "beta-1.0-py3-none-any.whl"), limits=WheelLimits(wheel_bytes=4)
    )
    assert "larger than the limit of 4 bytes" in big.reason
    (tmp_path / "gamma-1.0-py3-none-any.whl").mkdir()
    directory = classify(tmp_path / "gamma-1.0-py3-none-any.whl")
    assert (directory.kind, directory.regular) == ("rejected", False)
    assert "a directory" in directory.reason
    os.mkfifo(tmp_path / "delta-1.0-py3-none-any.whl")
    assert "FIFO" in classify(tmp_path / "delta-1.0-py3-none-any.whl").reason
    (tmp_path / "eps-1.0-py3-none-any.whl").symlink_to(tmp_path / "missing")
    assert classify(tmp_path / "eps-1.0-py3-none-any.whl").reason == "a symbolic link to nothing"


def test_scan_classifies_every_entry_sorted(tmp_path: Path) -> None:
    _write(tmp_path / GOOD_NAME)
    _write(tmp_path / "README.md")
    _write(tmp_path / ".hidden")
    found = scan_candidates(tmp_path)
    assert [(c.path.name, c.kind) for c in found] == [
        (".hidden", "ignored"),
        ("README.md", "rejected"),
        (GOOD_NAME, "wheel"),
    ]


def test_name_issue_follows_the_given_tags() -> None:
    assert wheel_name_issue(GOOD_NAME, [Tag("py3", "none", "any")]) is None
    assert "not supported" in (wheel_name_issue(GOOD_NAME, [Tag("cp39", "cp39", "win32")]) or "")


# -- through the filesystem loader and the host -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wheels:
    projects: PluginProjects
    v1: CompileResult
    v2: CompileResult


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Wheels:
    root = tmp_path_factory.mktemp("cand-plugins")
    projects = write_projects(root / "projects", PREFIX)
    v1 = projects.compile(root / "v1")
    projects.set_greeting("howdy")
    v2 = projects.compile(root / "v2")
    return Wheels(projects, v1, v2)


@contextlib.asynccontextmanager
async def plugin_host(tmp_path: Path, *, insecure: bool = False) -> AsyncIterator[PluginHost]:
    bus, _static = new_core_bus()
    async with bus:
        with StateDir(tmp_path / "state") as state:
            host = PluginHost(bus, state, insecure_permissions=insecure)
            try:
                yield host
            finally:
                await host.aclose()


def _plugins_dir(tmp_path: Path) -> Path:
    plugins = tmp_path / "plugins"
    plugins.mkdir(mode=0o755)
    return plugins


async def test_non_wheel_files_are_rejected_recorded_and_listed(
    wheels: Wheels, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = _plugins_dir(tmp_path)
    good = Path(shutil.copy(wheels.v1.wheel, plugins / wheels.v1.wheel.name))
    rejected = {
        "README.md": "does not end in .whl",
        "notawheel.whl": "invalid wheel filename",
        "zeta-1.0-py3-none-any.whl": "not a regular file (a directory)",
        "omega-1.0-py3-none-any.whl": "not a valid zip archive",
        "alpha-1.0-cp27-cp27mu-manylinux1_x86_64.whl": "not supported",
    }
    _write(plugins / "README.md", b"hello")
    _write(plugins / "notawheel.whl")
    (plugins / "zeta-1.0-py3-none-any.whl").mkdir()
    _write(plugins / "omega-1.0-py3-none-any.whl", b"<html>")
    _write(plugins / "alpha-1.0-cp27-cp27mu-manylinux1_x86_64.whl")
    _write(plugins / ".part-of-a-copy.tmp", b"ignored")
    async with plugin_host(tmp_path) as host:
        ctrl = FilesystemLoaderController(host, plugins)
        with caplog.at_level(logging.WARNING):
            await ctrl.sync()
        assert list(ctrl.loaded) == [good]
        assert host.active() == {wheels.projects.binary_id: wheels.v1.sha256}
        manifest = read_manifest(tmp_path / "state")
        for name, says in rejected.items():
            record = manifest.get(wheel_key(name))
            assert record is not None, name
            assert record.status == "rejected", name
            assert record.error is not None
            assert says in record.error, (name, record.error)
            assert any(
                name in r.getMessage() and r.levelno >= logging.WARNING for r in caplog.records
            )
        assert manifest.get(wheel_key(".part-of-a-copy.tmp")) is None
        table = format_manifest(manifest.plugins)
        assert re.search(r"^wheel:README\.md +rejected ", table, re.MULTILINE), table
        assert "    rejected: " in table

        # Unchanged rejected files are not offered again; a changed one is.
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            await ctrl.sync()
        assert not [r for r in caplog.records if "rejected" in r.getMessage()]
        _write(plugins / "README.md", b"hello again, longer")
        with caplog.at_level(logging.WARNING):
            await ctrl.sync()
        assert [r for r in caplog.records if "README.md rejected" in r.getMessage()]


async def test_writable_state_dir_refused_unless_insecure(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state").chmod(0o777)
    with pytest.raises(InsecurePath, match=f"chmod go-w {tmp_path / 'state'}"):
        async with plugin_host(tmp_path):
            pass
    async with plugin_host(tmp_path, insecure=True) as host:
        assert not host.strict_permissions


async def test_writable_plugins_dir_refused_at_loader_start(tmp_path: Path) -> None:
    plugins = _plugins_dir(tmp_path)
    plugins.chmod(0o775)
    async with plugin_host(tmp_path) as host:
        factory = new_filesystem_loader_factory(host)
        config = FilesystemLoaderConfig(dir=str(plugins))
        with pytest.raises(InsecurePath, match=f"chmod go-w {plugins}"):
            factory.construct(config, None)  # type: ignore[arg-type]  # opts unused


async def test_writable_wheel_refused_old_generation_serves(wheels: Wheels, tmp_path: Path) -> None:
    plugins = _plugins_dir(tmp_path)
    async with plugin_host(tmp_path) as host:
        ctrl = FilesystemLoaderController(host, plugins)
        Path(shutil.copy(wheels.v1.wheel, plugins / wheels.v1.wheel.name))
        await ctrl.sync()
        v2 = Path(shutil.copy(wheels.v2.wheel, plugins / wheels.v2.wheel.name))
        os.chmod(v2, 0o666)
        await ctrl.sync()
        bid = wheels.projects.binary_id
        assert host.active() == {bid: wheels.v1.sha256}
        assert host.manifest.get(bid) is not None
        # Refused before its binary id was read: recorded by file name.
        record = host.manifest.get(wheel_key(v2))
        assert record is not None
        assert record.status == "rejected"
        assert record.error is not None
        assert "it is writable by group and others (mode 0666)" in record.error
        assert f"Fix: chmod go-w {v2}" in record.error
        os.chmod(v2, 0o644)
        await ctrl.sync()
        assert host.active() == {bid: wheels.v2.sha256}


async def test_a_new_state_dir_is_trusted_under_a_group_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        async with plugin_host(tmp_path) as host:
            assert host.strict_permissions
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o755
