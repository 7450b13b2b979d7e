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

Which files of each package are vendored is :mod:`~controllerbus.compiler.files`;
factories are found by :func:`~controllerbus.compiler.factories.find_factories`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from controllerbus.compiler.discovery import PackageSource
from controllerbus.compiler.errors import (
    ConflictingPaths,
    ConflictingRequirements,
    DependencyCycle,
    DuplicatePackage,
    InvalidProject,
    Issue,
    MissingPath,
)
from controllerbus.compiler.factories import FactoryRef, find_factories
from controllerbus.compiler.files import SourceFile, list_files
from controllerbus.compiler.project import PathSource, Project, load_project
from controllerbus.compiler.requirements import (
    Declared,
    merge_requirements,
    merge_requires_python,
)
from controllerbus.plugin import HOST_PACKAGE

__all__ = ["HOST_DISTRIBUTION", "MIN_REQUIRES_PYTHON", "Graph", "SourceFile", "analyse"]

logger = logging.getLogger(__name__)

#: The host's own distribution: never vendored, always a plain requirement.
HOST_DISTRIBUTION = canonicalize_name(HOST_PACKAGE)
#: Every plugin needs at least the host's Python (and must exclude Python 2, or
#: hatchling tags the wheel ``py2.py3``).
MIN_REQUIRES_PYTHON = ">=3.11"


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
    files, parsed = list_files(packages)
    factories = find_factories(roots, files, parsed)
    requires = _merge(walker)
    extras = _target_extras(walker, roots)
    requires_python = merge_requires_python(projects, MIN_REQUIRES_PYTHON)
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
