"""Where a dependency's local directory is declared, beyond a plain ``file:`` reference.

* **uv**: ``[tool.uv.sources] name = { path = "../lib" }`` (also ``editable = true``)
  and ``{ workspace = true }``; a project inside a uv workspace (the nearest parent
  ``pyproject.toml`` with ``[tool.uv.workspace]`` whose ``members`` globs, less
  ``exclude``, match it) also inherits the workspace root's ``[tool.uv.sources]``,
  its own entries winning (uv's rule). ``workspace = true`` names a member by its
  project name. The root may be virtual (no ``[project]``).
* **poetry**: ``[tool.poetry.dependencies] lib = { path = "../lib" }`` (poetry 1 and
  2; also in ``[tool.poetry.group.*]``, which never ships and is ignored).
* **pdm**: ``${PROJECT_ROOT}`` in a requirement (``lib @ file:///${PROJECT_ROOT}/../lib``).
"""

from __future__ import annotations

import glob
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import NormalizedName, canonicalize_name

__all__ = ["Workspace", "expand_project_root", "find_workspace", "poetry_path_sources"]

PYPROJECT = "pyproject.toml"


@dataclass(frozen=True, slots=True)
class Workspace:
    """The uv workspace a project belongs to.

    Attributes:
        root: the workspace root directory.
        members: member directory by canonical project name.
        sources: the root's ``[tool.uv.sources]`` table (raw).
        text: the root's ``pyproject.toml`` text (for line numbers).
    """

    root: Path
    members: Mapping[NormalizedName, Path]
    sources: Mapping[str, Any]
    text: str

    @property
    def pyproject(self) -> Path:
        """The workspace root's ``pyproject.toml``."""
        return self.root / PYPROJECT


def find_workspace(project_root: Path) -> Workspace | None:
    """The uv workspace whose members include ``project_root``, or ``None``."""
    directory = str(project_root)
    while True:
        pyproject = os.path.join(directory, PYPROJECT)
        parent = os.path.dirname(directory)
        text = _read_workspace_candidate(pyproject)
        if text is not None:
            break
        if parent == directory:
            return None
        directory = parent
    uv = tomllib.loads(text)["tool"]["uv"]
    root = Path(directory)
    members = _members(root, uv["workspace"])
    if project_root != root and project_root not in members.values():
        return None  # inside a workspace's tree but not one of its members
    sources = uv.get("sources", {})
    return Workspace(root, members, sources if isinstance(sources, dict) else {}, text)


def _read_workspace_candidate(pyproject: str) -> str | None:
    """The text of ``pyproject`` if it declares ``[tool.uv.workspace]``, else ``None``."""
    try:
        with open(pyproject, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return None
    if "workspace" not in text:
        return None  # cheap pre-check: most pyproject.toml files are not workspace roots
    try:
        uv = tomllib.loads(text).get("tool", {}).get("uv", {})
    except tomllib.TOMLDecodeError:
        return None
    return text if isinstance(uv, dict) and isinstance(uv.get("workspace"), dict) else None


def _members(root: Path, config: Mapping[str, Any]) -> dict[NormalizedName, Path]:
    def expand(patterns: object) -> set[Path]:
        found: set[Path] = set()
        for pattern in patterns if isinstance(patterns, list) else []:
            for match in glob.glob(str(pattern), root_dir=root):
                found.add(Path(os.path.realpath(root / match)))
        return found

    members: dict[NormalizedName, Path] = {}
    root_name = _project_name(root)
    if root_name is not None:
        members[root_name] = root
    for path in sorted(expand(config.get("members", [])) - expand(config.get("exclude", []))):
        name = _project_name(path)
        if name is not None:
            members.setdefault(name, path)
    return members


def _project_name(directory: Path) -> NormalizedName | None:
    try:
        data = tomllib.loads((directory / PYPROJECT).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    name = data.get("project", {}).get("name") or data.get("tool", {}).get("poetry", {}).get("name")
    return canonicalize_name(name) if isinstance(name, str) else None


def poetry_path_sources(data: Mapping[str, Any]) -> dict[str, str]:
    """``name -> relative path`` of every ``path`` dependency in ``[tool.poetry.dependencies]``."""
    deps = data.get("tool", {}).get("poetry", {}).get("dependencies", {})
    found: dict[str, str] = {}
    for name, spec in deps.items() if isinstance(deps, dict) else ():
        if isinstance(spec, dict) and isinstance(spec.get("path"), str):
            found[str(name)] = spec["path"]
    return found


def expand_project_root(spec: str, root: Path) -> str:
    """pdm's ``${PROJECT_ROOT}``: ``file:///${PROJECT_ROOT}/x`` becomes a proper file URL."""
    if "${PROJECT_ROOT}" not in spec:
        return spec
    spec = spec.replace("file:///${PROJECT_ROOT}", root.as_uri())
    return spec.replace("${PROJECT_ROOT}", root.as_posix())
