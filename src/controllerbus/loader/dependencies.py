"""Which of a plugin's requirements the host serves, and which the plugin brings (pure).

Rules: docs/production.md#plugins-with-their-own-dependencies.

Host dependencies win: a ``Requires-Dist`` whose distribution the host has installed
is served by the host, in the host's version (a version outside the specifier stays a
:class:`~controllerbus.loader.errors.HostDependencyError`; per-plugin versions of a
host package need out-of-process plugins). A requirement the host does not have at
all is a *dependency*: it is installed into the plugin's generation from a dependency
wheel (see :mod:`controllerbus.loader.wheelsource`).

Markers are evaluated as in :mod:`controllerbus.loader.hostdeps`: against the
running interpreter, with ``extra`` empty for the plugin's own requirements and set
to each requested extra for a dependency's (``dep[extra]``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name

__all__ = ["DependencyPlan", "Wanted", "plan_dependencies"]


@dataclass(frozen=True, slots=True)
class Wanted:
    """A requirement the host cannot serve: a wheel of it must come with the plugin.

    Attributes:
        name: canonical distribution name.
        requirement: the parsed requirement (specifier, extras).
        line: the ``Requires-Dist`` line as written.
        via: who asked for it (the plugin, or a dependency of it).
    """

    name: NormalizedName
    requirement: Requirement
    line: str
    via: str


@dataclass(frozen=True, slots=True)
class DependencyPlan:
    """The split of a set of requirements between host and dependency wheels.

    Attributes:
        host_lines: requirement lines the host must serve (checked by
            :func:`~controllerbus.loader.hostdeps.check_host_requirements`).
        wanted: requirements no host distribution serves.
        invalid: lines that do not parse, with the reason.
    """

    host_lines: tuple[str, ...]
    wanted: tuple[Wanted, ...]
    invalid: tuple[str, ...] = ()


def _applies(requirement: Requirement, env: Mapping[str, str], extras: Collection[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**env, "extra": e}) for e in extras)


def plan_dependencies(
    requires_dist: Iterable[str],
    host: Collection[NormalizedName],
    *,
    via: str,
    extras: Collection[str] = (),
    environment: Mapping[str, str] | None = None,
) -> DependencyPlan:
    """Split ``requires_dist`` between the host and dependency wheels.

    Args:
        requires_dist: ``Requires-Dist`` lines of one wheel.
        host: canonical names of the distributions installed in the host.
        via: how to name the wheel in messages.
        extras: extras of this wheel that were requested (``""`` is always included).
        environment: marker variables overriding the running interpreter's.
    """
    env: dict[str, str] = {str(k): str(v) for k, v in default_environment().items()}
    env.update(environment or {})
    wanted_extras = {"", *extras}
    host_lines: list[str] = []
    wanted: list[Wanted] = []
    invalid: list[str] = []
    for line in requires_dist:
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            invalid.append(f"{via} has an invalid requirement {line!r}: {exc}")
            continue
        if not _applies(requirement, env, wanted_extras):
            continue
        name = canonicalize_name(requirement.name)
        if name in host:
            host_lines.append(line)
        else:
            wanted.append(Wanted(name, requirement, line, via))
    return DependencyPlan(tuple(host_lines), tuple(wanted), tuple(invalid))
