"""PluginHost with a trust file and dependency wheels: real wheels, bus and generations."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controllerbus.core import new_core_bus
from controllerbus.errors import LoaderError
from controllerbus.loader.dependencies import plan_dependencies
from controllerbus.loader.errors import HostDependencyError
from controllerbus.loader.generation import generation_id_of
from controllerbus.loader.host import PluginHost
from controllerbus.loader.production import LoadPolicy
from controllerbus.loader.state import StateDir
from controllerbus.loader.trial import NoTrialRunner
from controllerbus.loader.trust import TrustFileError, UntrustedWheel
from controllerbus.loader.wheelsource import DependencyError

from .prodkit import build, dependency_project, pin, plugin_project, sha256

PREFIX = "cbp_host"
BINARY_ID = f"test/{PREFIX}"
DEP_MODULE = f"{PREFIX}_dep"
DIST_PREFIX = PREFIX.replace("_", "-")


@dataclass(frozen=True, slots=True)
class Wheels:
    v1: Path
    v2: Path
    dep: Path
    needs_missing: Path


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Wheels:
    src = tmp_path_factory.mktemp("src")
    out = tmp_path_factory.mktemp("wheels")
    return Wheels(
        v1=build(plugin_project(src, PREFIX), out / "v1"),
        v2=build(plugin_project(src, PREFIX, version="2.0.0"), out / "v2"),
        dep=build(dependency_project(src, PREFIX), out / "dep"),
        needs_missing=build(
            plugin_project(src, PREFIX, version="3.0.0", dependency=">=9"), out / "v3"
        ),
    )


@dataclass(eq=False)
class Env:
    host: PluginHost
    state: StateDir
    house: Path
    trust: Path


@contextlib.asynccontextmanager
async def production_host(tmp_path: Path, *, trusted: bool = True) -> AsyncIterator[Env]:
    house = tmp_path / "house"
    house.mkdir()
    trust = tmp_path / "trust.txt"
    trust.write_text("")
    bus, _static = new_core_bus()
    async with bus:
        with StateDir(tmp_path / "state") as state:
            policy = LoadPolicy.of(trust if trusted else None, [house], [state.path])
            host = PluginHost(bus, state, policy=policy, trials=NoTrialRunner())
            try:
                yield Env(host, state, house, trust)
            finally:
                await host.aclose()


def put(env: Env, *wheels: Path) -> list[Path]:
    return [Path(shutil.copy2(w, env.house / w.name)) for w in wheels]


def generations(env: Env) -> list[str]:
    gens = env.state.path / "generations"
    return sorted(p.name for p in gens.iterdir()) if gens.is_dir() else []


async def test_pinned_plugin_with_a_dependency_loads_and_unloads_clean(
    tmp_path: Path, wheels: Wheels
) -> None:
    async with production_host(tmp_path) as env:
        plugin, dep = put(env, wheels.v1, wheels.dep)
        env.trust.write_text(pin(plugin, dep))
        result = await env.host.load(plugin)
        assert result.generation == generation_id_of(sha256(plugin), [sha256(dep)])
        assert result.generation != sha256(plugin)
        where = str(sys.modules[DEP_MODULE].__file__)
        assert where.startswith(str(env.state.path / "generations" / result.generation))

        report = await env.host.unload(BINARY_ID)
        assert report.clean, report.survivors
        assert DEP_MODULE in report.modules
        assert DEP_MODULE not in sys.modules


async def test_unpinned_and_wrong_hash_refused_before_unpacking(
    tmp_path: Path, wheels: Wheels
) -> None:
    async with production_host(tmp_path) as env:
        plugin, dep = put(env, wheels.v1, wheels.dep)
        env.trust.write_text(pin(dep))
        with pytest.raises(UntrustedWheel) as info:
            await env.host.load(plugin)
        assert sha256(plugin) in str(info.value)
        assert "not pinned" in str(info.value)
        assert generations(env) == []
        assert env.host.manifest.plugins[-1].status == "rejected"

        env.trust.write_text(f"{plugin.name} --hash=sha256:{'0' * 64}\n" + pin(dep))
        with pytest.raises(UntrustedWheel, match="does not match the trust file"):
            await env.host.load(plugin)
        assert generations(env) == []


async def test_dependency_with_wrong_hash_refused_old_generation_serving(
    tmp_path: Path, wheels: Wheels
) -> None:
    async with production_host(tmp_path) as env:
        v1, dep = put(env, wheels.v1, wheels.dep)
        env.trust.write_text(pin(v1, dep))
        first = await env.host.load(v1)

        (v2,) = put(env, wheels.v2)
        env.trust.write_text(pin(v1, v2) + f"{dep.name} --hash=sha256:{'1' * 64}\n")
        with pytest.raises(UntrustedWheel) as info:
            await env.host.load(v2)
        assert dep.name in str(info.value)
        assert sha256(dep) in str(info.value)
        assert env.host.active() == {BINARY_ID: first.generation}
        assert sys.modules[DEP_MODULE] is not None

        # A broken trust file fails closed; the running generation keeps serving.
        env.trust.write_text("this is not a pin\n")
        with pytest.raises(TrustFileError):
            await env.host.load(v2)
        assert env.host.active() == {BINARY_ID: first.generation}


async def test_missing_dependency_and_sdists_are_clear_errors(
    tmp_path: Path, wheels: Wheels
) -> None:
    async with production_host(tmp_path, trusted=False) as env:
        (plugin,) = put(env, wheels.needs_missing)
        (env.house / f"{PREFIX}_dep-9.0.tar.gz").write_bytes(b"an sdist")
        with pytest.raises(DependencyError) as info:
            await env.host.load(plugin)
        message = str(info.value)
        assert f"requires '{DIST_PREFIX}-dep>=9'" in message
        assert str(env.house) in message
        assert "sdists are never built" in message
        assert generations(env) == []


async def test_unpinned_dependency_is_not_a_candidate(tmp_path: Path, wheels: Wheels) -> None:
    async with production_host(tmp_path) as env:
        plugin, dep = put(env, wheels.v1, wheels.dep)
        env.trust.write_text(pin(plugin))
        with pytest.raises(DependencyError, match=f"not pinned in the trust file: {dep.name}"):
            await env.host.load(plugin)


async def test_without_trust_the_wheelhouse_still_provides(tmp_path: Path, wheels: Wheels) -> None:
    async with production_host(tmp_path, trusted=False) as env:
        plugin, _dep = put(env, wheels.v1, wheels.dep)
        await env.host.load(plugin)
        assert DEP_MODULE in sys.modules
    assert DEP_MODULE not in sys.modules


def test_host_serves_what_it_has_in_its_version() -> None:
    plan = plan_dependencies(
        ["click<1", "brand-new>=2", "old; python_version < '3'", "x[extra]; extra == 'cli'"],
        {"click"},  # type: ignore[arg-type]
        via="p.whl",
    )
    assert plan.host_lines == ("click<1",)
    assert [w.name for w in plan.wanted] == ["brand-new"]
    # click is installed, so the host's (incompatible) click stays the host check's error.
    from controllerbus.loader.hostdeps import check_host_requirements

    with pytest.raises(HostDependencyError, match="click"):
        check_host_requirements(plan.host_lines, plugin="p")


def test_dependency_wheels_are_told_apart_from_broken_plugin_wheels(
    tmp_path: Path, wheels: Wheels
) -> None:
    from controllerbus.loader.depwheel import split_dependency_wheels
    from tests.loader.wheelkit import dist_info_of, repack

    v2 = wheels.v2
    # v2 without its entry point: same distribution as a plugin, so a broken plugin.
    broken = repack(v2, tmp_path / v2.name, remove={f"{dist_info_of(v2)}/entry_points.txt"})
    plugins, deps = split_dependency_wheels([wheels.v1, wheels.dep, broken])
    assert (plugins, deps) == ([wheels.v1, broken], [wheels.dep])
    # Alone in the directory, it is still a plugin's wheel if that plugin is loaded.
    assert split_dependency_wheels([broken], [f"{DIST_PREFIX}-plugin"]) == ([broken], [])
    assert split_dependency_wheels([broken]) == ([], [broken])


async def test_install_ahead_installs_in_parallel_and_loads_reuse(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "wheels"
    wheels = [build(plugin_project(src, f"cbp_ahead{i}", dependency=None), out) for i in range(3)]
    broken = out / "cbp_broken-1.0-py3-none-any.whl"
    broken.write_bytes(b"not a zip")
    async with production_host(tmp_path, trusted=False) as env:
        await env.host.install_ahead([*wheels, broken])
        assert generations(env) == sorted(sha256(w) for w in wheels)
        results = [await env.host.load(w) for w in wheels]
        # Every load found its generation installed: the gc after the first load
        # spared the ones installed ahead for the loads still to come.
        assert [r.reused for r in results] == [True, True, True]
        assert sorted(env.host.active().values()) == generations(env)
        with pytest.raises(LoaderError, match="not a valid zip"):
            await env.host.load(broken)


async def test_the_unload_proof_covers_dependency_modules(tmp_path: Path, wheels: Wheels) -> None:
    async with production_host(tmp_path, trusted=False) as env:
        plugin, _dep = put(env, wheels.v1, wheels.dep)
        await env.host.load(plugin)
        held = [sys.modules[DEP_MODULE]]  # a host-side reference to the dependency
        report = await env.host.unload(BINARY_ID)
        assert any(f"module {DEP_MODULE}" in s for s in report.survivors), report.survivors
        held.clear()
