"""Find the dependency wheels a plugin brings, in ``--find-links`` directories.

Rules: docs/production.md#plugins-with-their-own-dependencies.

:func:`resolve_dependencies` walks a plugin's ``Requires-Dist`` (and, transitively,
its dependencies'): what the host has installed is left to the host
(:mod:`controllerbus.loader.dependencies`); everything else must be a *pure* wheel
(``Root-Is-Purelib``, tags the running interpreter accepts) in one of the find-links
directories. Source distributions are never built and nothing is fetched from the
network here (an index is mirrored into a find-links directory beforehand, by
:mod:`controllerbus.loader.wheelcache`).

With a trust file, a dependency wheel must be pinned like a plugin wheel: an
unpinned candidate is not considered, and a pinned one whose bytes do not match is
refused with :class:`~controllerbus.loader.trust.UntrustedWheel` before it is
unpacked. Of several candidates the highest version wins (pinned ones only, with a
trust file). The result is deterministic: the same directory and trust file give
the same wheels, and so the same generation id.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from packaging.tags import sys_tags
from packaging.utils import (
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import Version

from controllerbus._fs import is_within
from controllerbus.errors import LoaderError
from controllerbus.loader.dependencies import Wanted, plan_dependencies
from controllerbus.loader.depwheel import classify_wheel, verify_dependency_wheel
from controllerbus.loader.errors import WheelChanged
from controllerbus.loader.hostdeps import HostDistribution, host_distributions
from controllerbus.loader.verify import VerifiedWheel

if TYPE_CHECKING:
    from controllerbus.loader.trust import TrustFile

__all__ = [
    "DependencyError",
    "FindLinks",
    "Resolution",
    "cached_host_distributions",
    "host_installed",
    "resolve_dependencies",
]

logger = logging.getLogger(__name__)

_SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz")


class DependencyError(LoaderError):
    """A plugin's dependency cannot be provided; the plugin was not loaded.

    Attributes:
        plugin: the plugin wheel.
        issues: every unresolved requirement, with what to do.
    """

    def __init__(self, plugin: str, issues: Sequence[str]) -> None:
        self.plugin = plugin
        self.issues = tuple(issues)
        super().__init__(plugin, self.issues)

    def __str__(self) -> str:
        bullets = "\n".join(f"  - {issue}" for issue in self.issues)
        return (
            f"{self.plugin}: its dependencies cannot be installed; nothing was loaded:\n{bullets}"
        )


@dataclass(frozen=True, slots=True)
class _Candidate:
    path: Path
    name: NormalizedName
    version: Version


@dataclass(frozen=True, slots=True)
class FindLinks:
    """Directories of dependency wheels (``--find-links``), searched in order."""

    dirs: tuple[Path, ...] = ()

    def candidates(self, name: NormalizedName) -> tuple[list[_Candidate], list[Path]]:
        """Compatible dependency wheels of ``name``, and sdists of it (never used)."""
        host_tags = set(sys_tags())
        found: list[_Candidate] = []
        sdists: list[Path] = []
        for directory in self.dirs:
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError as exc:
                logger.warning("find-links directory %s cannot be read: %s", directory, exc)
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.name.endswith(_SDIST_SUFFIXES):
                    if canonicalize_name(entry.name.rsplit("-", 1)[0]) == name:
                        sdists.append(Path(entry.path))
                    continue
                if not entry.name.endswith(".whl"):
                    continue
                try:
                    wname, version, _build, tags = parse_wheel_filename(entry.name)
                except InvalidWheelFilename:
                    continue
                if wname != name or not (set(tags) & host_tags):
                    continue
                path = Path(entry.path)
                if classify_wheel(path) != "dependency":
                    continue
                found.append(_Candidate(path, wname, version))
        return found, sdists


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a plugin needs besides its own wheel.

    Attributes:
        host_lines: requirement lines the host must serve (plugin's and dependencies').
        wheels: verified dependency wheels to install into the generation, by name.
        top_level: top-level packages those wheels install.
    """

    host_lines: tuple[str, ...] = ()
    wheels: tuple[VerifiedWheel, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def top_level(self) -> tuple[str, ...]:
        """Top-level packages and modules the dependency wheels install."""
        return tuple(sorted({top for w in self.wheels for top in w.top_level}))

    @property
    def shas(self) -> tuple[str, ...]:
        """The dependency wheels' sha256s, sorted (part of the generation id)."""
        return tuple(sorted(w.sha256 for w in self.wheels))


def host_installed(exclude: Collection[Path] = ()) -> frozenset[NormalizedName]:
    """Canonical names of the distributions the host has installed (on ``sys.path``)."""
    return frozenset(cached_host_distributions(exclude))


def cached_host_distributions(
    exclude: Collection[Path] = (),
) -> Mapping[NormalizedName, HostDistribution]:
    """:func:`~controllerbus.loader.hostdeps.host_distributions` of ``sys.path`` minus
    ``exclude``, cached per path and the mtimes of its site directories.

    Parsing every installed METADATA costs ~100 ms on a host with 200 distributions;
    a hundred loads must not pay it a hundred times. Installing into the host changes
    a site directory's mtime, which invalidates the cache.
    """
    excluded = [os.path.abspath(p) for p in exclude]
    path = tuple(
        p for p in sys.path if not any(is_within(os.path.abspath(p or "."), r) for r in excluded)
    )
    sites = _site_dirs()
    mtimes = []
    for entry in path:
        # Only site directories count: installing changes their mtime, while a
        # script's directory or the cwd on sys.path changes whenever a file is made.
        if os.path.abspath(entry or ".") not in sites:
            mtimes.append(0)
            continue
        try:
            mtimes.append(os.stat(entry).st_mtime_ns)
        except OSError:
            mtimes.append(-1)
    return _host_distributions(path, tuple(mtimes))


@functools.cache
def _site_dirs() -> frozenset[str]:
    import site
    import sysconfig

    dirs = {*site.getsitepackages(), site.getusersitepackages()}
    dirs.update(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    return frozenset(os.path.abspath(d) for d in dirs)


@functools.lru_cache(maxsize=8)
def _host_distributions(
    path: tuple[str, ...], _mtimes: tuple[int, ...]
) -> Mapping[NormalizedName, HostDistribution]:
    return MappingProxyType(host_distributions(list(path)))


def _pick(
    want: Wanted,
    candidates: list[_Candidate],
    trust: TrustFile | None,
) -> tuple[_Candidate | None, list[str]]:
    """The highest compatible (and pinned, with ``trust``) candidate for ``want``."""
    skipped: list[str] = []
    fitting = [c for c in candidates if want.requirement.specifier.contains(c.version, True)]
    if trust is not None:
        pinned = [c for c in fitting if trust.entries_for(c.path.name)]
        skipped = [c.path.name for c in fitting if c not in pinned]
        fitting = pinned
    if not fitting:
        return None, skipped
    return max(fitting, key=lambda c: (c.version, c.path.name)), skipped


def resolve_dependencies(
    plugin: VerifiedWheel,
    *,
    find_links: FindLinks,
    trust: TrustFile | None = None,
    host: Collection[NormalizedName] | None = None,
) -> Resolution:
    """Find, trust-check and verify every dependency wheel ``plugin`` needs.

    Blocking (reads and hashes wheels): call it via ``asyncio.to_thread``.

    Args:
        plugin: the verified plugin wheel.
        find_links: where dependency wheels are looked for.
        trust: the trust file; with it only pinned wheels are considered.
        host: distributions the host serves; default :func:`host_installed`.

    Raises:
        DependencyError: a requirement has no usable wheel (with what was found).
        UntrustedWheel: a pinned dependency wheel's bytes do not match its pin.
        InvalidWheel: a dependency wheel failed verification.
    """
    installed = host_installed() if host is None else frozenset(host)
    plan = plan_dependencies(plugin.requires_dist, installed, via=plugin.path.name)
    issues = list(plan.invalid)
    host_lines = list(plan.host_lines)
    queue = list(plan.wanted)
    chosen: dict[NormalizedName, VerifiedWheel] = {}
    requested: dict[NormalizedName, list[Wanted]] = {}
    while queue:
        want = queue.pop(0)
        requested.setdefault(want.name, []).append(want)
        if want.name in chosen:
            wheel = chosen[want.name]
            if not want.requirement.specifier.contains(wheel.version, True):
                asked = ", ".join(f"{w.line!r} ({w.via})" for w in requested[want.name])
                issues.append(
                    f"conflicting requirements on {want.name}: {asked}; no single version fits"
                )
            continue
        candidates, sdists = find_links.candidates(want.name)
        pick, unpinned = _pick(want, candidates, trust)
        if pick is None:
            issues.append(_missing(want, find_links, candidates, sdists, unpinned))
            continue
        sha = trust.check(pick.path) if trust is not None else None
        wheel = verify_dependency_wheel(pick.path)
        if sha is not None and wheel.sha256 != sha:
            raise WheelChanged(pick.path, sha, wheel.sha256)
        chosen[want.name] = wheel
        logger.debug("%s: dependency %s from %s", plugin.path.name, want.line, pick.path)
        sub = plan_dependencies(
            wheel.requires_dist,
            installed,
            via=wheel.path.name,
            extras=want.requirement.extras,
        )
        issues.extend(sub.invalid)
        host_lines.extend(sub.host_lines)
        queue.extend(sub.wanted)
    if issues:
        raise DependencyError(plugin.path.name, issues)
    return Resolution(tuple(dict.fromkeys(host_lines)), tuple(chosen[n] for n in sorted(chosen)))


def _missing(
    want: Wanted,
    find_links: FindLinks,
    candidates: Iterable[_Candidate],
    sdists: Sequence[Path],
    unpinned: Sequence[str],
) -> str:
    where = ", ".join(str(d) for d in find_links.dirs) or "no --find-links directory"
    found = ", ".join(c.path.name for c in candidates)
    text = (
        f"{want.via} requires {want.line!r}; the host does not have {want.name} and "
        f"no wheel of it in {where} fits"
    )
    if found:
        text += f" (found {found})"
    if unpinned:
        text += f"; not pinned in the trust file: {', '.join(unpinned)} (pin them to use them)"
    if sdists:
        text += f"; sdists are never built ({', '.join(p.name for p in sdists)}): provide a wheel"
    return text + f"; put a pure wheel of {want.name} into {where}, or install it into the host"
