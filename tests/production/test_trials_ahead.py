"""Trials ahead (docs/loader.md#trials-ahead): a cold start's trials overlap its installs,
and a load uses an answer from ahead only if it passed, for exactly its generation."""

from __future__ import annotations

from pathlib import Path

import pytest

from controllerbus.bus.bus import Bus
from controllerbus.core import new_core_bus
from controllerbus.loader.errors import PluginPrepareError
from controllerbus.loader.generation import Generation
from controllerbus.loader.host import PluginHost
from controllerbus.loader.production import LoadPolicy
from controllerbus.loader.state import StateDir
from controllerbus.loader.trial import TrialKind, TrialResult
from tests.production.prodkit import build, plugin_project


class ScriptedTrials:
    """A trial runner that records every trial and fails the binary ids in ``fail``."""

    kind: TrialKind = "fork"

    def __init__(self, fail: set[str]) -> None:
        self.fail = fail
        self.calls: list[str] = []

    def start(self) -> None:
        pass

    async def trial(self, generation: Generation, binary_id: str, entry_point: str) -> TrialResult:
        self.calls.append(binary_id)
        if binary_id in self.fail:
            return TrialResult(ok=False, error=f"{binary_id} refuses to import")
        return TrialResult(ok=True)

    async def aclose(self) -> None:
        pass


async def _host(bus: Bus, state: StateDir, trials: ScriptedTrials) -> PluginHost:
    return PluginHost(bus, state, trials=trials, policy=LoadPolicy(exclude=(state.path,)))


async def test_a_load_after_install_ahead_takes_the_passed_trial(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "wheels"
    wheels = [build(plugin_project(src, f"cbp_tra{i}", dependency=None), out) for i in range(3)]
    trials = ScriptedTrials(fail={"test/cbp_tra2"})
    bus, _static = new_core_bus()
    async with bus:
        with StateDir(tmp_path / "state") as state:
            host = await _host(bus, state, trials)
            try:
                await host.install_ahead(wheels)
                for wheel in wheels[:2]:
                    await host.load(wheel)
                # One trial each, run ahead; the loads asked for no other.
                assert sorted(trials.calls) == ["test/cbp_tra0", "test/cbp_tra1", "test/cbp_tra2"]
                # A failed answer from ahead is not used: the load trials again and
                # reports the failure as always; the plugin does not go active.
                with pytest.raises(PluginPrepareError, match="refuses to import"):
                    await host.load(wheels[2])
                assert trials.calls.count("test/cbp_tra2") == 2
                assert sorted(host.active()) == ["test/cbp_tra0", "test/cbp_tra1"]
                # An answer is used once: a reload of the same plugin's other
                # generation (unload, load again) trials again.
                await host.unload("test/cbp_tra0")
                await host.load(wheels[0])
                assert trials.calls.count("test/cbp_tra0") == 2
            finally:
                await host.aclose()
