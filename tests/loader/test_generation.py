"""plan_install / apply_install: atomic publication, reuse, cleanup, subprocess use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import controllerbus
from controllerbus.loader import (
    InstallError,
    InstallPlan,
    LoaderError,
    WheelChanged,
    apply_install,
    host_site_dirs,
    install_wheel,
    plan_install,
    verify_wheel,
)
from controllerbus.loader import generation as generation_mod
from controllerbus.loader.generation import GENERATION_MARKER, HOST_PTH, Generation

from .wheelkit import repack, snapshot

DATA = "cbus_loader_hello-1.0.0+cbus.0123456789abcdef.data"


def _plan(state: Path, wheel: Path, **kwargs: object) -> InstallPlan:
    return plan_install(state, verify_wheel(wheel), **kwargs)  # type: ignore[arg-type]  # forwarded kwargs


def test_plan_is_pure_and_names_final_paths(hello_wheel: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    plan = _plan(state, hello_wheel, site_dirs=["/host/site"])
    assert not state.exists()  # planning touches nothing
    assert plan.final_dir == state / "generations" / plan.wheel.sha256
    assert plan.tmp_root == state / "tmp"
    assert plan.final_python == plan.final_dir / "bin" / "python"
    vi = sys.version_info
    assert plan.schemes["purelib"] == f"lib/python{vi.major}.{vi.minor}/site-packages"
    assert plan.host_site_dirs == ("/host/site",)


def test_host_site_dirs_lists_this_venv() -> None:
    dirs = host_site_dirs()
    import click

    assert any(Path(click.__file__).is_relative_to(d) for d in dirs)
    assert all(os.path.isabs(d) for d in dirs)


def test_install_publishes_a_complete_generation(hello_wheel: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    generation = apply_install(_plan(state, hello_wheel))
    assert not generation.reused
    assert generation.path == state / "generations" / generation.id
    assert (generation.site_packages / "cbus_loader_hello" / "plugin.py").is_file()
    assert (generation.site_packages / "cbus_loader_hello" / "__pycache__").is_dir()
    assert os.listdir(state / "tmp") == []
    marker = json.loads((generation.path / GENERATION_MARKER).read_text())
    assert marker["id"] == generation.id
    # Location independence: nothing in the published tree names the temp directory.
    cfg = (generation.path / "pyvenv.cfg").read_text()
    assert "command" not in cfg
    assert "include-system-site-packages = false" in cfg
    assert not (generation.path / "bin" / "activate").exists()
    script = (generation.path / "bin" / "cbus-loader-hello").read_text()
    # Long paths get installer's "#!/bin/sh / exec" launcher; either way the final python.
    assert str(generation.python) in "\n".join(script.splitlines()[:2])
    pth = (generation.site_packages / HOST_PTH).read_text()
    assert pth.splitlines() == [
        f"import site; site.addsitedir({d!r})" for d in host_site_dirs(exclude=[state])
    ]
    for dirpath, _dirs, files in os.walk(generation.path):
        for name in files:
            path = Path(dirpath, name)
            if not path.is_symlink():
                assert str(state / "tmp").encode() not in path.read_bytes(), path


def test_generation_appears_only_when_complete(
    hello_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _plan(tmp_path / "state", hello_wheel)
    seen: list[bool] = []
    original = generation_mod._compile_bytecode

    def spy(plan_: InstallPlan, venv_root: Path) -> None:
        seen.append(plan_.final_dir.exists())
        assert (venv_root / plan_.schemes["purelib"] / "cbus_loader_hello").is_dir()
        original(plan_, venv_root)

    monkeypatch.setattr(generation_mod, "_compile_bytecode", spy)
    apply_install(plan)
    assert seen == [False]
    assert plan.final_dir.is_dir()


def test_same_sha_is_reused_unmodified(hello_wheel: Path, tmp_path: Path) -> None:
    plan = _plan(tmp_path / "state", hello_wheel)
    first = apply_install(plan)
    before = snapshot(first.path)
    again = apply_install(_plan(tmp_path / "state", hello_wheel))
    assert again.reused
    assert again.path == first.path
    assert snapshot(first.path) == before


def test_stale_generation_for_other_host_is_replaced(hello_wheel: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    old = apply_install(_plan(state, hello_wheel, site_dirs=["/old/host/site-packages"]))
    new = apply_install(_plan(state, hello_wheel, site_dirs=["/new/host/site-packages"]))
    assert not new.reused
    assert "/new/host" in (new.site_packages / HOST_PTH).read_text()
    assert old.path == new.path
    assert os.listdir(state / "tmp") == []


@pytest.mark.parametrize("seam", ["_create_venv", "_run_installer", "_compile_bytecode"])
def test_failure_mid_install_leaves_nothing(
    hello_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seam: str
) -> None:
    state = tmp_path / "state"
    plan = _plan(state, hello_wheel)
    original = getattr(generation_mod, seam)

    def fail_after_writing(*args: object) -> None:
        original(*args)  # the seam has written its files...
        raise OSError(28, "No space left on device")  # ...then the disk fills up

    monkeypatch.setattr(generation_mod, seam, fail_after_writing)
    with pytest.raises(InstallError) as caught:
        apply_install(plan)
    message = str(caught.value)
    assert "No space left on device" in message
    assert hello_wheel.name in message
    assert "no generation was published" in message
    assert isinstance(caught.value.__cause__, OSError)
    assert not plan.final_dir.exists()
    assert os.listdir(state / "tmp") == []
    assert os.listdir(state / "generations") == []


def test_real_install_failure_is_cleaned_up(hello_wheel: Path, tmp_path: Path) -> None:
    # Verifies, but installer fails half-way: the .data script collides with the
    # console script generated from entry_points.txt.
    wheel = repack(
        hello_wheel,
        tmp_path / "in" / hello_wheel.name,
        add={f"{DATA}/scripts/cbus-loader-hello": b"#!python\nprint('clash')\n"},
    )
    state = tmp_path / "state"
    with pytest.raises(InstallError, match="File already exists") as caught:
        install_wheel(state, wheel)
    assert isinstance(caught.value, LoaderError)
    assert os.listdir(state / "tmp") == []
    assert os.listdir(state / "generations") == []


def test_wheel_changed_after_verify(wheel_copy: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    plan = _plan(state, wheel_copy)
    wheel_copy.write_bytes(wheel_copy.read_bytes() + b"tampered")
    with pytest.raises(WheelChanged, match="changed after it was verified"):
        apply_install(plan)
    assert os.listdir(state / "tmp") == []
    assert not plan.final_dir.exists()


def _run(generation: Generation, code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(
        [str(generation.python), "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_generation_interpreter_imports_plugin_and_host(session_generation: Generation) -> None:
    code = (
        "import sys, cbus_loader_hello.plugin as p, controllerbus, click\n"
        "print(p.__file__); print(controllerbus.__file__); print(p.PLUGIN.binary_id)\n"
        "print(sys.prefix)\n"
    )
    result = _run(session_generation, code)
    assert result.returncode == 0, result.stderr
    plugin_file, host_file, binary_id, prefix = result.stdout.splitlines()
    assert Path(plugin_file).is_relative_to(session_generation.site_packages)
    assert host_file == controllerbus.__file__  # the host's copy, never a vendored one
    assert binary_id == "loader-hello"
    assert Path(prefix) == session_generation.path


def test_generation_console_script_runs(session_generation: Generation) -> None:
    result = subprocess.run(
        [str(session_generation.path / "bin" / "cbus-loader-hello")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["loader-hello", "hello"]


def test_lost_publish_race_reuses_the_winner(
    hello_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    plan = _plan(state, hello_wheel)
    original = generation_mod._compile_bytecode
    raced: list[Generation] = []

    def another_installer_wins(plan_: InstallPlan, venv_root: Path) -> None:
        original(plan_, venv_root)
        if not raced:  # while we are still busy, someone publishes the same id
            monkeypatch.setattr(generation_mod, "_compile_bytecode", original)
            raced.append(apply_install(plan_))

    monkeypatch.setattr(generation_mod, "_compile_bytecode", another_installer_wins)
    ours = apply_install(plan)
    assert raced
    assert not raced[0].reused
    assert ours.reused
    assert os.listdir(state / "tmp") == []


def test_active_stale_generation_is_not_replaced(hello_wheel: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    old = apply_install(_plan(state, hello_wheel, site_dirs=["/old/host"]))
    sys.path.append(str(old.site_packages))
    try:
        with pytest.raises(InstallError, match="it is active in this process; unload it first"):
            apply_install(_plan(state, hello_wheel, site_dirs=["/new/host"]))
    finally:
        sys.path.remove(str(old.site_packages))
    assert "/old/host" in (old.site_packages / HOST_PTH).read_text()
