"""Every layout of :mod:`tests.compiler.layouts` compiles into a plugin wheel that works.

For each layout: the plugin wheel ships exactly the modules (and package files)
that the projects' own backends put into their wheels (built here with the real
hatchling, setuptools, flit-core, pdm-backend, poetry-core and uv_build), carries
the version the backend would give it, vendors every local library (nothing local
is left as a Requires-Dist), installs with pip and with uv, imports, and passes
``twine check``. The wheels are byte-identical when compiled by Python 3.11, 3.12
and 3.13, and with ``--isolated``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from controllerbus.compiler import CompileOptions, CompileResult, compile_plugin, export_wheelhouse
from controllerbus.configset import lookup_config_constructor
from controllerbus.core import new_core_bus
from controllerbus.loader.host import PluginHost
from controllerbus.loader.state import StateDir

from .layouts import LAYOUTS, Layout

pytestmark = pytest.mark.slow

SRC = Path(__file__).resolve().parents[2] / "src"
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"


@dataclass(frozen=True)
class Compiled:
    layout: Layout
    root: Path
    result: CompileResult


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Compiled]:
    base = tmp_path_factory.mktemp("layouts")
    out: dict[str, Compiled] = {}
    for name, layout in LAYOUTS.items():
        root = base / name
        target = layout.write(root)
        result = compile_plugin(
            [target], CompileOptions(output_dir=base / "wheels", codegen_dir=base / "cg" / name)
        )
        out[name] = Compiled(layout, root, result)
    return out


def members(wheel: Path) -> tuple[set[str], set[str]]:
    """(importable modules, other package files) of a wheel, metadata left out."""
    modules: set[str] = set()
    data: set[str] = set()
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            top = name.split("/")[0]
            if top.endswith((".dist-info", ".data")) or name.endswith((".pth", "/")):
                continue
            if name.endswith(".py"):
                dotted = name[:-3].replace("/", ".")
                modules.add(dotted.removesuffix(".__init__"))
            else:
                data.add(name)
    return modules, data


def backend_wheels(projects: list[Path], dest: Path) -> list[Path]:
    """Build each project's wheel with its own backend (no isolation: installed backends)."""
    script = (
        "import sys, build\n"
        "for src, out in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    build.ProjectBuilder(src).build('wheel', out)\n"
    )
    args: list[str] = []
    for index, project in enumerate(projects):
        args += [str(project), str(dest / str(index))]
    # uv_build finds its binary on PATH (as in an isolated build environment).
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [next((dest / str(i)).glob("*.whl")) for i in range(len(projects))]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_ships_what_the_backends_ship(
    name: str, compiled: dict[str, Compiled], tmp_path: Path
) -> None:
    case = compiled[name]
    wheels = backend_wheels([case.root / p for p in case.layout.projects], tmp_path)
    expected_modules: set[str] = set()
    expected_data: set[str] = set()
    local: set[str] = set()
    for wheel in wheels:
        modules, data = members(wheel)
        expected_modules |= modules
        expected_data |= data
        local.add(canonicalize_name(wheel.name.split("-")[0]))
    modules, data = members(case.result.wheel)
    assert modules - {case.result.module} == expected_modules
    assert data == expected_data
    assert case.result.version.startswith(case.layout.version + "+cbus.")
    # Every local library is vendored: none of them is left as a requirement.
    required = {canonicalize_name(Requirement(r).name) for r in case.result.requires}
    assert required & local == set()
    assert required <= {"controllerbus"}
    if any("[tool.poetry.group." in text for text in case.layout.files.values()):
        assert any("[tool.poetry.group.dev]" in line for line in case.result.graph.dropped)
    # The target's extras are carried (Provides-Extra), not dropped.
    assert extras_of(case.result.wheel) == extras_of(wheels[0])


def extras_of(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(name).decode()
    return {
        line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if line.startswith("Provides-Extra:")
    }


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_wheel_installs_with_pip_and_imports(
    name: str, compiled: dict[str, Compiled], tmp_path: Path
) -> None:
    result = compiled[name].result
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(result.wheel),
        ],
        check=True,
        capture_output=True,
    )
    probe = (
        "import sys, json\n"
        f"sys.path.insert(0, {str(target)!r})\n"
        f"import {result.module} as m\n"
        "print(json.dumps([m.BINARY_ID, list(m.FACTORIES)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    assert json.loads(done.stdout) == [result.binary_id, list(result.factories)]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
async def test_layout_plugin_loads_in_the_host(
    name: str, compiled: dict[str, Compiled], tmp_path: Path
) -> None:
    result = compiled[name].result
    module = result.factories[0].split(":")[0]
    bus, _static = new_core_bus()
    async with bus:
        with StateDir(tmp_path / "state") as state:
            host = PluginHost(bus, state)
            await host.load(result.wheel)
            ctor = await lookup_config_constructor(bus, f"test/layouts/{module}/1")
            assert ctor is not None
            del ctor  # the unload proves no reference to the plugin survives
            reports = await host.aclose()
    assert all(r.clean for r in reports), [r.survivors for r in reports]


def test_layout_wheels_pass_twine_and_uv(compiled: dict[str, Compiled], tmp_path: Path) -> None:
    wheels = [str(case.result.wheel) for case in compiled.values()]
    twine = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *wheels],
        capture_output=True,
        text=True,
    )
    assert twine.returncode == 0, twine.stdout + twine.stderr
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
    for index, wheel in enumerate(wheels):
        subprocess.run(
            [
                uv,
                "pip",
                "install",
                "-q",
                "--offline",
                "--no-deps",
                "--python",
                sys.executable,
                "--target",
                str(tmp_path / str(index)),
                wheel,
            ],
            check=True,
            capture_output=True,
        )


def _compile_all_with(python: Path, compiled: dict[str, Compiled], out: Path) -> dict[str, bytes]:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from controllerbus.compiler import CompileOptions, compile_plugin\n"
        "out = Path(sys.argv[1])\n"
        "for name, target in zip(sys.argv[2::2], sys.argv[3::2]):\n"
        "    r = compile_plugin([Path(target)],\n"
        "        CompileOptions(output_dir=out, codegen_dir=out / 'cg' / name))\n"
        "    print(name, r.wheel)\n"
    )
    args: list[str] = []
    for name, case in compiled.items():
        args += [name, str(case.root / case.layout.target)]
    # The compiler's dependencies are pure Python: this interpreter runs them from
    # the test environment's site-packages.
    site = next(p for p in sys.path if p.endswith("site-packages"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), site])}
    done = subprocess.run(
        [str(python), "-c", script, str(out), *args],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return {
        line.split(" ", 1)[0]: Path(line.split(" ", 1)[1]).read_bytes()
        for line in done.stdout.splitlines()
    }


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_layout_wheels_are_byte_identical_across_pythons(
    version: str, compiled: dict[str, Compiled], tmp_path: Path
) -> None:
    pythons = sorted(PYENV.glob(f"{version}.*/bin/python{version}"))
    if not pythons:
        pytest.skip(f"no Python {version} under {PYENV}")
    got = _compile_all_with(pythons[-1], compiled, tmp_path)
    assert set(got) == set(compiled)
    for name, case in compiled.items():
        assert got[name] == case.result.wheel.read_bytes(), name


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("wheelhouse")
    export_wheelhouse(dest)
    return dest


def test_layout_wheels_are_byte_identical_isolated(
    compiled: dict[str, Compiled],
    wheelhouse: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheelhouse))
    # One isolated build per backend family is enough to prove the point cheaply.
    for name in ("hatch-namespace", "setuptools-package-data-attr-version", "uv-workspace-members"):
        case = compiled[name]
        isolated = compile_plugin(
            [case.root / case.layout.target],
            CompileOptions(
                output_dir=tmp_path / name, codegen_dir=tmp_path / "cg" / name, isolated=True
            ),
        )
        assert isolated.wheel.read_bytes() == case.result.wheel.read_bytes(), name
