"""Read one project's ``pyproject.toml``: name, version, requirements, path sources, packages.

Nothing here follows dependencies (that is :mod:`controllerbus.compiler.graph`); this
module answers "what does this one project declare?" and "which files would it ship?".

Where a local path for a dependency can come from:

* ``[tool.uv.sources] name = { path = "../lib" }``
* a PEP 508 direct reference ``name @ file:../lib`` (relative to the project), also
  with hatch's context fields ``{root:uri}`` / ``{root:parent:uri}``
* ``[tool.cbus.replace] name = "../lib"`` (Go's ``replace``)

Which top-level packages a project ships (first match wins):

1. ``[tool.cbus] packages = ["src/foo", "bar.py"]`` (paths relative to the project);
2. ``[tool.hatch.build.targets.wheel] packages`` (same form);
3. a ``src/`` directory: every package (with or without ``__init__.py``) and every
   ``.py`` module directly inside it;
4. flat layout: ``<name>/__init__.py`` or ``<name>.py`` where ``<name>`` is the project
   name with ``-`` and ``.`` as ``_`` (hatchling's own heuristic).
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from controllerbus.compiler.errors import InvalidProject, Issue, MissingPath

__all__ = [
    "PYPROJECT",
    "PackageSource",
    "PathSource",
    "Project",
    "load_project",
]

logger = logging.getLogger(__name__)

PYPROJECT = "pyproject.toml"

# Directory names under src/ that are never packages.
_NOT_PACKAGES = re.compile(r"(__pycache__|.*\.(egg-info|dist-info|data))")
_HATCH_ROOT_URI = re.compile(r"\{root((?::parent)*):uri\}")
_TOML_LINE = re.compile(r"at line (\d+)")


@dataclass(frozen=True, slots=True)
class PackageSource:
    """One top-level importable name a project ships.

    Attributes:
        name: the import name (``foo`` for ``src/foo/`` or ``foo.py``).
        path: absolute path of the package directory or module file.
        kind: ``package`` (has ``__init__.py``), ``namespace`` (PEP 420) or ``module``.
    """

    name: str
    path: Path
    kind: Literal["package", "namespace", "module"]


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
        InvalidProject: the file is not valid TOML or lacks a usable ``[project]``.
    """
    root = Path(_normpath(root))
    pyproject = root / PYPROJECT
    try:
        text = pyproject.read_text(encoding="utf-8")
    except FileNotFoundError:
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


def _parse_project(root: Path, text: str, data: Mapping[str, Any]) -> Project:
    pyproject = root / PYPROJECT
    issues: list[Issue] = []

    def fail(reason: str, needle: str | None = None) -> None:
        line = None if needle is None else _line_containing(text, needle)
        issues.append(Issue(pyproject, line, reason))

    project = data.get("project")
    if not isinstance(project, dict):
        raise InvalidProject([Issue(pyproject, None, "no [project] table")])
    raw_name = project.get("name")
    if not isinstance(raw_name, str) or not raw_name:
        raise InvalidProject([Issue(pyproject, None, "[project] has no name")])
    name = canonicalize_name(raw_name)
    dynamic = project.get("dynamic", [])

    version: str | None = None
    raw_version = project.get("version")
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
                reqs.append(Requirement(_expand_root_uri(spec, root)))
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

    tool = data.get("tool", {})
    uv = tool.get("uv", {}) if isinstance(tool, dict) else {}
    cbus = tool.get("cbus", {}) if isinstance(tool, dict) else {}
    if not isinstance(cbus, dict):
        fail("[tool.cbus] must be a table", "[tool.cbus")
        cbus = {}

    sources: dict[NormalizedName, PathSource] = {}
    raw_sources = uv.get("sources", {}) if isinstance(uv, dict) else {}
    for dep, source in raw_sources.items() if isinstance(raw_sources, dict) else ():
        if isinstance(source, dict) and isinstance(source.get("path"), str):
            sources[canonicalize_name(dep)] = PathSource(
                Path(_normpath(root / source["path"])),
                "[tool.uv.sources]",
                _first_line(text, source["path"]),
            )
        elif isinstance(source, dict) and source.get("workspace"):
            fail(
                f"[tool.uv.sources] {dep}: workspace sources are not supported;"
                ' use { path = "..." }',
                dep,
            )
        elif isinstance(source, list):
            fail(f"[tool.uv.sources] {dep}: conditional (list) sources are not supported", dep)
        else:
            # git/url/index sources: the requirement stays third-party (Requires-Dist).
            logger.debug("%s: source of %s is not a path; kept as a requirement", pyproject, dep)

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

    factories: tuple[str, ...] | None = None
    raw_factories = cbus.get("factories")
    if raw_factories is not None:
        if isinstance(raw_factories, list) and all(isinstance(f, str) for f in raw_factories):
            factories = tuple(raw_factories)
        else:
            fail('[tool.cbus] factories must be a list of "module:function" strings', "factories")

    packages: tuple[PackageSource, ...] = ()
    try:
        packages = _find_packages(root, name, data)
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
        packages=packages,
        text=text,
    )


def _find_packages(
    root: Path, name: NormalizedName, data: Mapping[str, Any]
) -> tuple[PackageSource, ...]:
    pyproject = root / PYPROJECT
    tool = data.get("tool", {})
    explicit: object = tool.get("cbus", {}).get("packages")
    where = "[tool.cbus] packages"
    if explicit is None:
        wheel = tool.get("hatch", {}).get("build", {}).get("targets", {}).get("wheel", {})
        explicit = wheel.get("packages") if isinstance(wheel, dict) else None
        where = "[tool.hatch.build.targets.wheel] packages"
    if explicit is not None:
        if not isinstance(explicit, list) or not all(isinstance(p, str) for p in explicit):
            raise InvalidProject([Issue(pyproject, None, f"{where} must be a list of paths")])
        return _explicit_packages(root, explicit, where)

    src = root / "src"
    if src.is_dir():
        found = [
            source
            for child in sorted(src.iterdir(), key=lambda p: p.name)
            if (source := _package_at(child)) is not None
        ]
        if found:
            return tuple(found)

    flat = name.replace("-", "_").replace(".", "_")
    if (root / flat / "__init__.py").is_file():
        return (PackageSource(flat, root / flat, "package"),)
    if (root / f"{flat}.py").is_file():
        return (PackageSource(flat, root / f"{flat}.py", "module"),)
    raise InvalidProject(
        [
            Issue(
                pyproject,
                None,
                f"cannot find the packages to vendor (looked for src/*, {flat}/__init__.py"
                f' and {flat}.py); list them in [tool.cbus] packages = ["path/to/pkg"]',
            )
        ]
    )


def _explicit_packages(root: Path, paths: Sequence[str], where: str) -> tuple[PackageSource, ...]:
    found: list[PackageSource] = []
    issues: list[Issue] = []
    for raw in paths:
        path = Path(_normpath(root / raw))
        source = _package_at(path)
        if source is None:
            reason = "does not exist" if not path.exists() else "is not a package or .py module"
            issues.append(Issue(root / PYPROJECT, None, f"{where}: {raw!r} {reason}"))
        else:
            found.append(source)
    if issues:
        raise InvalidProject(issues)
    return tuple(found)


def _package_at(path: Path) -> PackageSource | None:
    name = path.name
    if name.startswith(".") or _NOT_PACKAGES.fullmatch(name):
        return None
    if path.is_dir():
        if not name.isidentifier():
            return None
        if (path / "__init__.py").is_file():
            return PackageSource(name, path, "package")
        # A PEP 420 namespace package: a directory holding Python code somewhere.
        if any(p.suffix == ".py" for p in path.rglob("*.py")):
            return PackageSource(name, path, "namespace")
        return None
    if path.suffix == ".py" and path.is_file() and path.stem.isidentifier():
        return PackageSource(path.stem, path, "module")
    return None


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
