"""The filesystem loader: plan_sync (tables and properties), scanning, and the controller
keeping a real plugins directory in sync with a real PluginHost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.utils import canonicalize_name, parse_wheel_filename

from controllerbus.bus.protocols import ConstructOpts
from controllerbus.core import new_core_bus
from controllerbus.errors import LoaderError
from controllerbus.example.boilerplate import BoilerplateConfig
from controllerbus.loader.filesystem import (
    FILESYSTEM_LOADER_ID,
    FileStat,
    FilesystemLoaderConfig,
    FilesystemLoaderController,
    SyncPlan,
    is_candidate,
    new_filesystem_loader_factory,
    plan_sync,
    scan_dir,
)
from controllerbus.loader.host import PluginHost
from controllerbus.loader.state import StateDir

from .pluginkit import Wheels, compile_wheels
from .wheelkit import corrupt_member

if TYPE_CHECKING:
    pass

PREFIX = "cbt_fs"
DIR = Path("/plugins")


def W(name: str) -> Path:
    """``W("alpha-1.0")`` is the wheel ``/plugins/alpha-1.0-py3-none-any.whl``."""
    return DIR / f"{name}-py3-none-any.whl"


def S(size: int, mtime: int) -> FileStat:
    return FileStat(size, mtime)


def _dist(path: Path) -> str:
    return canonicalize_name(parse_wheel_filename(path.name)[0])


# -- is_candidate and scan_dir --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alpha-1.0-py3-none-any.whl", True),
        ("cbus_plugin_x-0.1.0+cbus.0123456789abcdef-py3-none-any.whl", True),
        (".alpha-1.0-py3-none-any.whl", False),  # hidden
        ("alpha-1.0-py3-none-any.whl.tmp", False),
        ("alpha-1.0-py3-none-any.whl.part", False),
        ("alpha-1.0-py3-none-any.whl.partial", False),
        ("alpha-1.0-py3-none-any.whl~", False),
        (".alpha-1.0-py3-none-any.whl.1234.tmp", False),
        ("alpha-1.0.tar.gz", False),
        ("alpha-1.0-py3-none-any.zip", False),
        ("README.md", False),
        ("notawheel.whl", False),  # not a valid wheel file name
        ("alpha-py3-none-any.whl", False),  # no version
        ("alpha-1.0-py3-none.whl", False),  # missing a tag
    ],
)
def test_is_candidate(name: str, expected: bool) -> None:
    assert is_candidate(name) is expected


def test_scan_dir_lists_regular_candidate_wheels_with_their_stat(tmp_path: Path) -> None:
    good = tmp_path / "alpha-1.0-py3-none-any.whl"
    good.write_bytes(b"12345")
    os.utime(good, ns=(1_000_000_000, 2_000_000_000))
    (tmp_path / "beta-1.0-py3-none-any.whl.part").write_bytes(b"partial")
    (tmp_path / ".gamma-1.0-py3-none-any.whl").write_bytes(b"hidden")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "delta-1.0-py3-none-any.whl").mkdir()  # a directory named like a wheel
    nested = tmp_path / "sub"
    nested.mkdir()
    (nested / "eps-1.0-py3-none-any.whl").write_bytes(b"not recursive")
    link = tmp_path / "zeta-1.0-py3-none-any.whl"
    link.symlink_to(good)
    (tmp_path / "eta-1.0-py3-none-any.whl").symlink_to(tmp_path / "missing")  # dangling

    found = scan_dir(tmp_path)

    expected = FileStat(5, 2_000_000_000, good.stat().st_ctime_ns)
    assert found == {good: expected, link: expected}


# -- plan_sync tables -----------------------------------------------------------------------------

PlanCase = tuple[
    Mapping[Path, FileStat], Mapping[Path, FileStat], Mapping[Path, FileStat], SyncPlan
]

PLAN_CASES: dict[str, PlanCase] = {
    "nothing": ({}, {}, {}, SyncPlan()),
    "new wheel is loaded": ({}, {}, {W("alpha-1.0"): S(1, 1)}, SyncPlan(load=(W("alpha-1.0"),))),
    "unchanged loaded wheel: nothing": (
        {W("alpha-1.0"): S(1, 1)},
        {},
        {W("alpha-1.0"): S(1, 1)},
        SyncPlan(),
    ),
    "gone: unloaded": ({W("alpha-1.0"): S(1, 1)}, {}, {}, SyncPlan(unload=(W("alpha-1.0"),))),
    "rewritten in place: replaced by itself": (
        {W("alpha-1.0"): S(1, 1)},
        {},
        {W("alpha-1.0"): S(2, 2)},
        SyncPlan(replace=((W("alpha-1.0"), W("alpha-1.0")),)),
    ),
    "new version of a loaded plugin replaces it": (
        {W("alpha-1.0"): S(1, 1)},
        {},
        {W("alpha-2.0"): S(1, 2)},
        SyncPlan(replace=((W("alpha-1.0"), W("alpha-2.0")),)),
    ),
    "old file left beside the new one (--no-cleanup): the newest replaces": (
        {W("alpha-1.0"): S(1, 1)},
        {},
        {W("alpha-1.0"): S(1, 1), W("alpha-2.0"): S(1, 2)},
        SyncPlan(replace=((W("alpha-1.0"), W("alpha-2.0")),)),
    ),
    "several wheels of one plugin: only the newest by mtime loads": (
        {},
        {},
        {W("alpha-3.0"): S(1, 1), W("alpha-1.0"): S(1, 5), W("alpha-2.0"): S(1, 3)},
        SyncPlan(load=(W("alpha-1.0"),)),
    ),
    "same mtime: the name decides": (
        {},
        {},
        {W("alpha-1.0"): S(1, 7), W("alpha-2.0"): S(1, 7)},
        SyncPlan(load=(W("alpha-2.0"),)),
    ),
    "failed and unchanged: skipped, not retried": (
        {},
        {W("alpha-1.0"): S(1, 1)},
        {W("alpha-1.0"): S(1, 1)},
        SyncPlan(skip=(W("alpha-1.0"),)),
    ),
    "failed but changed since: retried": (
        {},
        {W("alpha-1.0"): S(1, 1)},
        {W("alpha-1.0"): S(2, 2)},
        SyncPlan(load=(W("alpha-1.0"),)),
    ),
    "failed newer wheel: the loaded one keeps serving": (
        {W("alpha-1.0"): S(1, 1)},
        {W("alpha-2.0"): S(1, 2)},
        {W("alpha-1.0"): S(1, 1), W("alpha-2.0"): S(1, 2)},
        SyncPlan(skip=(W("alpha-2.0"),)),
    ),
    "loaded file gone while a failed wheel of it is present: kept": (
        {W("alpha-1.0"): S(1, 1)},
        {W("alpha-2.0"): S(1, 2)},
        {W("alpha-2.0"): S(1, 2)},
        SyncPlan(skip=(W("alpha-2.0"),)),
    ),
    "newest failed: the older wheel gets its turn": (
        {},
        {W("alpha-2.0"): S(1, 2)},
        {W("alpha-1.0"): S(1, 1), W("alpha-2.0"): S(1, 2)},
        SyncPlan(load=(W("alpha-1.0"),), skip=(W("alpha-2.0"),)),
    ),
    "failed wheel of another plugin does not keep this one": (
        {W("alpha-1.0"): S(1, 1)},
        {W("beta-1.0"): S(1, 1)},
        {W("beta-1.0"): S(1, 1)},
        SyncPlan(unload=(W("alpha-1.0"),), skip=(W("beta-1.0"),)),
    ),
    "every list is sorted by name": (
        {W("gamma-1.0"): S(1, 1), W("alpha-1.0"): S(1, 1), W("beta-1.0"): S(1, 1)},
        {},
        {W("delta-1.0"): S(1, 1), W("beta-2.0"): S(1, 2), W("epsilon-1.0"): S(1, 1)},
        SyncPlan(
            unload=(W("alpha-1.0"), W("gamma-1.0")),
            replace=((W("beta-1.0"), W("beta-2.0")),),
            load=(W("delta-1.0"), W("epsilon-1.0")),
        ),
    ),
}


@pytest.mark.parametrize("case", list(PLAN_CASES))
def test_plan_sync(case: str) -> None:
    loaded, failed, found, expected = PLAN_CASES[case]
    assert plan_sync(loaded, failed, found) == expected


def test_plan_sync_does_not_retry_a_failed_in_place_rewrite() -> None:
    loaded = {W("alpha-1.0"): S(1, 1)}
    failed = {W("alpha-1.0"): S(2, 2)}
    found = {W("alpha-1.0"): S(2, 2)}
    # The last good generation keeps serving; the broken file waits for a change.
    assert plan_sync(loaded, failed, found) == SyncPlan(skip=(W("alpha-1.0"),))


# -- plan_sync properties -------------------------------------------------------------------------

DISTS = ("alpha", "beta", "gamma")
PATHS = [W(f"{dist}-{version}") for dist in DISTS for version in ("1.0", "2.0", "3.0")]
stats = st.builds(FileStat, st.integers(1, 2), st.integers(1, 3))


@dataclass(frozen=True)
class DirState:
    """What the controller knows (loaded, failed) and what the directory holds (found).

    As in the controller, at most one loaded file per distribution, and a file is
    either loaded or failed.
    """

    loaded: dict[Path, FileStat]
    failed: dict[Path, FileStat]
    found: dict[Path, FileStat]

    @property
    def stale(self) -> set[Path]:
        return {p for p, s in self.found.items() if self.failed.get(p) == s}

    def plan(self) -> SyncPlan:
        return plan_sync(self.loaded, self.failed, self.found)


@st.composite
def dir_states(draw: st.DrawFn) -> DirState:
    found = draw(st.dictionaries(st.sampled_from(PATHS), stats))

    def stat_of(path: Path) -> FileStat:
        # Mostly the stat found now (unchanged), sometimes another one (changed).
        if path in found and draw(st.booleans()):
            return found[path]
        return draw(stats)

    loaded: dict[Path, FileStat] = {}
    for dist in DISTS:
        path = draw(st.none() | st.sampled_from([p for p in PATHS if _dist(p) == dist]))
        if path is not None:
            loaded[path] = stat_of(path)
    candidates = [p for p in PATHS if p not in loaded]
    failed_paths = draw(st.sets(st.sampled_from(candidates))) if candidates else set()
    failed = {p: stat_of(p) for p in sorted(failed_paths)}
    return DirState(loaded, failed, found)


def _newest(paths: set[Path], found: Mapping[Path, FileStat]) -> Path:
    return max(paths, key=lambda p: (found[p].mtime_ns, p.name))


def _apply(state: DirState, plan: SyncPlan) -> dict[Path, FileStat]:
    """The loaded files after ``plan``, every load succeeding; a load replaces whatever
    file of the same plugin was loaded (the host keys plugins by binary id)."""
    after = dict(state.loaded)

    def load(path: Path) -> None:
        for other in [p for p in after if _dist(p) == _dist(path)]:
            del after[other]
        after[path] = state.found[path]

    for path in plan.unload:
        del after[path]
    for _old, new in plan.replace:
        load(new)
    for path in plan.load:
        load(path)
    return after


@given(dir_states())
def test_plan_is_well_formed(state: DirState) -> None:
    plan = state.plan()
    loads = [*plan.load, *(new for _old, new in plan.replace)]
    unloads = [*plan.unload, *(old for old, _new in plan.replace)]

    for part in (plan.unload, plan.load, plan.skip, tuple(new for _o, new in plan.replace)):
        assert list(part) == sorted(part)
    assert plan.skip == tuple(sorted(state.stale))
    assert set(unloads) <= state.loaded.keys()
    assert set(loads) <= state.found.keys()
    # A failed, unchanged wheel is never retried.
    assert not set(loads) & state.stale
    # Nothing is both unloaded and loaded; nothing is planned twice.
    assert not set(plan.unload) & set(loads)
    assert len(set(loads)) == len(loads)
    assert len(set(unloads)) == len(unloads)
    # One load per plugin per pass.
    assert len({_dist(p) for p in loads}) == len(loads)


@given(dir_states())
def test_every_found_wheel_is_loaded_replaced_skipped_kept_or_superseded(
    state: DirState,
) -> None:
    plan = state.plan()
    loads = {*plan.load, *(new for _old, new in plan.replace)}
    eligible = state.found.keys() - state.stale
    for path, stat in state.found.items():
        superseded = any(
            _dist(other) == _dist(path)
            and other != path
            and _newest({path, other}, state.found) == other
            for other in eligible
        )
        kept = state.loaded.get(path) == stat
        assert path in loads or path in plan.skip or kept or superseded, path


@given(dir_states())
def test_applied_plan_loads_the_newest_of_each_plugin_and_converges(state: DirState) -> None:
    after = _apply(state, state.plan())

    for dist in DISTS:
        eligible = {p for p in state.found.keys() - state.stale if _dist(p) == dist}
        held = any(_dist(p) == dist for p in state.stale)
        mine = {p for p in after if _dist(p) == dist}
        if eligible:
            assert mine == {_newest(eligible, state.found)}
        elif held:
            # The last good generation keeps serving while only a broken wheel is there.
            assert mine == {p for p in state.loaded if _dist(p) == dist}
        else:
            assert mine == set()
    assert plan_sync(after, state.failed, state.found).empty


@st.composite
def vanished_states(draw: st.DrawFn) -> tuple[DirState, Path]:
    """A state where one plugin's loaded file is gone and only failed, unchanged wheels
    of it are in the directory (other plugins arbitrary)."""
    base = draw(dir_states())
    dist = draw(st.sampled_from(DISTS))
    mine = [p for p in PATHS if _dist(p) == dist]
    gone = draw(st.sampled_from(mine))
    broken = draw(st.sets(st.sampled_from([p for p in mine if p != gone]), min_size=1))

    def others(d: dict[Path, FileStat]) -> dict[Path, FileStat]:
        return {p: s for p, s in d.items() if _dist(p) != dist}

    loaded, failed, found = others(base.loaded), others(base.failed), others(base.found)
    for path in sorted(broken):
        found[path] = failed[path] = draw(stats)
    loaded[gone] = draw(stats)
    return DirState(loaded, failed, found), gone


@given(vanished_states())
def test_a_loaded_plugin_whose_file_vanished_is_kept_beside_its_failed_newer_wheel(
    case: tuple[DirState, Path],
) -> None:
    state, gone = case

    plan = state.plan()

    assert gone not in plan.unload
    assert gone not in [old for old, _new in plan.replace]
    assert not [p for p in [*plan.load, *plan.replace] if p in state.stale]


@given(dir_states(), st.randoms(use_true_random=False))
def test_plan_does_not_depend_on_dict_order(state: DirState, rnd: random.Random) -> None:
    def shuffled(d: dict[Path, FileStat]) -> dict[Path, FileStat]:
        items = list(d.items())
        rnd.shuffle(items)
        return dict(items)

    again = plan_sync(shuffled(state.loaded), shuffled(state.failed), shuffled(state.found))
    assert again == state.plan()


# -- the factory ----------------------------------------------------------------------------------


async def test_factory_constructs_a_controller_for_an_existing_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plugins").mkdir()
    monkeypatch.chdir(tmp_path)
    bus, _static = new_core_bus()
    async with bus:
        with StateDir(tmp_path / "state") as state:
            factory = new_filesystem_loader_factory(PluginHost(bus, state))
            assert factory.config_id() == factory.controller_id() == FILESYSTEM_LOADER_ID
            assert isinstance(factory.construct_config(), FilesystemLoaderConfig)

            ctrl = factory.construct(
                FilesystemLoaderConfig(dir="plugins", watch=True), ConstructOpts()
            )
            assert isinstance(ctrl, FilesystemLoaderController)
            assert (ctrl.directory, ctrl.watch) == (tmp_path / "plugins", True)
            assert ctrl.get_controller_info().id == FILESYSTEM_LOADER_ID

            with pytest.raises(LoaderError, match="plugins directory does not exist"):
                factory.construct(FilesystemLoaderConfig(dir="nope"), ConstructOpts())
            with pytest.raises(
                TypeError, match="expects a FilesystemLoaderConfig, got BoilerplateConfig"
            ):
                factory.construct(BoilerplateConfig(example_field="x"), ConstructOpts())
            with pytest.raises(ValueError, match="dir must be set"):
                FilesystemLoaderConfig().validate_config()


# -- the controller on a real directory -----------------------------------------------------------


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Wheels:
    return compile_wheels(tmp_path_factory.mktemp("fs-plugins"), PREFIX)


@contextlib.asynccontextmanager
async def plugin_host(
    tmp_path: Path, on_change: Callable[[], Awaitable[None]] | None = None
) -> AsyncIterator[PluginHost]:
    bus, _static = new_core_bus()
    async with bus:
        with StateDir(tmp_path / "state") as state:
            host = PluginHost(bus, state, on_change=on_change)
            try:
                yield host
            finally:
                await host.aclose()


def drop(src: Path | bytes, dst: Path) -> Path:
    """Put a wheel into the plugins directory as a compiler does: temp name, rename."""
    tmp = dst.with_name(dst.name + ".part")
    if isinstance(src, bytes):
        tmp.write_bytes(src)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


async def eventually(pred: Callable[[], object], what: str, *, within: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)


def _load_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if "unable to load plugin file" in r.getMessage()
    ]


async def test_sync_keeps_the_last_good_generation_and_skips_a_failed_wheel(
    wheels: Wheels, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    bid = wheels.projects.binary_id
    async with plugin_host(tmp_path) as host:
        ctrl = FilesystemLoaderController(host, plugins)
        v1 = drop(wheels.v1.wheel, plugins / wheels.v1.wheel.name)

        assert await ctrl.sync() == SyncPlan(load=(v1,))
        assert host.active() == {bid: wheels.v1.sha256}
        assert list(ctrl.loaded) == [v1]

        v2 = plugins / wheels.v2.wheel.name
        corrupt_member(wheels.v2.wheel, tmp_path / wheels.v2.wheel.name, "cbt_fs_plugin/greeter.py")
        drop(tmp_path / wheels.v2.wheel.name, v2)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="controllerbus.loader.filesystem"):
            assert await ctrl.sync() == SyncPlan(replace=((v1, v2),))
            assert len(_load_warnings(caplog)) == 1
            assert "Bad CRC-32" in _load_warnings(caplog)[0]
            assert host.active() == {bid: wheels.v1.sha256}
            assert list(ctrl.failed) == [v2]

            # Unchanged: not tried again.
            assert await ctrl.sync() == SyncPlan(skip=(v2,))
            assert len(_load_warnings(caplog)) == 1

            # The good wheel's file goes away; with only a broken newer wheel there,
            # the last good generation keeps serving.
            v1.unlink()
            assert await ctrl.sync() == SyncPlan(skip=(v2,))
            assert host.active() == {bid: wheels.v1.sha256}

        # The broken file is fixed (same name, new content): retried, and replaces v1.
        drop(wheels.v2.wheel, v2)
        assert await ctrl.sync() == SyncPlan(replace=((v1, v2),))
        assert host.active() == {bid: wheels.v2.sha256}
        assert (list(ctrl.loaded), ctrl.failed) == ([v2], {})
        assert ctrl.passes == 5


async def test_a_failed_in_place_rewrite_is_tried_once(
    wheels: Wheels, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    async with plugin_host(tmp_path) as host:
        ctrl = FilesystemLoaderController(host, plugins)
        path = drop(wheels.v1.wheel, plugins / wheels.v1.wheel.name)
        await ctrl.sync()
        corrupt = corrupt_member(wheels.v1.wheel, tmp_path / "c.whl", "cbt_fs_plugin/greeter.py")
        drop(corrupt, path)  # e.g. a hand-built wheel copied over, same version
        caplog.clear()

        with caplog.at_level(logging.WARNING, logger="controllerbus.loader.filesystem"):
            await ctrl.sync()
            await ctrl.sync()

        assert host.active() == {wheels.projects.binary_id: wheels.v1.sha256}
        assert len(_load_warnings(caplog)) == 1


async def test_watching_raises_no_deprecation_warning(wheels: Wheels, tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    async with plugin_host(tmp_path) as host:
        ctrl = FilesystemLoaderController(host, plugins, watch=True, debounce_ms=200, step_ms=50)
        task = asyncio.create_task(ctrl.execute())
        try:
            await asyncio.wait_for(ctrl.synced.wait(), 10)
            await asyncio.sleep(0.2)
            assert not task.done(), task.exception()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.mark.slow
async def test_watch_loads_reloads_and_unloads_as_files_come_and_go(
    wheels: Wheels, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    bid = wheels.projects.binary_id
    async with plugin_host(tmp_path) as host:
        ctrl = FilesystemLoaderController(host, plugins, watch=True, debounce_ms=200, step_ms=50)
        task = asyncio.create_task(ctrl.execute())
        try:
            await asyncio.wait_for(ctrl.synced.wait(), 10)
            assert host.active() == {}

            v1 = drop(wheels.v1.wheel, plugins / wheels.v1.wheel.name)
            await eventually(lambda: host.active() == {bid: wheels.v1.sha256}, "v1 loaded")

            v2 = drop(wheels.v2.wheel, plugins / wheels.v2.wheel.name)
            v1.unlink()
            await eventually(
                lambda: host.active() == {bid: wheels.v2.sha256} and list(ctrl.loaded) == [v2],
                "v2 replaced v1",
            )
            record = host.manifest.get(bid)
            assert record is not None
            assert (record.status, record.generation, record.leaks) == (
                "active",
                wheels.v2.sha256,
                [],
            )

            v2.unlink()

            def unloaded() -> bool:
                record = host.manifest.get(bid)
                return record is not None and record.status == "unloaded"

            await eventually(unloaded, "v2 unloaded")
            assert host.active() == {}
            # Temporary names never reached the host.
            assert [r.binary_id for r in host.manifest.plugins] == [bid]
            assert ctrl.failed == {}
            assert ctrl.passes >= 3
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert ctrl.stopped.is_set()


@pytest.mark.slow
async def test_cancelling_the_controller_unloads_its_plugins(
    wheels: Wheels, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    drop(wheels.v1.wheel, plugins / wheels.v1.wheel.name)
    async with plugin_host(tmp_path) as host:
        ctrl = FilesystemLoaderController(host, plugins)
        task = asyncio.create_task(ctrl.execute())
        await asyncio.wait_for(ctrl.synced.wait(), 10)
        assert host.active() == {wheels.projects.binary_id: wheels.v1.sha256}

        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

        assert ctrl.stopped.is_set()
        assert host.active() == {}
        assert ctrl.loaded == {}


@pytest.mark.slow
async def test_a_wheel_written_during_the_first_sync_is_not_missed(
    wheels: Wheels, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    v1 = drop(wheels.v1.wheel, plugins / wheels.v1.wheel.name)
    bid = wheels.projects.binary_id

    async def slow_on_change() -> None:
        # As the daemon's config-set refresh, which waits for its keys to report.
        await asyncio.sleep(0.5)

    async with plugin_host(tmp_path, on_change=slow_on_change) as host:
        ctrl = FilesystemLoaderController(host, plugins, watch=True, debounce_ms=200, step_ms=50)
        task = asyncio.create_task(ctrl.execute())
        try:
            await eventually(lambda: host.active(), "v1 loaded by the first pass")
            assert not ctrl.synced.is_set()
            drop(wheels.v2.wheel, plugins / wheels.v2.wheel.name)
            v1.unlink()
            await asyncio.wait_for(ctrl.synced.wait(), 10)

            await eventually(lambda: host.active() == {bid: wheels.v2.sha256}, "v2", within=2)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# -- the daemon waits for the loader that is running now ------------------------------------------


def _fail_first_scan(
    monkeypatch: pytest.MonkeyPatch, then: Callable[[Path], None] = lambda _d: None
) -> list[Path]:
    """The first pass finds its plugins directory unreadable (EACCES), once.

    Injected: the tests run as root, where a chmod cannot make a directory unreadable.
    """
    from controllerbus.loader import filesystem

    real = filesystem.scan_plugins_dir
    calls: list[Path] = []

    def briefly_unreadable(directory: Path) -> tuple[dict[Path, FileStat], dict[Path, object]]:
        calls.append(directory)
        if len(calls) == 1:
            then(directory)
            raise PermissionError(13, "Permission denied", str(directory))
        return real(directory)  # type: ignore[return-value]

    monkeypatch.setattr(filesystem, "scan_plugins_dir", briefly_unreadable)
    return calls


async def test_the_daemon_waits_for_the_restarted_loaders_first_pass(
    wheels: Wheels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controllerbus.daemon import DaemonOptions, daemon_session

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    drop(wheels.v1.wheel, plugins / wheels.v1.wheel.name)
    calls = _fail_first_scan(monkeypatch)
    options = DaemonOptions(plugins_dir=plugins, state_dir=tmp_path / "state", watch=False)
    # The bus retries the loader after ~0.5 s; waiting on the failed instance never ends.
    async with asyncio.timeout(15), daemon_session(options) as session:
        assert len(calls) == 2
        assert session.host is not None
        assert session.host.active() == {wheels.binary_id: wheels.v1.sha256}


async def test_the_daemon_fails_loudly_when_the_restarted_loader_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controllerbus.daemon import DaemonOptions, daemon_session

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    _fail_first_scan(monkeypatch, then=lambda d: d.rmdir())
    options = DaemonOptions(plugins_dir=plugins, state_dir=tmp_path / "state", watch=False)
    with pytest.raises(LoaderError, match=r"cannot start the plugin loader: .* does not exist"):
        async with asyncio.timeout(15), daemon_session(options):
            pass
