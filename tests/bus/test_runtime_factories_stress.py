"""Random interleavings of factory changes and directives: the bus ends consistent.

Operations run back to back with few or no loop rounds between them, so factory
changes arrive while earlier re-offers are still cancelling their resolvers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import ClassVar

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controllerbus.bus import (
    BackoffPolicy,
    Config,
    ConstructOpts,
    Controller,
    ExecController,
    ExecControllerValue,
    LoadControllerWithConfig,
    Reference,
    ResolverController,
    StaticResolver,
)
from controllerbus.core import new_core_bus
from tests.bus.doubles import Recorder, Widget


class AlphaConfig(Config):
    CONFIG_ID: ClassVar[str] = "test/stress/alpha"


class BetaConfig(Config):
    CONFIG_ID: ClassVar[str] = "test/stress/beta"


CONFIGS: tuple[type[Config], ...] = (AlphaConfig, BetaConfig)
VERSIONS = ("0.0.1", "0.0.2", "0.1.0")


class VersionedFactory:
    def __init__(self, config_type: type[Config], version: str, built: list[Widget]) -> None:
        self._config_type = config_type
        self._version = version
        self._built = built

    def config_id(self) -> str:
        return self._config_type.config_id()

    def controller_id(self) -> str:
        return self._config_type.config_id()

    def construct_config(self) -> Config:
        return self._config_type()

    def construct(self, config: Config, opts: ConstructOpts) -> Controller:
        widget = Widget(self._version, 0, [])
        self._built.append(widget)
        return widget

    def version(self) -> str:
        return self._version


@dataclass
class Holder:
    config_index: int
    recorder: Recorder
    ref: Reference


def _key(version: str) -> tuple[int, ...]:
    return tuple(map(int, version.split(".")))


@dataclass
class Model:
    """What each resolver should hold: (resolver, config index) -> version."""

    held: dict[tuple[int, int], str] = field(default_factory=dict)

    def add(self, resolver: int, index: int, version: str) -> None:
        current = self.held.get((resolver, index))
        if current is None or _key(version) > _key(current):
            self.held[(resolver, index)] = version

    def remove(self, resolver: int, index: int) -> None:
        self.held.pop((resolver, index), None)

    @property
    def versions(self) -> dict[int, str]:
        """The highest version any resolver offers, per config index."""
        best: dict[int, str] = {}
        for (_resolver, index), version in self.held.items():
            if index not in best or _key(version) > _key(best[index]):
                best[index] = version
        return best


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 1), st.integers(0, 1), st.sampled_from(VERSIONS)),
        st.tuples(st.just("remove"), st.integers(0, 1), st.integers(0, 1)),
        st.tuples(st.just("want"), st.integers(0, 1)),
        st.tuples(st.just("release"), st.integers(0, 5)),
        st.tuples(st.just("rounds"), st.integers(0, 3)),
    ),
    max_size=25,
)


def running_versions(recorder: Recorder) -> list[str]:
    out = []
    for value in recorder.values:
        assert isinstance(value, ExecControllerValue)
        assert value.error is None, value.error
        assert isinstance(value.controller, Widget)
        out.append(value.controller.version)
    return out


async def _run(script: list[tuple[object, ...]]) -> None:
    bus, static = new_core_bus(backoff=BackoffPolicy(initial_interval=0.01, max_elapsed=0.1))
    # A second resolver controller (as a plugin brings) offering the same config ids.
    extra = StaticResolver()
    resolvers = (static, extra)
    built: list[Widget] = []
    model = Model()
    holders: list[Holder] = []
    async with bus:
        bus.run_controller(ResolverController(bus, extra))
        for op in script:
            kind = op[0]
            if kind == "add":
                which, index, version = int(op[1]), int(op[2]), str(op[3])  # type: ignore[call-overload]
                resolvers[which].add_factory(VersionedFactory(CONFIGS[index], version, built))
                model.add(which, index, version)
            elif kind == "remove":
                which, index = int(op[1]), int(op[2])  # type: ignore[call-overload]
                resolvers[which].remove_factory(CONFIGS[index].config_id())
                model.remove(which, index)
            elif kind == "want":
                index = int(op[1])  # type: ignore[call-overload]
                recorder = Recorder()
                _inst, ref = bus.add_directive(LoadControllerWithConfig(CONFIGS[index]()), recorder)
                holders.append(Holder(index, recorder, ref))
            elif kind == "release" and holders:
                holders.pop(int(op[1]) % len(holders)).ref.release()  # type: ignore[call-overload]
            elif kind == "rounds":
                for _ in range(int(op[1])):  # type: ignore[call-overload]
                    await asyncio.sleep(0)

        for _ in range(50):
            await asyncio.sleep(0)

        wanted = {h.config_index for h in holders}
        for holder in holders:
            ids = [v.value_id for v in holder.recorder.added]
            assert len(ids) == len(set(ids)), "a value id was reported twice"
            # One running controller of the highest offered version (reported once
            # per resolver controller that joined it).
            expected = model.versions.get(holder.config_index)
            assert set(running_versions(holder.recorder)) == ({expected} if expected else set())
        execs = sorted(
            (d.config.config_id(), d.factory.version())
            for d in (i.get_directive() for i in bus.get_directives())
            if isinstance(d, ExecController)
        )
        assert execs == sorted(
            (CONFIGS[i].config_id(), v) for i, v in model.versions.items() if i in wanted
        )
        serving = {
            id(v.controller)
            for h in holders
            for v in h.recorder.values
            if isinstance(v, ExecControllerValue)
        }
        for widget in built:
            assert widget.closed == (id(widget) not in serving)
        assert len(serving) == len([i for i in wanted if i in model.versions])
        for holder in holders:
            holder.ref.release()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
@example(  # a newer factory elsewhere supersedes, then is withdrawn: fall back
    [
        ("add", 0, 0, "0.0.1"),
        ("want", 0),
        ("rounds", 3),
        ("add", 1, 0, "0.0.2"),
        ("rounds", 3),
        ("remove", 1, 0),
    ]
)
def test_factory_changes_interleaved_with_directives_end_consistent(
    script: list[tuple[object, ...]],
) -> None:
    asyncio.run(_run(script))
