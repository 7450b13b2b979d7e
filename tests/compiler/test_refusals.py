"""What the compiler refuses, and that each refusal names the file and the fix.

A refusal is never a wheel: each case below must raise the named error, whose
message points at the file at fault and says what to change, and ``cbus-compile``
must exit 1 with that message and no traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controllerbus.compiler import (
    AnalysisError,
    BinaryContent,
    ConflictingRequirements,
    InvalidProject,
    analyse,
)

from .conftest import write_tree

HATCH = '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
FACTORY = "def new_factory(bus):\n    return bus\n"


def plugin(
    root: Path, deps: str = '"lib"', extra: str = "", files: dict[str, str] | None = None
) -> Path:
    """A hatchling plugin at ``root/plugin`` depending on ``deps``."""
    tree = {
        "plugin/pyproject.toml": f'{HATCH}[project]\nname = "plugin"\nversion = "0.1.0"\n'
        f"dependencies = [{deps}]\n{extra}",
        "plugin/src/plugin/__init__.py": "",
        "plugin/src/plugin/factory.py": FACTORY,
        **(files or {}),
    }
    write_tree(root, tree)
    return root / "plugin"


UV_LIB = '[tool.uv.sources]\nlib = { path = "../lib" }\n'
LIB_PY = {"lib/src/lib/__init__.py": "VALUE = 1\n"}


def lib_project(extra: str = "", version: str = 'version = "1.0"') -> dict[str, str]:
    return {
        "lib/pyproject.toml": f'{HATCH}[project]\nname = "lib"\n{version}\n{extra}',
        **LIB_PY,
    }


# (id, extra pyproject text of the plugin, other files, error, file that must be named,
#  words of the fix that must appear)
CASES: list[tuple[str, str, dict[str, str], type[AnalysisError], str, str]] = [
    (
        "setup-cfg-only-library",
        UV_LIB,
        {
            "lib/setup.cfg": "[metadata]\nname = lib\nversion = 2.0\n",
            "lib/setup.py": "from setuptools import setup\nsetup()\n",
            **LIB_PY,
        },
        InvalidProject,
        "lib/setup.cfg",
        'version = "2.0"',
    ),
    (
        "no-project-table",
        UV_LIB,
        {"lib/pyproject.toml": "[tool.black]\nline-length = 100\n", **LIB_PY},
        InvalidProject,
        "lib/pyproject.toml",
        'add\n    [project]\n    name = "lib"',
    ),
    (
        "c-extension-library",
        UV_LIB,
        {
            **lib_project(),
            "lib/setup.py": "from setuptools import Extension, setup\n"
            "setup(ext_modules=[Extension('lib._speed', ['speed.c'])])\n",
        },
        BinaryContent,
        "lib/setup.py",
        "own distribution",
    ),
    (
        "shared-object-in-package",
        UV_LIB,
        {**lib_project(), "lib/src/lib/_speed.cpython-311-x86_64-linux-gnu.so": "\x7fELF"},
        BinaryContent,
        "lib/src/lib/_speed.cpython-311-x86_64-linux-gnu.so",
        "platform wheel",
    ),
    (
        "maturin-library",
        UV_LIB,
        {
            "lib/pyproject.toml": '[build-system]\nrequires = ["maturin"]\n'
            'build-backend = "maturin"\n[project]\nname = "lib"\nversion = "1.0"\n',
            **LIB_PY,
        },
        BinaryContent,
        "lib/pyproject.toml",
        "compiled code",
    ),
    (
        "poetry-build-script",
        UV_LIB,
        {**lib_project(), "lib/build.py": "def build(setup_kwargs):\n    pass\n"},
        BinaryContent,
        "lib/build.py",
        "compiled code",
    ),
    (
        "workspace-member-without-source",
        "",
        {
            "pyproject.toml": '[tool.uv.workspace]\nmembers = ["plugin", "lib"]\n',
            **lib_project(),
        },
        InvalidProject,
        "plugin/pyproject.toml",
        "lib = { workspace = true }",
    ),
    (
        "workspace-source-not-a-member",
        "[tool.uv.sources]\nlib = { workspace = true }\n",
        {"pyproject.toml": '[tool.uv.workspace]\nmembers = ["plugin"]\n', **lib_project()},
        InvalidProject,
        "plugin/pyproject.toml",
        "[tool.uv.workspace] members",
    ),
    (
        "dynamic-version-unknown-source",
        UV_LIB,
        lib_project(version='dynamic = ["version"]'),
        InvalidProject,
        "lib/pyproject.toml",
        "static version",
    ),
    (
        "version-file-missing",
        UV_LIB,
        lib_project(
            version='dynamic = ["version"]',
            extra='[tool.hatch.version]\npath = "src/lib/__about__.py"\n',
        ),
        InvalidProject,
        "lib/pyproject.toml",
        "__about__.py",
    ),
    (
        "scm-version-without-git",
        UV_LIB,
        {
            "lib/pyproject.toml": '[build-system]\nrequires = ["setuptools", "setuptools-scm"]\n'
            'build-backend = "setuptools.build_meta"\n[project]\nname = "lib"\n'
            'dynamic = ["version"]\n[tool.setuptools_scm]\n',
            **LIB_PY,
        },
        InvalidProject,
        "lib/pyproject.toml",
        "SETUPTOOLS_SCM_PRETEND_VERSION",
    ),
    (
        "specifier-rejects-local-version",
        UV_LIB,
        lib_project(),
        ConflictingRequirements,
        "plugin/pyproject.toml",
        "vendored lib 1.0",
    ),
    (
        "local-project-in-an-extra",
        '[project.optional-dependencies]\nfast = ["lib"]\n' + UV_LIB,
        lib_project(),
        InvalidProject,
        "plugin/pyproject.toml",
        "move it to [project] dependencies",
    ),
    (
        "packages-not-found",
        UV_LIB,
        {
            "lib/pyproject.toml": f'{HATCH}[project]\nname = "lib"\nversion = "1.0"\n',
            "lib/src/corelib/__init__.py": "",
        },
        InvalidProject,
        "lib/pyproject.toml",
        '[tool.cbus] packages = ["src/lib"]',
    ),
    (
        "file-placed-outside-packages",
        UV_LIB,
        lib_project(extra='[tool.hatch.build.targets.wheel.shared-data]\n"etc" = "share/lib"\n'),
        InvalidProject,
        "lib/pyproject.toml",
        "importlib.resources",
    ),
    (
        "conditional-uv-source",
        '[tool.uv.sources]\nlib = [{ path = "../lib", marker = "sys_platform == \'linux\'" }]\n',
        lib_project(),
        InvalidProject,
        "plugin/pyproject.toml",
        'use one { path = "..." }',
    ),
]


def _deps(case_id: str) -> str:
    return {"specifier-rejects-local-version": '"lib>=2"', "local-project-in-an-extra": ""}.get(
        case_id, '"lib"'
    )


@pytest.mark.parametrize(
    ("extra", "files", "error", "named", "fix"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_refusal_names_the_file_and_the_fix(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra: str,
    files: dict[str, str],
    error: type[AnalysisError],
    named: str,
    fix: str,
) -> None:
    case_id = request.node.callspec.id
    monkeypatch.delenv("SETUPTOOLS_SCM_PRETEND_VERSION", raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    target = plugin(tmp_path, _deps(case_id), extra, files)
    with pytest.raises(error) as info:
        analyse([target])
    message = str(info.value)
    assert str(tmp_path / named) in message
    assert fix in message


@pytest.mark.parametrize("case_id", ["c-extension-library", "workspace-member-without-source"])
def test_cli_refusal_exits_1_without_traceback(tmp_path: Path, case_id: str) -> None:
    case = next(c for c in CASES if c[0] == case_id)
    target = plugin(tmp_path, _deps(case_id), case[1], case[2])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "controllerbus.cli.compile",
            "compile",
            "-o",
            str(tmp_path / "o"),
            str(target),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert str(tmp_path / case[4]) in done.stderr
    assert case[5] in done.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.whl"))


def test_gitignored_and_junk_files_never_ship(tmp_path: Path) -> None:
    target = plugin(
        tmp_path,
        extra=UV_LIB,
        files={
            **lib_project(),
            ".git/HEAD": "ref: refs/heads/main\n",
            ".gitignore": "*.env\n/lib/src/lib/generated/\n",
            "lib/src/lib/secret.env": "TOKEN=1\n",
            "lib/src/lib/generated/big.py": "",
            "lib/src/lib/.env": "X=1\n",
            "lib/src/lib/.pytest_cache/v": "",
            "plugin/src/plugin/.gitignore": "local_*.py\n",
            "plugin/src/plugin/local_settings.py": "",
            "plugin/src/plugin/kept.json": "{}",
        },
    )
    dests = {f.dest for f in analyse([target]).files}
    assert dests == {
        "lib/__init__.py",
        "plugin/__init__.py",
        "plugin/factory.py",
        "plugin/kept.json",
    }
