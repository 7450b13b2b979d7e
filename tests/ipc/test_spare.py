"""Warm spare children: a reload hands the generation to a spare, with real processes."""

from __future__ import annotations

import sys
from pathlib import Path

from controllerbus.core import new_core_bus
from controllerbus.ipc.spare import SparePool, WarmSite
from controllerbus.loader.host import PluginHost
from controllerbus.loader.state import StateDir
from tests.helpers import eventually

from .conftest import alive, start_controller
from .test_loader_process import _report, make_wheel


async def test_reload_hands_the_new_generation_to_the_warm_spare(tmp_path: Path) -> None:
    bus, _ = new_core_bus()
    with StateDir(tmp_path / "state") as state:
        host = PluginHost(bus, state, isolation="process")
        await host.load(make_wheel(tmp_path, generation="warm1"))
        first = host.process_plugin("ipc-old")
        assert first is not None
        assert first.status.pid is not None
        assert host.spares.handed_out == 0  # nothing was warm yet
        assert await host.spares.wait_ready()  # started once the first child was up
        (spare_pid,) = host.spares.pids()
        assert alive(spare_pid)
        ref = await start_controller(bus, "test/ipc/old/1")

        await host.load(make_wheel(tmp_path, generation="warm22"))
        plugin = host.process_plugin("ipc-old")
        assert plugin is not None
        assert host.spares.handed_out == 1
        assert plugin.status.pid == spare_pid
        record = host.manifest.get("ipc-old")
        assert record is not None
        assert record.pid == spare_pid
        # The spare imported the new generation, with the generation's own click.
        report = await _report(bus, "from the spare")
        assert report["generation"] == "warm22"
        assert report["click"] == "7.0"
        assert report["pid"] == spare_pid
        ref.release()

        assert await host.spares.wait_ready()  # the next spare, started after
        (next_spare,) = host.spares.pids()
        assert next_spare != spare_pid
        await host.aclose()
        # Unloading ends the plugin's child; closing the host ends the spare.
        await eventually(lambda: not alive(spare_pid) and not alive(next_spare), within=10)
    await bus.aclose()


async def test_spare_is_not_used_where_it_differs_from_a_fresh_child(tmp_path: Path) -> None:
    pool = SparePool()
    pool.refill()
    assert await pool.wait_ready()
    (pid,) = pool.pids()
    own_pydantic = tmp_path / "own-pydantic"
    (own_pydantic / "pydantic").mkdir(parents=True)
    plain = tmp_path / "plain"
    plain.mkdir()
    # A generation with its own copy of a package the spare has imported: fresh child.
    assert await pool.take(sys.executable, None, WarmSite(str(own_pydantic))) is None
    # Another interpreter, its own environment, no site: fresh child.
    assert pool.unfit("/bin/sh", None, WarmSite(str(plain))) is not None
    assert pool.unfit(sys.executable, {"A": "1"}, WarmSite(str(plain))) is not None
    assert pool.unfit(sys.executable, None, None) is not None
    assert list(pool.pids()) == [pid]  # still there for the next one
    spare = await pool.take(sys.executable, None, WarmSite(str(plain)))
    assert spare is not None
    assert spare.proc.pid == pid
    assert "pydantic" in spare.preloaded
    spare.conn.close()
    await spare.proc.wait()  # the end of the socket ends a spare
    await pool.aclose()


async def test_spare_not_ready_in_time_is_killed_and_the_pool_stands_down() -> None:
    pool = SparePool(ready_timeout=0.001)
    pool.refill()
    assert not await pool.wait_ready()
    assert pool.unfit(sys.executable, None, WarmSite("/nonexistent")) is not None
    assert list(pool.pids()) == []
    await pool.aclose()


async def test_closing_the_pool_ends_the_spare() -> None:
    pool = SparePool()
    pool.refill()
    assert await pool.wait_ready()
    (pid,) = pool.pids()
    await pool.aclose()
    assert not alive(pid)
    pool.refill()  # closed: starts nothing
    assert list(pool.pids()) == []
