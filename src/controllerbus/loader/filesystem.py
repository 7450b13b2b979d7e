"""The filesystem loader controller: a directory of plugin wheels, kept in sync.

Semantics: docs/loader.md#filesystem-loader.

Controller id ``controllerbus/hot/loader/filesystem/1``. Config ``dir`` (must exist)
and ``watch``. A sync pass lists the directory (not recursively) and classifies every
entry (:mod:`~controllerbus.loader.candidates`): hidden and temporary files
(``.name``, ``*.tmp``, ``*.part``, ``*.partial``, ``*~``) are skipped, so a compiler
or copier that writes through a temporary name is never half-read; regular files
whose name parses as a wheel filename are planned as below; every other entry (a
``README``, a bad wheel name, a directory) is offered to the host too, which refuses
it with the reason, logs it and records it in the manifest as ``rejected``. Nothing
is ignored without a word. With trust checks on (the host's
``strict_permissions``), the directory itself is checked when the loader starts
(:mod:`~controllerbus.loader.permissions`).
Wheels without a ``controllerbus.plugins`` entry point are dependency wheels (the
directory is the default ``--find-links`` location) and are skipped, and so is the
host's trust file if it lives here.

The pass is planned first (:func:`plan_sync`, pure) and applied afterwards:

1. **unload** plugins whose file is gone or changed and not replaced;
2. **replace**: a new or changed file whose distribution is already loaded from
   another file is loaded over it (verify, trial import, switch, roll back on
   failure), so a bad new wheel leaves the old generation serving;
3. **load** the remaining new files.

Each step goes in sorted order; one failing wheel is logged and recorded in the
manifest and does not stop the others. A failed file is retried when its size or
mtime changes, or when the host's trust file changed (a change of a trust file kept
in the directory triggers a pass). With ``watch`` the directory is watched with watchfiles: changes
are debounced (a pass runs once the directory has been quiet for ``step`` ms, at
most ``debounce`` ms after the first change), and a watcher that cannot be set up
ends the controller with an error instead of silently missing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from controllerbus.bus.config import Config
from controllerbus.bus.factory import ControllerFactory
from controllerbus.bus.protocols import (
    ConstructOpts,
    Controller,
    ControllerInfo,
    DirectiveInstance,
    Resolver,
)
from controllerbus.errors import LoaderError
from controllerbus.loader.candidates import Candidate, is_temporary, scan_candidates
from controllerbus.loader.depwheel import split_dependency_wheels
from controllerbus.loader.permissions import check_directory
from controllerbus.plugin import ENTRY_POINT_GROUP

if TYPE_CHECKING:
    from watchfiles import Change

    from controllerbus.loader.host import PluginHost

__all__ = [
    "FILESYSTEM_LOADER_ID",
    "FileStat",
    "FilesystemLoaderConfig",
    "FilesystemLoaderController",
    "SyncPlan",
    "is_candidate",
    "new_filesystem_loader_factory",
    "plan_sync",
    "scan_dir",
    "scan_plugins_dir",
]

logger = logging.getLogger(__name__)

FILESYSTEM_LOADER_ID = "controllerbus/hot/loader/filesystem/1"
_VERSION = "0.0.1"


class FilesystemLoaderConfig(Config):
    """``dir``: the plugins directory; ``watch``: re-sync on change."""

    CONFIG_ID: ClassVar[str] = FILESYSTEM_LOADER_ID

    dir: str = ""
    watch: bool = False

    def validate_config(self) -> None:
        if not self.dir:
            raise ValueError("dir must be set")


@dataclass(frozen=True, slots=True)
class FileStat:
    """What identifies a version of a file for the loader: size, mtime and ctime (ns).

    The ctime changes on ``chmod``/``chown`` too, so a wheel refused for its
    permissions is tried again once they are fixed.
    """

    size: int
    mtime_ns: int
    ctime_ns: int = 0

    @classmethod
    def of(cls, path: Path) -> FileStat:
        """Stat ``path``."""
        st = path.stat()
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """The work of one sync pass, each list sorted by file name.

    Attributes:
        unload: loaded files to unload (gone or changed, and not replaced).
        replace: (old file, new file) pairs: the new file is loaded over the old one.
        load: new files to load.
        skip: files that failed before and have not changed since.
    """

    unload: tuple[Path, ...] = ()
    replace: tuple[tuple[Path, Path], ...] = ()
    load: tuple[Path, ...] = ()
    skip: tuple[Path, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing to do."""
        return not (self.unload or self.replace or self.load)


def is_candidate(name: str) -> bool:
    """Whether a file name is a plugin wheel the loader should look at.

    Hidden files and anything not ending in ``.whl`` (``x.whl.tmp``, ``x.whl.part``)
    are not: writers that go through a temporary name are never half-read.
    """
    if name.startswith(".") or not name.endswith(".whl"):
        return False
    try:
        parse_wheel_filename(name)
    except InvalidWheelFilename:
        return False
    return True


def _distribution(path: Path) -> str:
    return canonicalize_name(parse_wheel_filename(path.name)[0])


def plan_sync(
    loaded: Mapping[Path, FileStat],
    failed: Mapping[Path, FileStat],
    found: Mapping[Path, FileStat],
) -> SyncPlan:
    """Decide a sync pass (pure).

    Rules beyond "gone or changed → unload, new → load":

    * Of several wheels of one distribution (``--no-cleanup`` leaves old ones), only
      the newest (mtime, then name) that has not already failed unchanged counts.
    * A new wheel of an already loaded distribution *replaces* it (one atomic switch
      with rollback), instead of an unload followed by a load.
    * The last good generation keeps serving: a loaded plugin whose file is gone is
      kept while a failed, unchanged wheel of the same distribution is present.

    Args:
        loaded: files whose plugin is active now, with the stat they were loaded at.
        failed: files that failed to load, with the stat they failed at.
        found: the candidate files in the directory now.
    """
    # A wheel that failed and has not changed since; a loaded file rewritten in place
    # with a bad wheel counts too (its loaded stat differs from the found one).
    stale = {p for p, st in found.items() if failed.get(p) == st and loaded.get(p) != st}
    held = {_distribution(p) for p in stale}
    newest: dict[str, Path] = {}
    for path in sorted(set(found) - stale):
        dist = _distribution(path)
        best = newest.get(dist)
        if best is None or (found[path].mtime_ns, path.name) > (found[best].mtime_ns, best.name):
            newest[dist] = path
    current = {p: found[p] for p in newest.values()}
    gone_or_changed = sorted(
        p
        for p, st in loaded.items()
        if current.get(p) != st
        and not ((p not in found or p in stale) and _distribution(p) in held)
    )
    new = sorted(p for p, st in current.items() if loaded.get(p) != st)
    by_dist = {_distribution(p): p for p in gone_or_changed}
    replace: list[tuple[Path, Path]] = []
    load: list[Path] = []
    for path in new:
        old = by_dist.pop(_distribution(path), None)
        if old is not None:
            replace.append((old, path))
        else:
            load.append(path)
    replaced = {old for old, _ in replace}
    unload = tuple(p for p in gone_or_changed if p not in replaced)
    return SyncPlan(unload, tuple(replace), tuple(load), tuple(sorted(stale)))


def scan_dir(directory: Path) -> dict[Path, FileStat]:
    """Regular files with a wheel filename in ``directory`` (not recursive): the plan's input."""
    return scan_plugins_dir(directory)[0]


def scan_plugins_dir(directory: Path) -> tuple[dict[Path, FileStat], dict[Path, Candidate]]:
    """Classify ``directory``: files to plan with, and rejected entries that cannot be.

    A rejected file with a wheel filename (wrong tag, not a zip, too big) is planned
    like any wheel, so that it holds its plugin's last good generation; the host
    refuses it on load. The second mapping holds the rest: entries without a wheel
    filename or that are not regular files.
    """
    found: dict[Path, FileStat] = {}
    others: dict[Path, Candidate] = {}
    for candidate in scan_candidates(directory):
        if candidate.kind == "ignored":
            logger.debug("plugins dir: %s ignored (%s)", candidate.path.name, candidate.reason)
        elif candidate.distribution is not None and candidate.regular:
            found[candidate.path] = FileStat(candidate.size, candidate.mtime_ns, candidate.ctime_ns)
        else:
            others[candidate.path] = candidate
    return found, others


@dataclass(eq=False)
class FilesystemLoaderController:
    """Keeps the plugins of one directory loaded (see the module docstring)."""

    host: PluginHost
    directory: Path
    watch: bool = False
    debounce_ms: int = 1600
    step_ms: int = 100
    loaded: dict[Path, tuple[FileStat, str]] = field(default_factory=dict)
    failed: dict[Path, FileStat] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    passes: int = 0
    trust_seen: object = None
    dependencies: set[Path] = field(default_factory=set)

    def get_controller_info(self) -> ControllerInfo:
        return ControllerInfo(
            FILESYSTEM_LOADER_ID, _VERSION, f"hot plugin filesystem loader: {self.directory}"
        )

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        return []

    def close(self) -> None:
        return None

    async def execute(self) -> None:
        """Sync once, then (with ``watch``) on every change; unload all on the way out."""
        try:
            await self.sync()
            if self.watch:
                await self._watch()
            else:
                await asyncio.Event().wait()
        finally:
            try:
                await asyncio.shield(self._unload_all())
            finally:
                self.stopped.set()

    async def _watch(self) -> None:
        from controllerbus._watch import Watcher, WatchError, WatchSet

        def wanted(_change: Change, path: str) -> bool:
            # Deletions of temp names never matter; a rename into place shows up
            # as an event on the final name.
            return not is_temporary(Path(path).name)

        watcher = Watcher(
            WatchSet.of(dirs=[self.directory]),
            accept=wanted,
            debounce_ms=self.debounce_ms,
            step_ms=self.step_ms,
        )
        try:
            # The first sync ran before the watcher existed; its first batch (once the
            # watch is set up) is the catch-up sync, so a wheel written meanwhile counts.
            async with contextlib.aclosing(aiter(watcher)) as batches:
                async for _batch in batches:
                    await self.sync()
        except WatchError as exc:
            reason = exc.__cause__ or exc
            raise LoaderError(
                f"cannot watch plugins directory {self.directory}: {reason}; raise the "
                "inotify limits (fs.inotify.max_user_watches) or run with --no-watch"
            ) from exc

    async def sync(self) -> SyncPlan:
        """One pass: plan against the directory, then unload, replace and load.

        When a wheel fails, the pass plans again: an older wheel of the same plugin
        (left by ``--no-cleanup``) gets its turn, and nothing is retried twice.
        """
        found, others = await asyncio.to_thread(scan_plugins_dir, self.directory)
        found = await asyncio.to_thread(self._without_dependencies, found)
        trust = self.host.policy.trust
        if trust is not None:
            others.pop(trust.path, None)  # the host's own trust file may live here
        trust_key = await asyncio.to_thread(self.host.policy.trust_key)
        if trust_key != self.trust_seen:
            # A changed trust file may pin wheels it refused before: retry them once.
            if self.passes:
                for path in [p for p in self.failed if p in found]:
                    del self.failed[path]
            self.trust_seen = trust_key
        await self._reject(others)
        first: SyncPlan | None = None
        for _ in range(len(found) + 1):
            plan = plan_sync({p: st for p, (st, _) in self.loaded.items()}, self.failed, found)
            first = first or plan
            if plan.empty:
                break
            logger.info(
                "plugins dir %s: %d to unload, %d to replace, %d to load",
                self.directory,
                len(plan.unload),
                len(plan.replace),
                len(plan.load),
            )
            failures = len(self.failed)
            for path in plan.unload:
                await self._unload(path)
            for old, new in plan.replace:
                await self._load(new, found[new], replacing=old)
            if len(plan.load) > 1:
                await self.host.install_ahead(plan.load)
            for path in plan.load:
                await self._load(path, found[path])
            if len(self.failed) == failures:
                break
        self.passes += 1
        self.synced.set()
        return first or SyncPlan()

    def _without_dependencies(self, found: dict[Path, FileStat]) -> dict[Path, FileStat]:
        """``found`` minus dependency wheels (this directory is the default find-links)."""
        loaded = [_distribution(p) for p in self.loaded]
        _plugins, deps = split_dependency_wheels(found, loaded)
        for path in sorted(set(deps) - self.dependencies):
            logger.info(
                "plugins dir: %s is a dependency wheel (no %s entry point): not loaded as a "
                "plugin, installed into the generations of plugins that require it",
                path.name,
                ENTRY_POINT_GROUP,
            )
        self.dependencies = set(deps)
        return {p: st for p, st in found.items() if p not in self.dependencies}

    async def _reject(self, others: Mapping[Path, Candidate]) -> None:
        """Offer each new or changed non-wheel entry to the host, which refuses and records it."""
        for path, candidate in sorted(others.items()):
            stat = FileStat(candidate.size, candidate.mtime_ns, candidate.ctime_ns)
            if self.failed.get(path) == stat:
                continue
            logger.warning("plugins dir: %s rejected: %s", path.name, candidate.reason)
            await self._load(path, stat)

    async def _unload(self, path: Path) -> None:
        _stat, binary_id = self.loaded.pop(path)
        try:
            await self.host.unload(binary_id)
        except LoaderError as exc:
            logger.warning("unable to unload plugin file %s: %s", path, exc)

    async def _load(self, path: Path, stat: FileStat, replacing: Path | None = None) -> None:
        try:
            result = await self.host.load(path)
        except LoaderError as exc:
            logger.warning("unable to load plugin file %s: %s", path.name, exc)
            self.failed[path] = stat
            return
        self.failed.pop(path, None)
        if replacing is not None:
            self.loaded.pop(replacing, None)
        # Another file may have served this plugin before (a renamed wheel).
        for other, (_st, binary_id) in list(self.loaded.items()):
            if binary_id == result.binary_id and other != path:
                del self.loaded[other]
        self.loaded[path] = (stat, result.binary_id)

    async def _unload_all(self) -> None:
        for path in sorted(self.loaded, reverse=True):
            await self._unload(path)


def new_filesystem_loader_factory(host: PluginHost) -> ControllerFactory[FilesystemLoaderConfig]:
    """The factory of filesystem loaders that load into ``host``."""

    def construct(config: FilesystemLoaderConfig, _opts: ConstructOpts) -> Controller:
        directory = Path(config.dir).absolute()
        if not directory.is_dir():
            raise LoaderError(f"stat {directory}: plugins directory does not exist")
        if host.strict_permissions:
            check_directory(directory, "plugins directory")
        return FilesystemLoaderController(host, directory, watch=config.watch)

    return ControllerFactory(FilesystemLoaderConfig, construct, version=_VERSION)
