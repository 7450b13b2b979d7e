"""Fixtures of the compiler tests: real project trees in ``tmp_path``, real wheels."""

from __future__ import annotations

import json
import logging
import shutil
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

PACKAGES = Path(__file__).resolve().parents[1] / "packages"
#: The sample plugin and its two path dependencies (see tests/packages/compiler-*).
SAMPLES = ("compiler-hello", "compiler-greeting", "compiler-util")


def write_tree(root: Path, files: Mapping[str, str]) -> Path:
    """Write ``{relative path: text}`` under ``root`` (dedented); return ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def pyproject(
    name: str,
    *,
    version: str | None = "0.1.0",
    dependencies: Sequence[str] = (),
    extra: str = "",
) -> str:
    """A minimal ``pyproject.toml`` text; ``extra`` is appended verbatim (dedented)."""
    deps = "".join(f"    {json.dumps(dep)},\n" for dep in dependencies)
    version_line = f'version = "{version}"\n' if version is not None else ""
    return (
        f'[project]\nname = "{name}"\n{version_line}dependencies = [\n{deps}]\n\n'
        + textwrap.dedent(extra).lstrip("\n")
    )


def make_project(
    root: Path,
    name: str,
    *,
    dependencies: Sequence[str] = (),
    extra: str = "",
    factory: bool = True,
    files: Mapping[str, str] | None = None,
    version: str | None = "0.1.0",
) -> Path:
    """A src-layout project ``root`` whose package is ``name`` with ``-`` as ``_``.

    With ``factory`` its ``factory.py`` defines a module-level ``new_factory``.
    """
    package = name.replace("-", "_")
    tree = {
        "pyproject.toml": pyproject(name, version=version, dependencies=dependencies, extra=extra),
        f"src/{package}/__init__.py": f'"""{name}."""\n',
    }
    if factory:
        tree[f"src/{package}/factory.py"] = "def new_factory(bus):\n    return bus\n"
    tree.update(files or {})
    return write_tree(root, tree)


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    """A private copy of the sample projects; returns the ``compiler-hello`` target."""
    return copy_samples(tmp_path / "checkout")


def copy_samples(dest: Path) -> Path:
    """Copy the sample projects side by side into ``dest``; return the target's path."""
    for name in SAMPLES:
        shutil.copytree(PACKAGES / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest / SAMPLES[0]


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Defaults such as ./.cbus-codegen and ./dist-plugins must never land in the repo.
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _restore_log_level() -> Iterator[None]:
    # The CLI sets the controllerbus logger's level; do not leak it into other tests.
    logger = logging.getLogger("controllerbus")
    level = logger.level
    yield
    logger.setLevel(level)
