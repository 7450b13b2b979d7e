"""Slow end-to-end checks: isolated builds offline, pip install into a fresh venv, --watch.

All of them run without a network: the isolated build installs hatchling from a
wheelhouse repacked from the host's own installation (``export_wheelhouse``); the
fresh venv gets controllerbus (built from this checkout) and its dependencies the
same way; the sample plugin's third-party requirements are tiny wheels built here.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from packaging.requirements import Requirement

from controllerbus.compiler import (
    CompileOptions,
    CompileResult,
    compile_plugin,
    export_wheelhouse,
)

from .conftest import make_project, write_tree


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The host's hatchling and its dependencies as wheels (no download)."""
    return export_wheelhouse(tmp_path_factory.mktemp("wheelhouse") / "wh")[0].parent


@pytest.fixture(scope="session")
def thirdparty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A find-links directory with the sample plugin's third-party requirements."""
    from hatchling.builders.wheel import WheelBuilder

    root = tmp_path_factory.mktemp("thirdparty")
    out = root / "wheels"
    for name, version in (("cbus-test-thirdparty", "1.0"), ("cbus-test-extra", "0.5")):
        module = name.replace("-", "_")
        project = write_tree(
            root / name,
            {
                "pyproject.toml": f'[project]\nname = "{name}"\nversion = "{version}"\n',
                f"{module}.py": f"VERSION = {version!r}\n",
            },
        )
        list(WheelBuilder(str(project)).build(directory=str(out), versions=["standard"]))
    return out


def test_wheelhouse_wheels_are_valid(wheelhouse: Path) -> None:
    from installer.sources import WheelFile

    names = sorted(p.name.split("-")[0] for p in wheelhouse.glob("*.whl"))
    assert "hatchling" in names
    assert "packaging" in names
    for wheel in wheelhouse.glob("*.whl"):
        with WheelFile.open(wheel) as source:
            source.validate_record()  # every member listed with the right hash
        with zipfile.ZipFile(wheel) as zf:
            assert not [n for n in zf.namelist() if n.endswith(".pyc") or "/../" in n]


@pytest.mark.slow
def test_isolated_build_is_byte_identical_to_in_process(
    samples: Path, tmp_path: Path, wheelhouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheelhouse))
    fast = compile_plugin(
        [samples], CompileOptions(output_dir=tmp_path / "a", codegen_dir=tmp_path / "cg-a")
    )
    isolated = compile_plugin(
        [samples],
        CompileOptions(output_dir=tmp_path / "b", codegen_dir=tmp_path / "cg-b", isolated=True),
    )
    assert isolated.rebuilt
    assert isolated.wheel.name == fast.wheel.name
    assert isolated.wheel.read_bytes() == fast.wheel.read_bytes()


@pytest.mark.slow
def test_isolated_build_failure_is_reported(
    samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controllerbus.compiler import BuildFailed

    empty = tmp_path / "empty-wheelhouse"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    with pytest.raises(BuildFailed, match="python -m build exited") as info:
        compile_plugin(
            [samples],
            CompileOptions(output_dir=tmp_path / "out", codegen_dir=tmp_path / "cg", isolated=True),
        )
    assert "hatchling==" in info.value.output
    assert list((tmp_path / "out").iterdir()) == []


@pytest.fixture(scope="session")
def host_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A find-links directory with a wheel of controllerbus and of all its dependencies.

    controllerbus is built from this checkout; its dependencies are repacked from
    the host's installation, so a fresh venv gets a complete, offline install.
    """
    from importlib.metadata import requires

    from hatchling.builders.wheel import WheelBuilder

    import controllerbus

    repo = Path(controllerbus.__file__).resolve().parents[2]
    if 'name = "controllerbus"' not in (repo / "pyproject.toml").read_text():
        pytest.skip("controllerbus is not installed from a source checkout")
    out = tmp_path_factory.mktemp("host-wheels")
    needed = [r for r in requires("controllerbus") or [] if "extra ==" not in r]
    export_wheelhouse(out, needed)
    list(WheelBuilder(str(repo)).build(directory=str(out), versions=["standard"]))
    return out


def _fresh_venv(path: Path) -> Path:
    """A new virtualenv with only pip (seeded from virtualenv's bundled wheel, offline)."""
    import virtualenv

    session = virtualenv.cli_run(
        [str(path), "--no-setuptools", "--activators", "", "--no-periodic-update"],
        setup_logging=False,
    )
    return Path(session.creator.exe)


@pytest.mark.slow
def test_wheel_installs_with_pip_into_a_fresh_venv(
    samples: Path, tmp_path: Path, thirdparty: Path, host_wheels: Path
) -> None:
    result = compile_plugin(
        [samples], CompileOptions(output_dir=tmp_path / "out", codegen_dir=tmp_path / "cg")
    )
    python = _fresh_venv(tmp_path / "venv")
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input"]
    install = [*pip, "install", "--no-index", "--find-links", str(host_wheels)]

    # pip reads Requires-Dist: without the third-party wheels the install fails...
    missing = subprocess.run([*install, str(result.wheel)], capture_output=True, text=True)
    assert missing.returncode != 0
    assert "cbus-test-" in missing.stdout + missing.stderr

    # ...and with them, pip installs them (and controllerbus) alongside the plugin.
    subprocess.run(
        [*install, "--find-links", str(thirdparty), str(result.wheel)],
        check=True,
        capture_output=True,
    )
    show = subprocess.run(
        [*pip, "show", result.distribution], check=True, capture_output=True, text=True
    ).stdout
    requires_line = next(line for line in show.splitlines() if line.startswith("Requires:"))
    assert {r.strip() for r in requires_line.split(":", 1)[1].split(",")} == {
        "cbus-test-extra",
        "cbus-test-thirdparty",
        "controllerbus",
    }

    code = (
        "import json\n"
        "from importlib.metadata import distribution, entry_points\n"
        "(ep,) = entry_points(group='controllerbus.plugins')\n"
        "plugin = ep.load()\n"
        "import cbus_test_thirdparty, compiler_hello, controllerbus\n"
        "print(json.dumps({'name': ep.name, 'value': ep.value, 'id': plugin.binary_id,\n"
        " 'factories': [f.controller_id() for f in plugin.factories(None)],\n"
        " 'requires': distribution(ep.dist.name).requires,\n"
        " 'files': [compiler_hello.__file__, controllerbus.__file__]}))\n"
    )
    out = subprocess.run(
        [str(python), "-I", "-c", code], check=True, capture_output=True, text=True
    ).stdout
    data = json.loads(out)
    assert data["name"] == "compiler-hello"
    assert data["value"] == "cbus_plugin_compiler_hello:PLUGIN"
    assert data["id"] == "compiler-hello"
    assert data["factories"] == ["compiler/echo", "compiler/hello"]
    assert sorted(str(Requirement(r)) for r in data["requires"]) == sorted(result.requires)
    # Everything, controllerbus included, comes from the fresh venv.
    assert all(f.startswith(str(tmp_path / "venv")) for f in data["files"])


class _Lines:
    """Collect a pipe's lines in a thread so a test can wait for one with a timeout."""

    def __init__(self, stream: IO[str]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.queue.put(line)

    def wait_for(self, predicate: str | None = None, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {predicate!r}; saw {self.seen}")
            try:
                line = self.queue.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(line)
            if predicate is None or predicate in line:
                return line


@pytest.fixture
def watch_process(
    samples: Path, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], _Lines, _Lines]]:
    """``cbus-compile compile --watch --json`` running on the samples, with its output."""
    exe = Path(sys.executable).with_name("cbus-compile")
    args = [str(exe), "compile", "--watch", "--json", "-o", str(tmp_path / "out")]
    args += ["--codegen-dir", str(tmp_path / "cg"), str(samples)]
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        out, err = _Lines(proc.stdout), _Lines(proc.stderr)
        try:
            yield proc, out, err
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            # The readers end at EOF; join them before Popen closes the pipes.
            out.thread.join(timeout=10)
            err.thread.join(timeout=10)


@pytest.mark.slow
def test_watch_rebuilds_on_change_survives_errors_and_stops_on_sigint(
    samples: Path, watch_process: tuple[subprocess.Popen[str], _Lines, _Lines]
) -> None:
    process, out, err = watch_process
    first = json.loads(out.wait_for())
    assert first["rebuilt"] is True
    err.wait_for("watching for changes")

    echo = samples / "src/compiler_hello/echo.py"
    echo.write_text(echo.read_text() + "\nCHANGED = True\n")
    second = json.loads(out.wait_for())
    assert second["rebuilt"] is True
    assert second["build_hash"] != first["build_hash"]
    assert Path(second["wheel"]).is_file()
    assert not Path(first["wheel"]).exists()  # cleaned up

    broken = samples / "src/compiler_hello/broken.py"
    broken.write_text("def oops(:\n")
    error = err.wait_for("error:")
    assert f"{broken}:1: syntax error" in error
    broken.write_text("FIXED = True\n")
    third = json.loads(out.wait_for())
    assert third["build_hash"] not in (first["build_hash"], second["build_hash"])
    with zipfile.ZipFile(third["wheel"]) as zf:
        assert zf.read("compiler_hello/broken.py") == b"FIXED = True\n"

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 0
    err.wait_for("stopped")


def test_watch_compile_in_process(samples: Path, tmp_path: Path) -> None:
    from controllerbus.compiler import watch_compile

    results: queue.Queue[object] = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(
        target=watch_compile,
        args=([samples], CompileOptions(output_dir=tmp_path / "out", codegen_dir=tmp_path / "cg")),
        kwargs={
            "on_result": results.put,
            "on_error": results.put,
            "stop_event": stop,
        },
    )
    thread.start()
    try:
        first = results.get(timeout=20)
        # A file *added* to a package is seen (the package directory is watched).
        (samples / "src/compiler_hello/added.py").write_text("")
        second = results.get(timeout=20)
        # A new path dependency widens the watched set.
        make_project(samples.parent / "newlib", "newlib", factory=False)
        pyproject = samples / "pyproject.toml"
        pyproject.write_text(
            pyproject.read_text().replace(
                '"controllerbus",', '"controllerbus",\n    "newlib @ file:../newlib",'
            )
        )
        third = results.get(timeout=20)
        (samples.parent / "newlib/src/newlib/__init__.py").write_text("X = 1\n")
        fourth = results.get(timeout=20)
    finally:
        stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive()
    found = [first, second, third, fourth]
    results_only = [r for r in found if isinstance(r, CompileResult)]
    assert results_only == found  # no errors on the way
    assert len({r.build_hash for r in results_only}) == 4
    assert "newlib/__init__.py" in zipfile.ZipFile(results_only[3].wheel).namelist()
