"""Check that the host environment serves a plugin's requirements.

Host dependencies win (docs/loader.md#load, step 2): a generation contains only the plugin's own
(vendored, first-party) code; every ``Requires-Dist`` must be satisfied by a
distribution the host already has. :func:`check_host_requirements` reports every
requirement that is missing or whose installed version falls outside the
specifier, and every vendored top-level package the host already imported from
somewhere else, in one :class:`~controllerbus.loader.errors.HostDependencyError`.

Rules:

* Markers are evaluated against the host (``packaging.markers.default_environment()``
  plus overrides) with ``extra == ""``: requirements of the plugin's own extras are
  not installed by the loader, so they are skipped, as are requirements whose marker
  does not apply (``foo; python_version < '3'``).
* Pre-releases installed on the host satisfy a specifier (``contains(...,
  prereleases=True)``): what is installed is what will run.
* A requirement with extras (``pkg[extra]``) also checks the requirements that the
  extra adds to ``pkg``'s metadata, recursively.
* Direct references (``pkg @ url``) are checked by name only: the host's copy is used.
* A vendored top-level package that is already in ``sys.modules`` from outside the
  generation is an error (the plugin would get the host's module). One the host
  could import but has not yet is only a note: while the plugin is active, host
  code importing that name gets the plugin's copy.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import logging
import os
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from controllerbus._fs import is_within
from controllerbus.loader.errors import HostDependencyError

__all__ = [
    "HostDepsReport",
    "HostDistribution",
    "check_host_requirements",
    "host_distributions",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HostDistribution:
    """An installed host distribution: name, version, and its own requirements."""

    name: NormalizedName
    version: str
    requires: tuple[str, ...] = ()
    location: str = ""


@dataclass(frozen=True, slots=True)
class HostDepsReport:
    """What :func:`check_host_requirements` found when everything was satisfiable.

    Attributes:
        satisfied: ``(requirement, host version)`` for each requirement checked.
        skipped: requirements whose marker does not apply on this host.
        notes: harmless but noteworthy findings (e.g. a vendored package name the
            host could import too).
    """

    satisfied: tuple[tuple[str, str], ...]
    skipped: tuple[str, ...]
    notes: tuple[str, ...] = ()


def host_distributions(path: Sequence[str] | None = None) -> dict[NormalizedName, HostDistribution]:
    """Return the distributions importable from ``path`` (default ``sys.path``).

    When a name is installed twice, the first on the path wins, as for imports.
    """
    found: dict[NormalizedName, HostDistribution] = {}
    search = list(sys.path if path is None else path)
    for dist in importlib.metadata.distributions(path=search):
        raw_name = dist.metadata["Name"]
        if not raw_name:
            continue
        name = canonicalize_name(raw_name)
        if name in found:
            continue
        found[name] = HostDistribution(
            name=name,
            version=dist.version,
            requires=tuple(dist.requires or ()),
            location=str(dist.locate_file("")),
        )
    return found


def _plugin_phrase(plugin: str) -> str:
    return f"plugin {plugin}" if plugin else "the plugin"


def _module_locations(module: object) -> list[str]:
    locations: list[str] = []
    file = getattr(module, "__file__", None)
    if isinstance(file, str):
        locations.append(os.path.abspath(file))
    search = getattr(module, "__path__", None)
    if search is not None:
        # _NamespacePath recomputes itself when iterated; its _path is the cached list.
        entries = getattr(search, "_path", search)
        locations.extend(os.path.abspath(p) for p in entries if isinstance(p, str))
    return locations


@dataclass(slots=True)
class _Checker:
    plugin: str
    environment: dict[str, str]
    installed: Mapping[NormalizedName, HostDistribution]
    missing: list[str]
    conflicting: list[str]
    satisfied: list[tuple[str, str]]
    skipped: list[str]

    def applies(self, requirement: Requirement, extra: str) -> bool:
        if requirement.marker is None:
            return True
        return requirement.marker.evaluate({**self.environment, "extra": extra})

    def check(self, line: str, requirement: Requirement, via: str, seen: set[str]) -> None:
        name = canonicalize_name(requirement.name)
        host = self.installed.get(name)
        origin = _plugin_phrase(self.plugin) + (f" (via {via})" if via else "")
        if host is None:
            self.missing.append(
                f"{origin} requires {line!r} but the host has no {requirement.name} installed; "
                f"install it into the host environment (pip install '{requirement}')"
            )
            return
        if requirement.specifier:
            try:
                ok = requirement.specifier.contains(Version(host.version), prereleases=True)
            except InvalidVersion:
                ok = False
            if not ok:
                self.conflicting.append(
                    f"{origin} requires {line!r} but the host has {requirement.name} "
                    f"{host.version}; rebuild the plugin against the host's version or "
                    "upgrade the host"
                )
                return
        self.satisfied.append((line, host.version))
        for extra in sorted(requirement.extras):
            key = f"{name}[{canonicalize_name(extra)}]"
            if key in seen:
                continue
            seen.add(key)
            self.check_extra(host, extra, f"{requirement.name}[{extra}]", seen)

    def check_extra(self, host: HostDistribution, extra: str, via: str, seen: set[str]) -> None:
        for line in host.requires:
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                logger.warning("ignoring unparsable requirement %r of host %s", line, host.name)
                continue
            # Only what the extra adds: unconditional requirements of an installed
            # distribution are the host environment's own business.
            if requirement.marker is None or self.applies(requirement, ""):
                continue
            if not self.applies(requirement, extra):
                continue
            requirement.marker = None
            self.check(str(requirement), requirement, via, seen)


def check_host_requirements(
    requirements: Iterable[str],
    *,
    plugin: str = "",
    first_party_packages: Collection[str] = (),
    generation_path: Path | None = None,
    environment: Mapping[str, str] | None = None,
    installed: Mapping[NormalizedName, HostDistribution] | None = None,
    importable_shadows: bool = False,
) -> HostDepsReport:
    """Check ``requirements`` against the host; raise one error listing every problem.

    Args:
        requirements: PEP 508 lines, typically ``VerifiedWheel.requires_dist``.
        plugin: how to name the plugin in messages (wheel file name, binary id).
        first_party_packages: top-level packages the plugin vendors
            (``VerifiedWheel.top_level``).
        generation_path: the plugin's generation; modules imported from inside it
            do not count as shadowing, and it is excluded from the host's path.
        environment: marker variables overriding the running interpreter's.
        installed: host distributions by canonical name; default
            :func:`host_distributions` over ``sys.path`` minus ``generation_path``.
        importable_shadows: a vendored package the host has not imported but could
            import from elsewhere is an error too (the loader's choice: activation
            would put the plugin's copy in front of the host's), not just a note.

    Returns:
        What was satisfied and skipped, with notes.

    Raises:
        HostDependencyError: a requirement is invalid, missing or conflicting, or a
            vendored package is shadowed by a host module already imported (or, with
            ``importable_shadows``, importable).
    """
    excluded = os.path.abspath(generation_path) if generation_path is not None else None
    host_path = [
        entry
        for entry in sys.path
        if excluded is None or not is_within(os.path.abspath(entry or "."), excluded)
    ]
    env: dict[str, str] = {str(k): str(v) for k, v in default_environment().items()}
    env.update(environment or {})
    checker = _Checker(
        plugin=plugin,
        environment=env,
        installed=installed if installed is not None else host_distributions(host_path),
        missing=[],
        conflicting=[],
        satisfied=[],
        skipped=[],
    )
    for line in requirements:
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            checker.missing.append(
                f"{_plugin_phrase(plugin)} has an invalid requirement {line!r}: {exc}"
            )
            continue
        if not checker.applies(requirement, ""):
            checker.skipped.append(line)
            continue
        checker.check(line, requirement, "", set())

    shadowed: list[str] = []
    notes: list[str] = []
    for top in sorted(set(first_party_packages)):
        # Only the module's locations are kept, never the module: a local of this
        # frame would be pinned by the traceback of the error raised below, and it
        # may be a module of the generation being replaced.
        if top in sys.modules:
            locations = _module_locations(sys.modules[top])
            if (
                excluded is not None
                and locations
                and all(is_within(loc, excluded) for loc in locations)
            ):
                continue
            where = ", ".join(locations) or "a built-in or frozen module"
            shadowed.append(
                f"{_plugin_phrase(plugin)} vendors top-level package {top!r}, but the host already "
                f"imported {top!r} from {where}, so the plugin would get the host's copy; "
                "rename the vendored package, or depend on the host's distribution instead"
            )
            continue
        spec = importlib.machinery.PathFinder.find_spec(top, host_path)
        if spec is not None and importable_shadows:
            where = spec.origin or ", ".join(spec.submodule_search_locations or [])
            shadowed.append(
                f"{_plugin_phrase(plugin)} vendors {top!r}, but the host can already import it "
                f"from {where}; rename the plugin's package or uninstall the host's copy"
            )
        elif spec is not None:
            where = spec.origin or ", ".join(spec.submodule_search_locations or [])
            notes.append(
                f"the host can import {top!r} from {where} too; while "
                f"{_plugin_phrase(plugin)} is active, host code importing {top!r} gets the "
                "plugin's copy"
            )
    if checker.missing or checker.conflicting or shadowed:
        raise HostDependencyError(
            plugin, missing=checker.missing, conflicting=checker.conflicting, shadowed=shadowed
        )
    return HostDepsReport(tuple(checker.satisfied), tuple(checker.skipped), tuple(notes))
