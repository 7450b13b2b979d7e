"""compile_plugin end to end with in-process hatchling: wheel content, hash, reproducibility."""

from __future__ import annotations

import email.parser
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from controllerbus.compiler import (
    CompileOptions,
    CompileResult,
    DuplicatePackage,
    InvalidOption,
    SourceChanged,
    codegen,
    compile_plugin,
)
from controllerbus.compiler.build import hatchling_version
from controllerbus.compiler.overlay import write_overlay
from controllerbus.compiler.plan import SOURCE_DATE_EPOCH
from controllerbus.plugin import ENTRY_POINT_GROUP

from .conftest import copy_samples, make_project


def build(target: Path, root: Path, **kwargs: object) -> CompileResult:
    """Compile with private output and codegen dirs under ``root``."""
    options = CompileOptions(
        output_dir=root / "out",
        codegen_dir=root / "codegen",
        **kwargs,  # type: ignore[arg-type]  # forwarded fields of CompileOptions
    )
    return compile_plugin([target], options)


def read_member(wheel: Path, suffix: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(suffix)]
        return zf.read(name).decode()


# --- the wheel ---------------------------------------------------------------------


def test_wheel_content(samples: Path, tmp_path: Path) -> None:
    result = build(samples, tmp_path)
    assert result.rebuilt
    assert result.wheel.parent == tmp_path / "out"
    assert result.wheel.name == f"cbus_plugin_compiler_hello-{result.version}-py3-none-any.whl"
    assert result.version == f"0.1.0+cbus.{result.build_hash[:16]}"
    assert result.sha256 == hashlib.sha256(result.wheel.read_bytes()).hexdigest()
    assert result.binary_id == "compiler-hello"
    assert result.binary_version == f"cbus-hot-{result.build_hash[:16]}"
    assert result.factories == (
        "compiler_hello.echo:new_factory",
        "compiler_hello.hello:new_factory",
    )

    info = f"cbus_plugin_compiler_hello-{result.version}.dist-info"
    with zipfile.ZipFile(result.wheel) as zf:
        assert sorted(zf.namelist()) == sorted(
            [
                "cbus_plugin_compiler_hello.py",
                "compiler_greeting/__init__.py",
                "compiler_hello/__init__.py",
                "compiler_hello/data/greeting.txt",
                "compiler_hello/echo.py",
                "compiler_hello/hello.py",
                "compiler_util.py",
                f"{info}/METADATA",
                f"{info}/WHEEL",
                f"{info}/entry_points.txt",
                f"{info}/RECORD",
            ]
        )
        # Vendored bytes are the source bytes.
        assert (
            zf.read("compiler_util.py")
            == (samples.parent / "compiler-util/compiler_util.py").read_bytes()
        )
        # Every entry: fixed timestamp, mode 0644.
        for entry in zf.infolist():
            assert entry.date_time == (2020, 2, 2, 0, 0, 0)
            assert stat.S_IMODE(entry.external_attr >> 16) == 0o644

    metadata = email.parser.HeaderParser().parsestr(read_member(result.wheel, "METADATA"))
    assert metadata["Name"] == "cbus-plugin-compiler-hello"
    assert metadata["Version"] == result.version
    assert metadata["Requires-Python"] == ">=3.11"
    requires = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    assert [str(r) for r in requires] == [
        'cbus-test-extra>=0.5; python_version >= "3.11"',
        "cbus-test-thirdparty<3,>=1.0",
        "controllerbus",
    ]
    wheel_file = email.parser.HeaderParser().parsestr(read_member(result.wheel, "WHEEL"))
    assert wheel_file["Tag"] == "py3-none-any"
    assert wheel_file["Generator"] == f"hatchling {hatchling_version()}"
    entry_points = read_member(result.wheel, "entry_points.txt")
    assert entry_points.split() == [
        f"[{ENTRY_POINT_GROUP}]",
        "compiler-hello",
        "=",
        "cbus_plugin_compiler_hello:PLUGIN",
    ]


def test_generated_module_loads_from_the_wheel(samples: Path, tmp_path: Path) -> None:
    # A wheel of pure Python is importable as a zip: load the plugin in a fresh
    # interpreter (the host's controllerbus on the path) and list its factories.
    result = build(samples, tmp_path)
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(result.wheel)!r})\n"
        "import cbus_plugin_compiler_hello as m\n"
        "fs = m.PLUGIN.factories(None)\n"
        "print(json.dumps({'id': m.PLUGIN.binary_id, 'version': m.PLUGIN.binary_version,\n"
        "  'hash': m.BUILD_HASH, 'factories': list(m.FACTORIES),\n"
        "  'controllers': [f.controller_id() for f in fs], 'greeting': fs[1].greeting()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == {
        "id": "compiler-hello",
        "version": result.binary_version,
        "hash": result.build_hash,
        "factories": list(result.factories),
        "controllers": ["compiler/echo", "compiler/hello"],
        "greeting": "GREETINGS, HELLO!",
    }


def test_options_name_the_plugin(samples: Path, tmp_path: Path) -> None:
    result = build(
        samples,
        tmp_path,
        binary_id="acme/Hello.World",
        binary_version="v2-{buildHash}-{buildHash}",
        build_prefix="acme_",
    )
    short = result.build_hash[:16]
    assert result.module == "acme_acme_hello_world"
    assert result.distribution == "acme-acme-hello-world"
    assert result.binary_version == f"v2-{short}-{short}"
    assert read_member(result.wheel, "entry_points.txt").split()[1] == "acme/Hello.World"
    assert result.build_hash != build(samples, tmp_path / "default").build_hash


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("binary_id", "=bad"),
        ("binary_id", ""),
        ("binary_id", "has space"),
        ("build_prefix", "1x"),
        ("build_prefix", "a-b"),
        ("binary_version", "line\nbreak"),
    ],
)
def test_invalid_options(samples: Path, tmp_path: Path, option: str, value: str) -> None:
    with pytest.raises(InvalidOption):
        build(samples, tmp_path, **{option: value})


def test_generated_module_must_not_clash_with_a_vendored_package(tmp_path: Path) -> None:
    target = make_project(tmp_path / "app", "app", files={"src/cbus_plugin_app/__init__.py": ""})
    with pytest.raises(DuplicatePackage, match="clashes with the generated plugin module"):
        build(target, tmp_path)


# --- reproducibility ---------------------------------------------------------------


def test_byte_identical_across_paths_times_umasks_and_exec_bits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = os.umask(0o022)
    try:
        first_target = copy_samples(tmp_path / "first" / "checkout")
        os.umask(0o077)
        second_target = copy_samples(tmp_path / "elsewhere" / "deeper" / "checkout")
    finally:
        os.umask(old)
    # Different mtimes, an exec bit, and a host SOURCE_DATE_EPOCH that must not leak.
    for path in (second_target.parent).rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    hello = second_target / "src/compiler_hello/hello.py"
    hello.chmod(0o755)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")

    first = build(first_target, tmp_path / "first")
    old = os.umask(0o077)
    try:
        second = build(second_target, tmp_path / "elsewhere")
    finally:
        os.umask(old)

    assert first.build_hash == second.build_hash
    assert first.wheel.name == second.wheel.name
    assert first.wheel.read_bytes() == second.wheel.read_bytes()
    assert os.environ["SOURCE_DATE_EPOCH"] == "1700000000"  # restored after the build
    with zipfile.ZipFile(second.wheel) as zf:
        assert stat.S_IMODE(zf.getinfo("compiler_hello/hello.py").external_attr >> 16) == 0o644


def test_source_date_epoch_is_fixed() -> None:
    # The archive timestamp (checked in test_wheel_content) is this constant.
    assert SOURCE_DATE_EPOCH == 1580601600


# --- the build hash ----------------------------------------------------------------


def test_one_byte_in_a_transitive_dependency_changes_the_hash(
    samples: Path, tmp_path: Path
) -> None:
    before = build(samples, tmp_path)
    util = samples.parent / "compiler-util" / "compiler_util.py"
    util.write_bytes(util.read_bytes().replace(b"!", b"?"))
    after = build(samples, tmp_path)
    assert after.rebuilt
    assert after.build_hash != before.build_hash
    with zipfile.ZipFile(after.wheel) as zf:
        assert b'"?"' in zf.read("compiler_util.py")


def test_touching_files_changes_nothing(samples: Path, tmp_path: Path) -> None:
    before = build(samples, tmp_path)
    for path in samples.parent.rglob("*"):
        os.utime(path, (2_000_000_000, 2_000_000_000))
    (samples / "src/compiler_hello/echo.py").chmod(0o700)
    after = build(samples, tmp_path)
    assert after.build_hash == before.build_hash
    assert not after.rebuilt


@pytest.mark.parametrize(
    "edit",
    [
        "pyproject-requirement",
        "new-module",
        "removed-module",
        "data-file",
        "dependency-pyproject",
    ],
)
def test_every_kind_of_input_change_changes_the_hash(
    samples: Path, tmp_path: Path, edit: str
) -> None:
    before = build(samples, tmp_path)
    package = samples / "src/compiler_hello"
    if edit == "pyproject-requirement":
        path = samples / "pyproject.toml"
        path.write_text(
            path.read_text().replace('"cbus-test-thirdparty>=1.0"', '"cbus-test-thirdparty>=1.1"')
        )
    elif edit == "new-module":
        (package / "extra.py").write_text("")
    elif edit == "removed-module":
        (package / "echo.py").unlink()
    elif edit == "data-file":
        (package / "data/greeting.txt").write_text("changed\n")
    else:
        path = samples.parent / "compiler-greeting/pyproject.toml"
        path.write_text(path.read_text().replace(">=0.5", ">=0.6"))
    after = build(samples, tmp_path)
    assert after.build_hash != before.build_hash
    names = zipfile.ZipFile(after.wheel).namelist()
    assert ("compiler_hello/extra.py" in names) is (edit == "new-module")
    assert ("compiler_hello/echo.py" in names) is (edit != "removed-module")


# --- no-op, overlay, cleanup -------------------------------------------------------


def test_noop_compile_builds_nothing(samples: Path, tmp_path: Path) -> None:
    first = build(samples, tmp_path)
    wheel_stat = first.wheel.stat()
    overlay_py = tmp_path / "codegen/src/compiler_util.py"
    overlay_stat = overlay_py.stat()
    shutil.rmtree(tmp_path / "codegen" / "src" / "compiler_hello")  # codegen is not even read

    second = build(samples, tmp_path)
    assert not second.rebuilt
    assert second.wheel == first.wheel
    assert second.sha256 == first.sha256
    assert second.wheel.stat().st_mtime_ns == wheel_stat.st_mtime_ns
    assert second.wheel.stat().st_ino == wheel_stat.st_ino
    assert overlay_py.stat().st_mtime_ns == overlay_stat.st_mtime_ns
    assert not (tmp_path / "codegen" / "src" / "compiler_hello").exists()


def test_overlay_writes_only_changed_files_and_removes_stale_ones(
    samples: Path, tmp_path: Path
) -> None:
    first = codegen([samples], CompileOptions(codegen_dir=tmp_path / "cg"))
    assert (first.stats.written, first.stats.unchanged, first.stats.removed) == (8, 0, 0)
    overlay = tmp_path / "cg"
    assert (overlay / "pyproject.toml").is_file()
    assert (overlay / "src/cbus_plugin_compiler_hello.py").is_file()
    assert all(
        stat.S_IMODE(p.stat().st_mode) == 0o644 for p in (overlay / "src").rglob("*") if p.is_file()
    )
    kept = overlay / "src/compiler_util.py"
    kept_mtime = kept.stat().st_mtime_ns

    (samples / "src/compiler_hello/echo.py").unlink()
    (overlay / "src/leftover.py").write_text("")  # foreign file: removed too
    second = codegen([samples], CompileOptions(codegen_dir=overlay))
    # pyproject (version) and the plugin module (hash, factories) change; echo.py and
    # the foreign file go; the other five vendored files are untouched.
    assert (second.stats.written, second.stats.unchanged, second.stats.removed) == (2, 5, 2)
    assert not (overlay / "src/compiler_hello/echo.py").exists()
    assert kept.stat().st_mtime_ns == kept_mtime
    assert "hatchling==" + hatchling_version() in (overlay / "pyproject.toml").read_text()


def test_overlay_refuses_a_source_changed_after_analysis(samples: Path, tmp_path: Path) -> None:
    result = codegen([samples], CompileOptions(codegen_dir=tmp_path / "cg"))
    source = samples / "src/compiler_hello/hello.py"
    source.write_text("changed = True\n")
    shutil.rmtree(tmp_path / "cg")
    with pytest.raises(SourceChanged) as info:
        write_overlay(result.plan, tmp_path / "cg")
    assert info.value.path == source


def test_cleanup_removes_older_wheels_of_the_same_plugin_only(
    samples: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    unrelated = [
        out / "cbus_plugin_compiler_hello_world-1.0-py3-none-any.whl",
        out / "cbus_plugin_compiler_hello-1.0-py3-none-any.whl.part",
        out / "other-1.0-py3-none-any.whl",
    ]
    for path in unrelated:
        path.write_bytes(b"")
    first = build(samples, tmp_path)
    (samples / "src/compiler_hello/extra.py").write_text("")
    kept = build(samples, tmp_path, cleanup=False)
    assert first.wheel.exists()
    assert kept.wheel.exists()
    assert kept.removed == ()
    (samples / "src/compiler_hello/extra.py").write_text("x = 1\n")
    third = build(samples, tmp_path)
    assert sorted(third.removed) == sorted([first.wheel, kept.wheel])
    assert sorted(out.iterdir()) == sorted([third.wheel, *unrelated])
    assert not list(out.glob(".cbus-build-*"))


def test_failed_build_leaves_no_partial_wheel(
    samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controllerbus.compiler import BuildFailed, api

    def explode(overlay: Path, directory: Path, *, isolated: bool = False) -> Path:
        (directory / "half.whl").write_bytes(b"PK")
        raise BuildFailed(overlay, "boom")

    monkeypatch.setattr(api, "build_wheel", explode)
    with pytest.raises(BuildFailed, match="build failed: boom"):
        build(samples, tmp_path)
    assert list((tmp_path / "out").iterdir()) == []


def test_default_codegen_dir_is_under_the_working_directory(
    samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = compile_plugin([samples], CompileOptions())
    assert result.codegen_dir == tmp_path / ".cbus-codegen" / "cbus-plugin-compiler-hello"
    assert result.wheel.parent == tmp_path / "dist-plugins"
    assert (result.codegen_dir / "pyproject.toml").is_file()


def test_importing_the_compiler_does_not_import_the_build_tools() -> None:
    code = (
        "import sys, controllerbus.compiler\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('hatchling', 'build', 'watchfiles', 'click', 'pathspec', 'setuptools_scm')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_overlay_survives_a_lost_manifest_and_repairs_tampering(
    samples: Path, tmp_path: Path
) -> None:
    from controllerbus.compiler.overlay import MANIFEST_NAME

    overlay = tmp_path / "cg"
    codegen([samples], CompileOptions(codegen_dir=overlay))
    (overlay / MANIFEST_NAME).unlink()
    again = codegen([samples], CompileOptions(codegen_dir=overlay))
    assert (again.stats.written, again.stats.removed) == (0, 0)  # compared by content

    tampered = overlay / "src/compiler_util.py"
    tampered.write_text("tampered = True\n")
    chmodded = overlay / "src/compiler_hello/echo.py"
    chmodded.chmod(0o755)
    (overlay / MANIFEST_NAME).write_text("{not json")
    repaired = codegen([samples], CompileOptions(codegen_dir=overlay))
    assert repaired.stats.written == 2
    assert tampered.read_bytes() == (samples.parent / "compiler-util/compiler_util.py").read_bytes()
    assert stat.S_IMODE(chmodded.stat().st_mode) == 0o644


def test_in_process_build_leaves_the_environment_as_it_was(
    samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    cwd = Path.cwd()
    build(samples, tmp_path)
    assert "SOURCE_DATE_EPOCH" not in os.environ
    assert Path.cwd() == cwd
