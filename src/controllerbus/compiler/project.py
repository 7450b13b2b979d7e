"""Read one project's ``pyproject.toml``: name, version, requirements, path sources, packages.

Nothing here follows dependencies (that is :mod:`controllerbus.compiler.graph`); this
module answers "what does this one project declare?" and "which files would it ship?".

Where a local path for a dependency can come from (first match wins):

* ``[tool.cbus.replace] name = "../lib"`` (Go's ``replace``);
* ``[tool.uv.sources]`` ``path``/``editable``/``workspace = true``, also inherited
  from the uv workspace root (:mod:`~controllerbus.compiler.sources`);
* poetry ``[tool.poetry.dependencies] name = { path = "../lib" }``;
* a PEP 508 direct reference ``name @ file:../lib`` (relative to the project), also
  with hatch's ``{root:uri}`` / ``{root:parent:uri}`` and pdm's ``${PROJECT_ROOT}``.

Metadata comes from ``[project]``, or for a poetry-1 project from ``[tool.poetry]``
(:mod:`~controllerbus.compiler.poetry`); a dynamic version is resolved like the
backend would (:mod:`~controllerbus.compiler.versions`). Which packages and files
ship is the backend's rule (:mod:`~controllerbus.compiler.discovery`). A project
with compiled code (``ext_modules``, ``build.py``, maturin, meson, scikit-build) is
refused: a ``py3-none-any`` plugin wheel cannot carry it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from controllerbus.compiler.compiled import refuse_build_scripts
from controllerbus.compiler.discovery import PackageSource, Selection, find_packages
from controllerbus.compiler.errors import InvalidProject, Issue, MissingPath
from controllerbus.compiler.files import vcs_ignored
from controllerbus.compiler.poetry import poetry_project
from controllerbus.compiler.sources import (
    Workspace,
    expand_project_root,
    find_workspace,
    poetry_path_sources,
)
from controllerbus.compiler.versions import VersionError, dynamic_version

__all__ = [
    "PYPROJECT",
    "PackageSource",
    "PathSource",
    "Project",
    "load_project",
]

logger = logging.getLogger(__name__)

PYPROJECT = "pyproject.toml"

_HATCH_ROOT_URI = re.compile(r"\{root((?::parent)*):uri\}")
_TOML_LINE = re.compile(r"at line (\d+)")


@dataclass(frozen=True, slots=True)
class PathSource:
    """A local directory a project declares for one of its dependencies.

    Attributes:
        path: absolute, symlinks resolved (``os.path.realpath``); not yet checked to exist.
        origin: where it was declared, for messages (``[tool.uv.sources]`` ...).
        line: line of the declaration in the project's ``pyproject.toml``, if found.
    """

    path: Path
    origin: str
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Project:
    """What one ``pyproject.toml`` declares, with paths resolved against its root.

    Attributes:
        root: absolute project directory.
        name: canonical distribution name.
        version: the static ``[project] version`` (``None`` if dynamic).
        requires_python: ``[project] requires-python`` or ``None``.
        dependencies: ``[project] dependencies`` (hatch ``{root:uri}`` expanded).
        optional: ``[project.optional-dependencies]`` by canonical extra name.
        sources: local paths by canonical dependency name (uv sources and replaces);
            ``file:`` direct references are resolved per requirement by :meth:`path_for`.
        replace: the ``[tool.cbus.replace]`` part of ``sources`` (a target's replaces
            apply to the whole graph, like Go's main-module ``replace``).
        factories: ``[tool.cbus] factories`` entries (``"pkg.mod:func"``), or ``None``.
        packages: the top-level packages and modules the project ships.
        selection: the backend's file rules (data files, excludes) for them.
        ignored: ``True`` for absolute paths git ignores (``None``: no ignore rules).
        dev_groups: development-only dependency tables (never shipped; reported).
    """

    root: Path
    name: NormalizedName
    version: str | None
    requires_python: str | None
    dependencies: tuple[Requirement, ...]
    optional: Mapping[NormalizedName, tuple[Requirement, ...]]
    sources: Mapping[NormalizedName, PathSource]
    replace: Mapping[NormalizedName, PathSource]
    factories: tuple[str, ...] | None
    packages: tuple[PackageSource, ...]
    text: str = field(repr=False, compare=False)
    selection: Selection = field(default=Selection(()), repr=False, compare=False)
    ignored: Callable[[str], bool] | None = field(default=None, repr=False, compare=False)
    dev_groups: tuple[str, ...] = ()

    @property
    def pyproject(self) -> Path:
        """The project's ``pyproject.toml``."""
        return self.root / PYPROJECT

    def line_of(self, needle: str) -> int | None:
        """First 1-based line of ``pyproject.toml`` containing ``needle`` (for messages)."""
        return _line_containing(self.text, needle)

    def requirements(self, extras: frozenset[str] = frozenset()) -> list[Requirement]:
        """The base dependencies plus those of ``extras``.

        A requirement on the project itself (``pkg[a,b]`` inside ``pkg``'s own extras,
        a common way to define an ``all`` extra) expands into those extras instead of
        being an edge to itself.
        """
        wanted: set[NormalizedName] = {canonicalize_name(extra) for extra in extras}
        done: set[NormalizedName] = set()
        result: list[Requirement] = []
        pending = [*self.dependencies]
        while True:
            for req in pending:
                if canonicalize_name(req.name) == self.name:
                    wanted |= {canonicalize_name(extra) for extra in req.extras}
                else:
                    result.append(req)
            pending = []
            for extra in sorted(wanted - done):
                done.add(extra)
                if extra not in self.optional:
                    logger.warning(
                        "%s: project %s has no extra %r", self.pyproject, self.name, extra
                    )
                    continue
                pending.extend(self.optional[extra])
            if not pending:
                return result

    def path_for(self, req: Requirement) -> PathSource | None:
        """The local directory this project declares for ``req``, or ``None``.

        ``[tool.cbus.replace]`` beats ``[tool.uv.sources]``, which beats a ``file:``
        direct reference (a replace is the most deliberate override).

        Raises:
            InvalidProject: ``req`` is a ``file:`` URL with a remote host.
        """
        name = canonicalize_name(req.name)
        if name in self.sources:
            return self.sources[name]
        if req.url is not None and req.url.startswith("file:"):
            return PathSource(
                _file_url_to_path(req.url, self),
                "file: direct reference",
                self.line_of(req.url) or self.line_of(req.name),
            )
        return None


def load_project(root: Path) -> Project:
    """Read ``root/pyproject.toml``.

    Args:
        root: the project directory (made absolute with symlinks resolved, so a project
            reached through a symlink and through its target is one project).

    Raises:
        MissingPath: ``root`` or its ``pyproject.toml`` does not exist.
        InvalidProject: the file is not valid TOML or lacks usable metadata.
        BinaryContent: the project builds compiled code.
    """
    root = Path(_normpath(root))
    pyproject = root / PYPROJECT
    try:
        text = pyproject.read_text(encoding="utf-8")
    except FileNotFoundError:
        if root.is_dir() and ((root / "setup.cfg").is_file() or (root / "setup.py").is_file()):
            raise InvalidProject([_setup_only(root)]) from None
        what = "does not exist" if not root.exists() else f"has no {PYPROJECT}"
        raise MissingPath([Issue(root, None, f"project directory {what}")]) from None
    except (NotADirectoryError, IsADirectoryError):
        raise MissingPath([Issue(root, None, "not a project directory")]) from None
    except UnicodeDecodeError as exc:
        raise InvalidProject([Issue(pyproject, None, f"not UTF-8: {exc}")]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_LINE.search(str(exc))
        line = int(match.group(1)) if match else None
        raise InvalidProject([Issue(pyproject, line, f"invalid TOML: {exc}")]) from exc
    return _parse_project(root, text, data)


def _setup_only(root: Path) -> Issue:
    """The error for a project described only by ``setup.cfg``/``setup.py``, with the fix."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    name, version = root.name, "0.1.0"
    with contextlib.suppress(configparser.Error, OSError):
        parser.read(root / "setup.cfg", encoding="utf-8")
        name = parser.get("metadata", "name", fallback=name)
        version = parser.get("metadata", "version", fallback=version)
    where = "setup.cfg" if (root / "setup.cfg").is_file() else "setup.py"
    return Issue(
        root / where,
        None,
        f"this project is described only by {where}; cbus-compile reads pyproject.toml."
        f' Add a pyproject.toml with:\n    [project]\n    name = "{name}"\n'
        f'    version = "{version}"\n  (and its dependencies = [...]); setuptools keeps'
        " building it as before",
    )


def _parse_project(root: Path, text: str, data: Mapping[str, Any]) -> Project:
    pyproject = root / PYPROJECT
    issues: list[Issue] = []

    def fail(reason: str, needle: str | None = None) -> None:
        line = None if needle is None else _line_containing(text, needle)
        issues.append(Issue(pyproject, line, reason))

    tool = data.get("tool", {})
    tool = tool if isinstance(tool, dict) else {}
    poetry = tool.get("poetry", {})
    project = data.get("project")
    if not isinstance(project, dict):
        if isinstance(poetry, dict) and "name" in poetry:
            project = poetry_project(poetry)
        elif (root / "setup.cfg").is_file() or (root / "setup.py").is_file():
            raise InvalidProject([_setup_only(root)])
        else:
            raise InvalidProject(
                [
                    Issue(
                        pyproject,
                        None,
                        f'no [project] table: add\n    [project]\n    name = "{root.name}"\n'
                        '    version = "0.1.0"',
                    )
                ]
            )
    raw_name = project.get("name")
    if not isinstance(raw_name, str) or not raw_name:
        raise InvalidProject([Issue(pyproject, None, "[project] has no name")])
    name = canonicalize_name(raw_name)
    dynamic = project.get("dynamic", [])
    refuse_build_scripts(root, data)

    version: str | None = None
    raw_version = project.get("version")
    if raw_version is None and "version" in dynamic:
        try:
            raw_version = dynamic_version(root, raw_name, data)
        except VersionError as exc:
            fail(f"dynamic version: {exc}", "dynamic")
    if raw_version is not None:
        try:
            version = str(Version(str(raw_version)))
        except InvalidVersion:
            fail(f"invalid version {raw_version!r}", "version")
    elif "version" not in dynamic:
        fail("[project] has neither a version nor dynamic = ['version']")

    requires_python = project.get("requires-python")
    if requires_python is not None and not isinstance(requires_python, str):
        fail("requires-python must be a string", "requires-python")
        requires_python = None

    if "dependencies" in dynamic:
        fail(
            "dynamic dependencies are not supported: list them in [project] dependencies",
            "dynamic",
        )

    def parse_reqs(raw: object, where: str) -> tuple[Requirement, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
            fail(f"{where} must be a list of strings", where.split()[-1])
            return ()
        reqs: list[Requirement] = []
        for spec in raw:
            try:
                expanded = expand_project_root(_expand_root_uri(spec, root), root)
                reqs.append(Requirement(expanded))
            except InvalidRequirement as exc:
                fail(f"invalid requirement {spec!r} in {where}: {exc}", spec)
        return tuple(reqs)

    dependencies = parse_reqs(project.get("dependencies"), "[project] dependencies")
    optional: dict[NormalizedName, tuple[Requirement, ...]] = {}
    raw_optional = project.get("optional-dependencies", {})
    if isinstance(raw_optional, dict):
        for extra, raw in raw_optional.items():
            optional[canonicalize_name(extra)] = parse_reqs(
                raw, f"[project.optional-dependencies] {extra}"
            )
    else:
        fail("[project.optional-dependencies] must be a table", "optional-dependencies")

    uv = tool.get("uv", {})
    cbus = tool.get("cbus", {})
    if not isinstance(cbus, dict):
        fail("[tool.cbus] must be a table", "[tool.cbus")
        cbus = {}

    sources: dict[NormalizedName, PathSource] = {}
    for dep, rel in poetry_path_sources(data).items():
        sources[canonicalize_name(dep)] = PathSource(
            Path(_normpath(root / rel)), "[tool.poetry.dependencies] path", _first_line(text, rel)
        )
    own = uv.get("sources", {}) if isinstance(uv, dict) else {}
    own = own if isinstance(own, dict) else {}
    workspace = find_workspace(root)
    if workspace is not None:
        # uv: the workspace root's sources apply to every member; a member's own win.
        for dep, source in workspace.sources.items():
            if dep not in own:
                _uv_source(dep, source, workspace.root, workspace, workspace.text, sources, issues)
    for dep, source in own.items():
        _uv_source(dep, source, root, workspace, text, sources, issues)

    replace: dict[NormalizedName, PathSource] = {}
    raw_replace = cbus.get("replace", {})
    if not isinstance(raw_replace, dict):
        fail('[tool.cbus.replace] must be a table of name = "path"', "replace")
        raw_replace = {}
    for dep, target in raw_replace.items():
        if not isinstance(target, str):
            fail(f'[tool.cbus.replace] {dep} must be a path string ({dep} = "../lib")', dep)
            continue
        replace[canonicalize_name(dep)] = PathSource(
            Path(_normpath(root / target)), "[tool.cbus.replace]", _first_line(text, target)
        )
    sources.update(replace)
    if workspace is not None:
        for req in (*dependencies, *(r for reqs in optional.values() for r in reqs)):
            dep = canonicalize_name(req.name)
            if dep in workspace.members and dep not in sources and req.url is None:
                fail(
                    f"{req.name} is a member of the uv workspace at {workspace.root} but has no"
                    f" source: add [tool.uv.sources] {req.name} = {{ workspace = true }}"
                    " (here or in the workspace root)",
                    req.name,
                )

    factories: tuple[str, ...] | None = None
    raw_factories = cbus.get("factories")
    if raw_factories is not None:
        if isinstance(raw_factories, list) and all(isinstance(f, str) for f in raw_factories):
            factories = tuple(raw_factories)
        else:
            fail('[tool.cbus] factories must be a list of "module:function" strings', "factories")

    selection = Selection(())
    try:
        selection = find_packages(root, name, data)
    except InvalidProject as exc:
        issues.extend(exc.issues)

    if issues:
        raise InvalidProject(issues)
    return Project(
        root=root,
        name=name,
        version=version,
        requires_python=requires_python,
        dependencies=dependencies,
        optional=optional,
        sources=sources,
        replace=replace,
        factories=factories,
        packages=selection.packages,
        text=text,
        selection=selection,
        ignored=vcs_ignored(root, selection.packages),
        dev_groups=_dev_groups(data),
    )


def _dev_groups(data: Mapping[str, Any]) -> tuple[str, ...]:
    """Names of the development-only dependency tables a project declares."""
    tool = data.get("tool", {})
    found = [f"[dependency-groups] {g}" for g in data.get("dependency-groups", {})]
    poetry = tool.get("poetry", {}) if isinstance(tool, dict) else {}
    found += [f"[tool.poetry.group.{g}]" for g in poetry.get("group", {})]
    if "dev-dependencies" in poetry:
        found.append("[tool.poetry.dev-dependencies]")
    for name in ("pdm", "uv"):
        table = tool.get(name, {}) if isinstance(tool, dict) else {}
        if isinstance(table, dict) and "dev-dependencies" in table:
            found.append(f"[tool.{name}] dev-dependencies")
    return tuple(found)


def _uv_source(
    dep: str,
    source: object,
    base: Path,
    workspace: Workspace | None,
    text: str,
    sources: dict[NormalizedName, PathSource],
    issues: list[Issue],
) -> None:
    """Bind one ``[tool.uv.sources]`` entry declared in ``base/pyproject.toml``."""
    pyproject = base / PYPROJECT
    name = canonicalize_name(dep)
    if isinstance(source, dict) and isinstance(source.get("path"), str):
        sources[name] = PathSource(
            Path(_normpath(base / source["path"])),
            "[tool.uv.sources]",
            _first_line(text, source["path"]),
        )
    elif isinstance(source, dict) and source.get("workspace"):
        member = workspace.members.get(name) if workspace is not None else None
        if member is None:
            fix = (
                f"{dep} is not a member of the uv workspace at {workspace.root}: add its"
                " directory to [tool.uv.workspace] members there"
                if workspace is not None
                else f"{base} is in no uv workspace: add [tool.uv.workspace] members = [...]"
                ' to the workspace root\'s pyproject.toml, or use { path = "..." }'
            )
            issues.append(
                Issue(
                    pyproject,
                    _line_containing(text, dep),
                    f"[tool.uv.sources] {dep} = {{ workspace = true }}, but {fix}",
                )
            )
            return
        sources[name] = PathSource(
            member, "[tool.uv.sources] workspace", _line_containing(text, dep)
        )
    elif isinstance(source, list):
        issues.append(
            Issue(
                pyproject,
                _line_containing(text, dep),
                f"[tool.uv.sources] {dep}: conditional (list) sources are not supported;"
                ' use one { path = "..." }',
            )
        )
    else:
        # git/url/index sources: the requirement stays third-party (Requires-Dist).
        logger.debug("%s: source of %s is not a path; kept as a requirement", pyproject, dep)


def _expand_root_uri(spec: str, root: Path) -> str:
    """Expand hatch's ``{root:uri}`` / ``{root:parent:...:uri}`` context fields."""

    def repl(match: re.Match[str]) -> str:
        base = root
        for _ in range(match.group(1).count(":parent")):
            base = base.parent
        return base.as_uri()

    return _HATCH_ROOT_URI.sub(repl, spec)


def _file_url_to_path(url: str, project: Project) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise InvalidProject(
            [Issue(project.pyproject, project.line_of(url), f"remote file URL {url!r}")]
        )
    # urllib.request.url2pathname is unquote on POSIX, and importing it pulls in
    # http.client and ssl (~10 ms) for nothing.
    path = Path(unquote(parts.path))
    # ``file:../lib`` (uv and pip accept it) is relative to the declaring project.
    return Path(_normpath(project.root / path))


def _line_containing(text: str, needle: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    return None


def _first_line(text: str, needle: str) -> int | None:
    quoted = (f'"{needle}"', f"'{needle}'")
    for number, line in enumerate(text.splitlines(), start=1):
        if any(q in line for q in quoted):
            return number
    return None


def _normpath(path: Path) -> str:
    # Physical, not lexical: a project reached through two spellings (a symlink and
    # its target) must be one node of the graph, or it would "duplicate" itself.
    return os.path.realpath(path)
