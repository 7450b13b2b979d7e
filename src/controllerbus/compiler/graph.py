"""Walk the targets' path-dependency graph and collect what the plugin is made of.

:func:`analyse` reads every first-party project (targets and their path
dependencies, transitively), lists the files to vendor with their content digests,
finds the factories, and merges the third-party requirements. It is the only step
that reads the source tree; everything after it (:mod:`~controllerbus.compiler.plan`)
is a pure function of the :class:`Graph`.

Resolution rules:

* A dependency is *first-party* when a local path is declared for it (see
  :mod:`~controllerbus.compiler.project`). A target's ``[tool.cbus.replace]`` applies
  to the whole graph and beats what dependencies declare (Go: only the main
  module's ``replace`` counts); other declarations apply to the declaring project.
* Once a name is first-party anywhere in the graph, every requirement on that name
  is served by the vendored copy (there can be only one copy of a top-level
  package in a wheel); a version specifier on it is checked against the local
  project's version.
* ``controllerbus`` is never vendored: the host owns the interface types. A
  requirement on it (by name or by path) becomes the plain ``Requires-Dist:
  controllerbus`` line (with the declared specifier, if any); the generated module
  imports it, so that line is always present.
* Everything else becomes ``Requires-Dist``, merged by
  :func:`~controllerbus.compiler.requirements.merge_requirements`.

Vendored files: every regular file under each package directory (or the module
file), skipping hidden files and directories, ``__pycache__`` and ``*.pyc``/``*.pyo``.
Files are addressed by their path inside the wheel (``pkg/mod.py``), never by their
absolute location, so moving the checkout does not change the plugin.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from controllerbus.compiler.discovery import PackageSource
from controllerbus.compiler.errors import (
    BinaryContent,
    ConflictingPaths,
    ConflictingRequirements,
    DependencyCycle,
    DuplicatePackage,
    InvalidProject,
    Issue,
    MissingPath,
    NoFactories,
    SourceSyntaxError,
)
from controllerbus.compiler.factories import (
    FACTORY_FUNCTION,
    FactoryRef,
    ParsedModule,
    module_name,
    parse_module,
)
from controllerbus.compiler.project import PathSource, Project, load_project
from controllerbus.compiler.requirements import Declared, merge_requirements, satisfiable
from controllerbus.plugin import HOST_PACKAGE

__all__ = ["HOST_DISTRIBUTION", "MIN_REQUIRES_PYTHON", "Graph", "SourceFile", "analyse"]

logger = logging.getLogger(__name__)

#: The host's own distribution: never vendored, always a plain requirement.
HOST_DISTRIBUTION = canonicalize_name(HOST_PACKAGE)
#: Every plugin needs at least the host's Python (and must exclude Python 2, or
#: hatchling tags the wheel ``py2.py3``).
MIN_REQUIRES_PYTHON = ">=3.11"

_SKIP_SUFFIXES = frozenset({".pyc", ".pyo"})
# Compiled code: a py3-none-any wheel that carries one of these is broken elsewhere.
_BINARY = re.compile(r"\.(so|pyd|dylib|dll)(\.[0-9.]*)?$")


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file to vendor into the plugin.

    Attributes:
        dest: path inside the wheel (POSIX, relative), e.g. ``pkg/mod.py``. A string,
            not a ``PurePosixPath``: analysis builds one per file on every compile,
            and a no-op compile of a large plugin is mostly this loop.
        source: the absolute source path as a string (read at codegen time; never
            hashed); :attr:`path` is the same as a ``Path``.
        digest: sha256 hex of the file's bytes.
        project: the canonical name of the project that ships it.
    """

    dest: str
    source: str
    digest: str
    project: NormalizedName

    @property
    def path(self) -> Path:
        """The absolute source path."""
        return Path(self.source)


@dataclass(frozen=True, slots=True)
class Graph:
    """The analysed plugin: projects, files, factories and requirements.

    Attributes:
        targets: the target projects, in the order given (duplicates removed).
        projects: every first-party project (targets first, then dependencies in
            discovery order).
        edges: path-dependency edges by canonical name, for display and tests.
        files: the files to vendor, sorted by ``dest``.
        factories: the factory constructors found in the targets, sorted.
        requires: merged ``Requires-Dist`` lines, sorted.
        requires_python: the merged ``Requires-Python`` of all projects.
        package_roots: every vendored package directory and module file.
        extras: the targets' optional dependencies, carried into the wheel's metadata
            (third-party only; a local project in an extra is refused).
        dropped: what the projects declare that does not ship (development groups).
    """

    targets: tuple[Project, ...]
    projects: tuple[Project, ...]
    edges: Mapping[NormalizedName, tuple[NormalizedName, ...]]
    files: tuple[SourceFile, ...]
    factories: tuple[FactoryRef, ...]
    requires: tuple[str, ...]
    requires_python: str
    package_roots: tuple[Path, ...] = ()
    extras: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()

    @property
    def vendored(self) -> tuple[str, ...]:
        """``name version (directory)`` of every vendored first-party project."""
        return tuple(f"{p.name} {p.version or '(no version)'} ({p.root})" for p in self.projects)

    def to_json(self) -> dict[str, object]:
        """What the compile took in, for ``--json``: vendored, extras, dropped."""
        return {
            "vendored": list(self.vendored),
            "extras": {name: list(reqs) for name, reqs in self.extras.items()},
            "dropped": list(self.dropped),
        }

    @property
    def watched_paths(self) -> tuple[Path, ...]:
        """Every file the plugin is made of: each project's ``pyproject.toml`` and each
        vendored file (absolute, sorted). A change to any of them can change the wheel.
        """
        paths = {project.pyproject for project in self.projects}
        paths.update(source.path for source in self.files)
        return tuple(sorted(paths, key=os.fspath))  # str keys: Path comparison is slow

    @property
    def watch_roots(self) -> tuple[Path, ...]:
        """The smallest set to hand to a recursive watcher: each ``pyproject.toml`` and
        each package directory or module file. Watching these (rather than the
        project directories) also catches files *added* to a package, without
        descending into ``.venv`` or ``.git``.
        """
        paths = {project.pyproject for project in self.projects}
        paths.update(self.package_roots)
        return tuple(sorted(paths, key=os.fspath))


def analyse(targets: Sequence[Path]) -> Graph:
    """Analyse the target projects and their path dependencies.

    Args:
        targets: project directories (each with a ``pyproject.toml``); relative
            paths are taken from the current directory.

    Raises:
        MissingPath: a target or a path dependency does not exist.
        InvalidProject: a ``pyproject.toml`` is invalid, or packages cannot be found.
        DependencyCycle: path dependencies form a cycle.
        ConflictingPaths: one name is bound to two directories.
        DuplicatePackage: two projects ship the same top-level package.
        ConflictingRequirements: a third-party requirement cannot be satisfied.
        SourceSyntaxError: a vendored ``.py`` file does not parse.
        NoFactories: no target defines a factory.
    """
    if not targets:
        raise MissingPath([Issue(None, None, "no target projects given")])
    walker = _Walker()
    roots: list[Project] = []
    missing: list[Issue] = []
    for target in targets:
        try:
            project = walker.load(Path(target))
        except MissingPath as exc:
            missing.extend(exc.issues)
            continue
        if project.name == HOST_DISTRIBUTION:
            raise InvalidProject(
                [Issue(project.pyproject, None, "controllerbus itself cannot be a plugin target")]
            )
        if all(other.root != project.root for other in roots):
            roots.append(project)
    if missing:
        raise MissingPath(missing)
    walker.set_targets(roots)
    for project in roots:
        walker.visit(project, frozenset(), [])
    walker.raise_collected()

    projects = walker.order
    packages = _check_packages(projects)
    files, parsed = _list_files(packages)
    factories = _find_factories(roots, files, parsed)
    requires = _merge(walker)
    extras = _target_extras(walker, roots)
    requires_python = _merge_requires_python(projects)
    return Graph(
        targets=tuple(roots),
        projects=tuple(projects),
        edges={
            name: tuple(walker.projects[child].name for child in children)
            for name, children in walker.edge_names()
        },
        files=files,
        factories=factories,
        requires=requires,
        requires_python=requires_python,
        package_roots=tuple(sorted({package.path for package, _ in packages})),
        extras=extras,
        dropped=tuple(
            f"{project.name}: {group} (development only)"
            for project in projects
            for group in project.dev_groups
        ),
    )


def _target_extras(walker: _Walker, targets: Sequence[Project]) -> dict[str, tuple[str, ...]]:
    """The targets' extras as ``Requires-Dist`` lines by extra name.

    Raises:
        InvalidProject: an extra names a local project (it cannot be vendored only
            when the extra is asked for).
    """
    extras: dict[str, set[str]] = {}
    issues: list[Issue] = []
    for target in targets:
        base = {str(r) for r in target.requirements()}
        for extra in sorted(target.optional):
            for req in target.requirements(frozenset({extra})):
                if str(req) in base:
                    continue
                name = canonicalize_name(req.name)
                if name == HOST_DISTRIBUTION:
                    extras.setdefault(extra, set()).add(str(_host_requirement(req)))
                    continue
                if name in walker.bindings or walker._source_for(target, req, name) is not None:
                    issues.append(
                        Issue(
                            target.pyproject,
                            target.line_of(extra),
                            f"extra {extra!r} requires the local project {req.name}: a plugin"
                            " wheel cannot vendor it for one extra only; move it to [project]"
                            " dependencies, or remove it from the extra",
                        )
                    )
                    continue
                extras.setdefault(extra, set()).add(str(req))
    if issues:
        raise InvalidProject(issues)
    return {extra: tuple(sorted(reqs)) for extra, reqs in sorted(extras.items())}


class _Walker:
    """Depth-first walk over path dependencies, collecting issues as it goes."""

    def __init__(self) -> None:
        self.projects: dict[Path, Project] = {}
        self.order: list[Project] = []
        self.extras: dict[Path, frozenset[str]] = {}
        self.edges: dict[Path, list[Path]] = {}
        # Canonical name -> (directory, who declared it) for every first-party name.
        self.bindings: dict[NormalizedName, tuple[Path, Project, PathSource]] = {}
        self.global_replace: dict[NormalizedName, tuple[Project, PathSource]] = {}
        # Every requirement met on the walk (except controllerbus and self-references),
        # with its declaring project; _merge sorts first-party from third-party.
        self.requirements: list[tuple[Requirement, Project]] = []
        self.missing: list[Issue] = []
        self.conflicts: list[Issue] = []

    def load(self, root: Path) -> Project:
        key = Path(os.path.realpath(root))
        project = self.projects.get(key)
        if project is None:
            project = load_project(key)
            self.projects[key] = project
        return project

    def set_targets(self, targets: Iterable[Project]) -> None:
        for target in targets:
            for name, source in target.replace.items():
                seen = self.global_replace.get(name)
                if seen is not None and seen[1].path != source.path:
                    self.conflicts.append(
                        Issue(
                            target.pyproject,
                            source.line,
                            f"{name} is replaced by {source.path} here but by "
                            f"{seen[1].path} in {seen[0].pyproject}",
                        )
                    )
                self.global_replace.setdefault(name, (target, source))

    def visit(self, project: Project, extras: frozenset[str], stack: list[Path]) -> None:
        key = project.root
        known = self.extras.get(key)
        if known is not None and extras <= known:
            return
        if known is None:
            self.order.append(project)
        self.extras[key] = (known or frozenset()) | extras
        stack.append(key)
        children = self.edges.setdefault(key, [])
        for req in project.requirements(self.extras[key]):
            name = canonicalize_name(req.name)
            if name == HOST_DISTRIBUTION:
                self.requirements.append((_host_requirement(req), project))
                continue
            source = self._source_for(project, req, name)
            if source is None:
                self.requirements.append((req, project))
                continue
            child = self._load_dependency(project, req, source)
            if child is None:
                continue
            bound = self.bindings.setdefault(name, (child.root, project, source))
            if bound[0] != child.root:
                self.conflicts.append(
                    Issue(
                        project.pyproject,
                        source.line,
                        f"{name} is {child.root} here ({source.origin}) but {bound[0]} in "
                        f"{bound[1].pyproject} ({bound[2].origin})",
                    )
                )
                continue
            # Checked in _merge with the other users of this name.
            self.requirements.append((req, project))
            if child.root in stack:
                cycle = [*stack[stack.index(child.root) :], child.root]
                names = " -> ".join(
                    f"{self.projects[p].name} ({self.projects[p].pyproject})" for p in cycle
                )
                raise DependencyCycle(
                    [
                        Issue(
                            project.pyproject,
                            source.line,
                            f"path dependencies form a cycle: {names}",
                        )
                    ]
                )
            if child.root not in children:
                children.append(child.root)
            self.visit(child, frozenset(req.extras), stack)
        stack.pop()

    def _source_for(
        self, project: Project, req: Requirement, name: NormalizedName
    ) -> PathSource | None:
        replaced = self.global_replace.get(name)
        if replaced is not None:
            return replaced[1]
        return project.path_for(req)

    def _load_dependency(
        self, project: Project, req: Requirement, source: PathSource
    ) -> Project | None:
        try:
            child = self.load(source.path)
        except MissingPath as exc:
            reason = exc.issues[0].reason
            self.missing.append(
                Issue(
                    project.pyproject,
                    source.line,
                    f"dependency {req.name} ({source.origin}): {source.path}: {reason}",
                )
            )
            return None
        if child.name != canonicalize_name(req.name):
            raise InvalidProject(
                [
                    Issue(
                        project.pyproject,
                        source.line,
                        f"dependency {req.name} points at {child.root}, whose project is"
                        f" named {child.name}",
                    )
                ]
            )
        return child

    def raise_collected(self) -> None:
        if self.missing:
            raise MissingPath(self.missing)
        if self.conflicts:
            raise ConflictingPaths(self.conflicts)

    def edge_names(self) -> Iterator[tuple[NormalizedName, list[Path]]]:
        for key, children in self.edges.items():
            yield self.projects[key].name, children


def _host_requirement(req: Requirement) -> Requirement:
    """``controllerbus`` by path or URL becomes the bare name (the host provides it)."""
    if req.url is None:
        return req
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    marker = f"; {req.marker}" if req.marker is not None else ""
    return Requirement(f"{HOST_DISTRIBUTION}{extras}{marker}")


def _check_packages(projects: Sequence[Project]) -> list[tuple[PackageSource, Project]]:
    """Pair each package with its project; two providers of one top-level name are an error.

    Two PEP 420 namespace portions of the same name may coexist (that is what
    namespace packages are for); a clash of their files is caught by ``_list_files``.
    """
    seen: dict[str, tuple[PackageSource, Project]] = {}
    result: list[tuple[PackageSource, Project]] = []
    issues: list[Issue] = []
    for project in projects:
        for package in project.packages:
            if package.name == HOST_PACKAGE:
                issues.append(
                    Issue(
                        project.pyproject,
                        None,
                        f"ships a top-level package named {HOST_PACKAGE}, which the host owns",
                    )
                )
                continue
            other = seen.get(package.name)
            if other is not None and not (package.kind == other[0].kind == "namespace"):
                issues.append(
                    Issue(
                        project.pyproject,
                        None,
                        f"top-level package {package.name!r} ({package.path}) is also provided"
                        f" by {other[1].name} ({other[0].path})",
                    )
                )
                continue
            seen.setdefault(package.name, (package, project))
            result.append((package, project))
    if issues:
        raise DuplicatePackage(issues)
    return result


def _list_files(
    packages: Sequence[tuple[PackageSource, Project]],
) -> tuple[tuple[SourceFile, ...], dict[str, ParsedModule]]:
    """Read every file to vendor once: digest it and, for ``.py`` files, parse it.

    Raises:
        DuplicatePackage: two namespace portions ship the same file.
        SourceSyntaxError: one issue per ``.py`` file that does not parse.
    """
    owners: dict[str, SourceFile] = {}
    parsed: dict[str, ParsedModule] = {}
    clashes: list[Issue] = []
    errors: list[Issue] = []
    binaries: list[Issue] = []
    filters: dict[Path, Callable[[str], bool] | None] = {}
    for package, project in packages:
        root = str(package.path)
        if package.kind == "module":
            found: Iterable[tuple[str, str]] = [(root, package.path.name)]
        else:
            found = _walk(root, package.name)
        if project.root not in filters:
            filters[project.root] = _file_filter(project)
        keep = filters[project.root]
        for path_str, dest in found:
            if keep is not None and not keep(path_str):
                continue
            if _BINARY.search(dest):
                binaries.append(
                    Issue(
                        Path(path_str),
                        None,
                        f"binary file {dest} cannot go into a py3-none-any plugin wheel: ship"
                        " compiled code as its own platform wheel and depend on it by name,"
                        " or list the file in .gitignore if it is a build leftover",
                    )
                )
                continue
            with open(path_str, "rb") as f:
                data = f.read()
            digest = hashlib.sha256(data).hexdigest()
            other = owners.get(dest)
            if other is not None:
                clashes.append(
                    Issue(
                        Path(path_str),
                        None,
                        f"{dest} is also provided by {other.project} ({other.source})",
                    )
                )
                continue
            owners[dest] = SourceFile(dest, path_str, digest, project.name)
            if dest.endswith(".py"):
                result = parse_module(data, digest, path_str)
                parsed[dest] = result
                if result.error is not None:
                    line, message = result.error
                    errors.append(Issue(Path(path_str), line, f"syntax error: {message}"))
    if binaries:
        raise BinaryContent(binaries)
    if clashes:
        raise DuplicatePackage(clashes)
    if errors:
        raise SourceSyntaxError(errors)
    files = tuple(sorted(owners.values(), key=lambda f: f.dest))
    return files, parsed


def _file_filter(project: Project) -> Callable[[str], bool] | None:
    """``True`` for absolute paths the project's backend ships (``None``: every file).

    Combines git's ignore rules, the backend's ``exclude`` globs, and its rule for
    data files (setuptools ships only ``.py`` files and ``package-data``).
    """
    ignored = project.ignored
    data = project.selection.data
    exclude = None
    if project.selection.exclude:
        import pathspec

        exclude = pathspec.GitIgnoreSpec.from_lines(project.selection.exclude)
    if ignored is None and data is None and exclude is None:
        return None
    prefix = str(project.root) + "/"

    def keep(path: str) -> bool:
        if ignored is not None and ignored(path):
            return False
        rel = path[len(prefix) :] if path.startswith(prefix) else path
        if exclude is not None and exclude.match_file(rel):
            return False
        return data is None or path.endswith(".py") or data(rel)

    return keep


def _walk(root: str, prefix: str) -> Iterator[tuple[str, str]]:
    """Yield ``(absolute path, path in the wheel)`` of every file to vendor under ``root``.

    Plain strings and ``os.scandir`` (no ``pathlib``, no extra ``stat`` where the
    directory entry's type suffices): this runs over every file on every compile.
    Directory symlinks are not followed (no loops); file symlinks are, by content.
    """
    pending = [(root, prefix)]
    while pending:
        directory, dest_dir = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if name != "__pycache__":
                        pending.append((entry.path, f"{dest_dir}/{name}"))
                elif entry.is_file() and os.path.splitext(name)[1] not in _SKIP_SUFFIXES:
                    yield entry.path, f"{dest_dir}/{name}"


def _find_factories(
    targets: Sequence[Project],
    files: Sequence[SourceFile],
    parsed: Mapping[str, ParsedModule],
) -> tuple[FactoryRef, ...]:
    modules: dict[str, SourceFile] = {}
    for source in files:
        name = module_name(source.dest)
        if name is not None:
            modules[name] = source
    found: set[FactoryRef] = set()
    issues: list[Issue] = []
    empty: list[Project] = []
    for target in targets:
        refs: list[FactoryRef] = []
        if target.factories is not None:
            for entry in target.factories:
                ref, reason = _explicit_factory(entry, modules, parsed)
                if ref is None:
                    issues.append(
                        Issue(target.pyproject, target.line_of(entry), f"[tool.cbus] {reason}")
                    )
                else:
                    refs.append(ref)
        else:
            for name, source in modules.items():
                if source.project != target.name:
                    continue
                line = parsed[source.dest].functions.get(FACTORY_FUNCTION)
                if line is not None:
                    refs.append(FactoryRef(name, FACTORY_FUNCTION, source.path, line))
        if not refs:
            empty.append(target)
        found.update(refs)
    if issues:
        raise InvalidProject(issues)
    if not found:
        raise NoFactories(
            Issue(
                target.pyproject,
                None,
                f"no factories in {', '.join(p.name for p in target.packages) or 'any package'}:"
                f" define a module-level def {FACTORY_FUNCTION}(bus) or list them in"
                ' [tool.cbus] factories = ["pkg.module:function"]',
            )
            for target in targets
        )
    for target in empty:
        logger.warning("%s: target %s has no factories", target.pyproject, target.name)
    return tuple(sorted(found))


def _explicit_factory(
    entry: str,
    modules: Mapping[str, SourceFile],
    parsed: Mapping[str, ParsedModule],
) -> tuple[FactoryRef | None, str]:
    module, sep, function = entry.partition(":")
    if (
        not sep
        or not function.isidentifier()
        or not all(part.isidentifier() for part in module.split("."))
    ):
        return None, f'factory {entry!r} is not of the form "package.module:function"'
    source = modules.get(module)
    if source is None:
        return None, f"factory {entry!r}: module {module} is not in any vendored package"
    line = parsed[source.dest].names.get(function)
    if line is None:
        return None, f"factory {entry!r}: {source.path} defines no top-level {function}"
    return FactoryRef(module, function, source.path, line), ""


def _merge(walker: _Walker) -> tuple[str, ...]:
    declared = [Declared(Requirement(HOST_DISTRIBUTION))]
    issues: list[Issue] = []
    for req, project in walker.requirements:
        name = canonicalize_name(req.name)
        bound = walker.bindings.get(name)
        if bound is None:
            declared.append(Declared(req, project.pyproject, project.line_of(req.name)))
            continue
        # Served by the vendored copy; its version must still fit the specifier.
        local = walker.projects[bound[0]]
        if (
            req.specifier
            and local.version is not None
            and not req.specifier.contains(local.version, prereleases=True)
        ):
            issues.append(
                Issue(
                    project.pyproject,
                    project.line_of(req.name),
                    f"{req} is not satisfied by the vendored {name} {local.version} ({local.root})",
                )
            )
    if issues:
        raise ConflictingRequirements(issues)
    return merge_requirements(declared)


def _merge_requires_python(projects: Sequence[Project]) -> str:
    merged = SpecifierSet(MIN_REQUIRES_PYTHON)
    for project in projects:
        if project.requires_python is None:
            continue
        try:
            merged &= SpecifierSet(project.requires_python)
        except InvalidSpecifier as exc:
            raise InvalidProject(
                [
                    Issue(
                        project.pyproject,
                        project.line_of("requires-python"),
                        f"invalid requires-python: {exc}",
                    )
                ]
            ) from exc
    if not satisfiable(merged):
        raise ConflictingRequirements(
            [
                Issue(
                    project.pyproject,
                    project.line_of("requires-python"),
                    f"requires-python {project.requires_python!r} leaves no Python in {merged}",
                )
                for project in projects
                if project.requires_python is not None
            ]
        )
    return str(_drop_dominated_lower_bounds(merged))


def _drop_dominated_lower_bounds(specifier: SpecifierSet) -> SpecifierSet:
    """``>=3.10,>=3.11`` -> ``>=3.11``: every library adds its own floor, keep the highest."""
    floors = [s for s in specifier if s.operator == ">="]
    if len(floors) < 2:
        return specifier
    highest = max(floors, key=lambda s: Version(s.version))
    kept = [s for s in specifier if s.operator != ">=" or s is highest]
    return SpecifierSet(",".join(str(s) for s in kept))
