"""``verify_wheel`` / ``cbus-compile verify``: a wheel is exactly what its sources compile to."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from controllerbus.compiler import CompileOptions, VerifyFailed, compile_plugin, verify_wheel


def _compile(target: Path, out: Path, **naming: str) -> Path:
    options = CompileOptions(output_dir=out, codegen_dir=out / "cg", **naming)  # type: ignore[arg-type]
    return compile_plugin([target], options).wheel


def test_verify_accepts_the_wheel_its_sources_compile_to(samples: Path, tmp_path: Path) -> None:
    wheel = _compile(samples, tmp_path / "out")
    result = verify_wheel(wheel, [samples])
    assert result.wheel.name == wheel.name


def test_verify_reads_custom_naming_back_from_the_wheel(samples: Path, tmp_path: Path) -> None:
    wheel = _compile(
        samples,
        tmp_path / "out",
        binary_id="acme/hello",
        binary_version="v7-{buildHash}-x",
        build_prefix="acme_",
    )
    assert verify_wheel(wheel, [samples]).binary_version.startswith("v7-")


def test_verify_fails_when_a_source_changed(samples: Path, tmp_path: Path) -> None:
    wheel = _compile(samples, tmp_path / "out")
    module = next(samples.rglob("hello.py"))
    module.write_text(module.read_text() + "\nCHANGED = True\n")
    with pytest.raises(VerifyFailed, match="another build hash") as info:
        verify_wheel(wheel, [samples])
    assert any("content differs" in line for line in info.value.differences)


def test_verify_fails_on_a_tampered_member(samples: Path, tmp_path: Path) -> None:
    wheel = _compile(samples, tmp_path / "out")
    tampered = tmp_path / "tampered" / wheel.name
    tampered.parent.mkdir()
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tampered, "w") as dst:
        for member in src.infolist():
            data = src.read(member)
            if member.filename.endswith("hello.py"):
                data += b"\nimport os\n"
            dst.writestr(member, data)
    with pytest.raises(VerifyFailed) as info:
        verify_wheel(tampered, [samples])
    assert [d for d in info.value.differences if "hello.py: content differs" in d]
    assert str(tampered) in str(info.value)


def test_verify_refuses_a_wheel_not_made_by_the_compiler(samples: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "x-1.0-py3-none-any.whl"
    with zipfile.ZipFile(bogus, "w") as archive:
        archive.writestr("x.py", "")
    with pytest.raises(VerifyFailed, match="not a cbus-compile plugin wheel"):
        verify_wheel(bogus, [samples])


def test_cli_verify_exit_codes(samples: Path, tmp_path: Path) -> None:
    wheel = _compile(samples, tmp_path / "out")
    command = [sys.executable, "-m", "controllerbus.cli.compile", "verify"]
    ok = subprocess.run(
        [*command, "--json", str(wheel), str(samples)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["verified"] is True
    other = tmp_path / "other"
    shutil.copytree(samples.parent, other)
    target = other / samples.name
    (next(target.rglob("hello.py"))).write_text("def new_factory(bus):\n    return 1\n")
    bad = subprocess.run([*command, str(wheel), str(target)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    assert "not reproducible" in bad.stderr
