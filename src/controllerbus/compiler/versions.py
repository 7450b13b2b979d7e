"""Dynamic versions, resolved the way the project's backend would, without importing it.

* hatch ``[tool.hatch.version] path`` (``__version__ = "..."`` by default, or the
  configured ``pattern``), flit's module ``__version__``, setuptools'
  ``[tool.setuptools.dynamic] version = { attr = "pkg.__version__" }`` or
  ``{ file = "VERSION" }``, pdm ``[tool.pdm.version] source = "file"``: the file is
  read and the assignment found in its AST (nothing is imported or executed).
* VCS versions (setuptools-scm, hatch-vcs, pdm ``source = "scm"``): the
  ``SETUPTOOLS_SCM_PRETEND_VERSION[_FOR_<NAME>]`` variables, else setuptools-scm
  itself when it is installed, else the git tag on ``HEAD``; none of them gives an
  error saying what to set.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controllerbus.compiler.discovery import backend_of, import_name

__all__ = ["VersionError", "dynamic_version"]

_DEFAULT_PATTERN = r"""(?i)^(__version__|VERSION) *= *(['"])v?(?P<version>.+?)\2"""


class VersionError(Exception):
    """The version cannot be resolved; the message says what to set."""


def dynamic_version(root: Path, name: str, data: Mapping[str, Any]) -> str:
    """The version the backend would give the project at ``root``.

    Raises:
        VersionError: the source is unknown, unreadable, or a VCS without a version.
    """
    tool = data.get("tool", {})
    backend = backend_of(data)
    hatch = tool.get("hatch", {}).get("version", {})
    if isinstance(hatch, dict) and hatch:
        if hatch.get("source") == "vcs":
            return _vcs_version(root, name)
        if isinstance(hatch.get("path"), str):
            return _from_pattern(root / hatch["path"], hatch.get("pattern"))
    pdm = tool.get("pdm", {}).get("version", {})
    if isinstance(pdm, dict) and pdm:
        if pdm.get("source") == "scm":
            return _vcs_version(root, name)
        if pdm.get("source") == "file" and isinstance(pdm.get("path"), str):
            return _from_pattern(root / pdm["path"], None)
    setuptools = tool.get("setuptools", {}).get("dynamic", {}).get("version")
    if isinstance(setuptools, dict):
        if isinstance(setuptools.get("attr"), str):
            return _from_attr(root, setuptools["attr"], data)
        if isinstance(setuptools.get("file"), (str, list)):
            files = setuptools["file"]
            first = files if isinstance(files, str) else files[0]
            return (root / first).read_text(encoding="utf-8").strip()
    if "setuptools_scm" in tool or "setuptools-scm" in tool or backend == "setuptools":
        requires = data.get("build-system", {}).get("requires", [])
        if "setuptools_scm" in tool or any(
            "setuptools" in str(r) and "scm" in str(r) for r in requires
        ):
            return _vcs_version(root, name)
    if backend == "flit":
        module = tool.get("flit", {}).get("module", {}).get("name", import_name(name))
        for base in ("src", ""):
            package = root / base / str(module)
            for path in (package / "__init__.py", package.with_suffix(".py")):
                if path.is_file():
                    return _from_assignment(path, "__version__")
    raise VersionError(
        "dynamic version of an unknown source: give [project] a static version, or"
        " use hatch [tool.hatch.version] path, setuptools [tool.setuptools.dynamic]"
        " version, flit __version__ or setuptools-scm"
    )


def _from_pattern(path: Path, pattern: object) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VersionError(f"version file {path}: {exc.strerror}") from exc
    regex = str(pattern) if isinstance(pattern, str) else _DEFAULT_PATTERN
    match = re.search(regex, text, flags=re.MULTILINE)
    if match is None:
        raise VersionError(f"no version found in {path} (pattern {regex!r})")
    return match.group("version")


def _from_attr(root: Path, attr: str, data: Mapping[str, Any]) -> str:
    module, _, variable = attr.rpartition(".")
    package_dir = data.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    base = package_dir.get("", "") if isinstance(package_dir, dict) else ""
    parts = module.split(".")
    for top in (base, "src", ""):
        directory = root.joinpath(top, *parts)
        for path in (directory / "__init__.py", directory.with_suffix(".py")):
            if path.is_file():
                return _from_assignment(path, variable)
    raise VersionError(f"attr: {attr}: module {module} not found under {root}")


def _from_assignment(path: Path, variable: str) -> str:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError) as exc:
        raise VersionError(f"cannot read {variable} from {path}: {exc}") from exc
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign) and node.value is not None
            else []
        )
        value = getattr(node, "value", None)
        if any(isinstance(t, ast.Name) and t.id == variable for t in targets):
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
            raise VersionError(f"{path}:{node.lineno}: {variable} is not a string literal")
    raise VersionError(f"{path} assigns no {variable} = '...' at module level")


def _vcs_version(root: Path, name: str) -> str:
    specific = "SETUPTOOLS_SCM_PRETEND_VERSION_FOR_" + re.sub(r"[-.]", "_", name).upper()
    for variable in (specific, "SETUPTOOLS_SCM_PRETEND_VERSION"):
        if os.environ.get(variable):
            return os.environ[variable]
    try:
        from setuptools_scm import get_version
    except ImportError:
        pass
    else:
        try:
            return str(get_version(root=str(root), search_parent_directories=True))
        except Exception as exc:
            raise VersionError(
                f"setuptools-scm found no version ({exc}); commit and tag the project,"
                " or set SETUPTOOLS_SCM_PRETEND_VERSION"
            ) from exc
    try:
        tag = subprocess.run(
            ["git", "describe", "--tags", "--exact-match"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise VersionError(
            "the version comes from git, and HEAD has no tag (install setuptools-scm"
            " for distance versions, tag the commit, or set SETUPTOOLS_SCM_PRETEND_VERSION)"
        ) from exc
    return tag.removeprefix("v")
