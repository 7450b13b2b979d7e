"""Merge the third-party requirements of a plugin's first-party projects into ``Requires-Dist``.

Rules (all parsing and comparison through :mod:`packaging`):

* Requirements are grouped by canonical name and marker. One group becomes one line:
  extras are united, specifiers intersected; the canonical name is used so the
  output does not depend on which project spelled the name first.
* Different markers stay separate lines (pip evaluates each), but each marked group
  must be satisfiable together with the unmarked group of the same name, because
  wherever the marker holds both apply.
* A group is *conflicting* when no version satisfies all its specifiers, or when it
  names two different direct-reference URLs.
* Output is sorted by (name, marker) so the ``Requires-Dist`` list, and with it the
  build hash, is independent of declaration order.

Satisfiability is checked by searching for a witness among the versions named by
the clauses and their neighbours (``1.4`` -> ``1.4``, ``1.5``, ``1.4.1``, ``1.4.0.1``,
``1.3``, ``0``). That is exact for the usual ``>= < == != ~= ==x.*`` combinations;
an exotic set that is satisfiable only by a version none of those neighbours hits
would be reported as conflicting, and the message shows the merged set to check.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from controllerbus.compiler.errors import ConflictingRequirements, InvalidProject, Issue

if TYPE_CHECKING:
    from controllerbus.compiler.project import Project

__all__ = ["Declared", "merge_requirements", "satisfiable"]


@dataclass(frozen=True, slots=True)
class Declared:
    """A requirement together with where it was declared (for conflict messages)."""

    requirement: Requirement
    path: Path | None = None
    line: int | None = None

    def __str__(self) -> str:
        if self.path is None:
            return str(self.requirement)
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{self.requirement} in {where}"


@dataclass(slots=True)
class _Group:
    name: NormalizedName
    marker: str
    extras: set[str]
    specifier: SpecifierSet
    urls: set[str]
    declared: list[Declared]


def merge_requirements(declared: Iterable[Declared]) -> tuple[str, ...]:
    """Merge, deduplicate and check requirements; return sorted ``Requires-Dist`` lines.

    Raises:
        ConflictingRequirements: one issue per distribution whose specifiers cannot
            all hold, naming every declaring ``pyproject.toml``.
    """
    groups: dict[tuple[NormalizedName, str], _Group] = {}
    for item in declared:
        req = item.requirement
        name = canonicalize_name(req.name)
        marker = "" if req.marker is None else str(req.marker)
        group = groups.setdefault(
            (name, marker), _Group(name, marker, set(), SpecifierSet(), set(), [])
        )
        group.extras |= set(req.extras)
        group.specifier &= req.specifier
        if req.url is not None:
            group.urls.add(req.url)
        group.declared.append(item)

    issues: list[Issue] = []
    for (name, marker), group in sorted(groups.items()):
        unmarked = groups.get((name, "")) if marker else None
        combined = group.specifier & unmarked.specifier if unmarked else group.specifier
        everyone = group.declared + (unmarked.declared if unmarked else [])
        reason = ""
        if len(group.urls) > 1:
            reason = f"{name} is required from different URLs: {', '.join(sorted(group.urls))}"
        elif not satisfiable(combined):
            reason = f"no version of {name} satisfies {combined}"
        if reason:
            first = everyone[0]
            sources = "; ".join(str(d) for d in everyone)
            issues.append(Issue(first.path, first.line, f"{reason} (declared as: {sources})"))
    if issues:
        raise ConflictingRequirements(issues)

    lines: list[str] = []
    for (_name, _marker), group in sorted(groups.items()):
        extras = f"[{','.join(sorted(group.extras))}]" if group.extras else ""
        if group.urls:
            # A direct reference cannot carry specifiers (PEP 508); the URL pins it.
            body = f"{group.name}{extras} @ {next(iter(group.urls))}"
            if group.marker:
                body += " "
        else:
            body = f"{group.name}{extras}{group.specifier}"
        text = f"{body}; {group.marker}" if group.marker else body
        lines.append(str(Requirement(text)))
    return tuple(lines)


def satisfiable(specifier: SpecifierSet) -> bool:
    """Whether some version (pre-releases included) satisfies every clause of ``specifier``."""
    clauses = list(specifier)
    if not clauses:
        return True
    arbitrary = {clause.version for clause in clauses if clause.operator == "==="}
    if arbitrary:
        return len(arbitrary) == 1 and all(
            clause.contains(next(iter(arbitrary)), prereleases=True) for clause in clauses
        )
    candidates: set[Version] = {Version("0")}
    for clause in clauses:
        try:
            version = Version(clause.version.removesuffix(".*"))
        except InvalidVersion:
            continue
        release = version.release
        candidates.add(version)
        neighbours = [
            (*release[:-1], release[-1] + 1),
            (*release, 1),
            (*release, 0, 1),
        ]
        if release[-1] > 0:
            neighbours.append((*release[:-1], release[-1] - 1))
        epoch = f"{version.epoch}!" if version.epoch else ""
        candidates.update(Version(epoch + ".".join(map(str, n))) for n in neighbours)
    return any(specifier.contains(candidate, prereleases=True) for candidate in candidates)


def merge_requires_python(projects: Sequence[Project], floor: str) -> str:
    """``floor`` intersected with every project's ``requires-python``, highest floor kept.

    Raises:
        InvalidProject: a ``requires-python`` does not parse.
        ConflictingRequirements: no Python version satisfies them all.
    """
    merged = SpecifierSet(floor)
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
