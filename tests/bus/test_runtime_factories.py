"""Factories added or removed at runtime serve (or stop serving) directives already waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar

import pytest

from controllerbus.bus import (
    BackoffPolicy,
    Bus,
    Config,
    ConfigConstructor,
    ExecController,
    ExecControllerValue,
    LoadConfigConstructorByID,
    LoadControllerWithConfig,
    LoadFactoryByConfig,
    Resolver,
    ResolverController,
    ResolverHandler,
    StaticResolver,
    exec_one_off,
    wait_exec_controller_running,
)
from controllerbus.core import new_core_bus
from tests.bus.doubles import (
    Answering,
    Ask,
    FnResolver,
    Recorder,
    Widget,
    WidgetConfig,
    WidgetFactory,
    adds,
    settle,
)
from tests.helpers import eventually

FAST = BackoffPolicy(initial_interval=0.01, max_interval=0.02, max_elapsed=0.2)


@pytest.fixture
async def core() -> AsyncIterator[tuple[Bus, StaticResolver]]:
    bus, static = new_core_bus(backoff=FAST)
    async with bus:
        yield bus, static
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


def exec_versions(bus: Bus) -> list[str]:
    """Factory versions of the live ``ExecController`` directives."""
    return [
        d.factory.version()
        for d in (i.get_directive() for i in bus.get_directives())
        if isinstance(d, ExecController)
    ]


def running(rec: Recorder) -> list[Widget]:
    """The controllers the recorded directive currently reports as running."""
    out: list[Widget] = []
    for value in rec.values:
        assert isinstance(value, ExecControllerValue)
        if value.controller is not None and value.error is None:
            assert isinstance(value.controller, Widget)
            out.append(value.controller)
    return out


# -- a directive waiting before any factory exists ---------------------------------------------


async def test_waiting_load_controller_is_resolved_when_the_factory_is_added(
    core: tuple[Bus, StaticResolver],
) -> None:
    bus, static = core
    waiter = asyncio.create_task(
        wait_exec_controller_running(bus, LoadControllerWithConfig(WidgetConfig()))
    )
    await settle(20)
    assert not waiter.done()
    assert exec_versions(bus) == []

    factory = WidgetFactory("0.0.1")
    assert static.add_factory(factory)
    ctrl, inst, ref = await asyncio.wait_for(waiter, 5)
    assert ctrl is factory.built[0]
    assert factory.log == ["execute 0.0.1"]
    assert exec_versions(bus) == ["0.0.1"]
    # Exactly one value: the re-offer did not add a second answer.
    assert len(inst.get_values()) == 1
    ref.release()
    await settle(10)
    assert factory.built[0].closed


async def test_waiting_lookups_are_resolved_when_the_factory_is_added(
    core: tuple[Bus, StaticResolver],
) -> None:
    bus, static = core
    # Before the factory exists, a lookup that may give up says "nothing".
    value, _ = await exec_one_off(
        bus, LoadConfigConstructorByID(WidgetConfig.CONFIG_ID), return_if_idle=True
    )
    assert value is None
    ctor_waiter = asyncio.create_task(
        exec_one_off(bus, LoadConfigConstructorByID(WidgetConfig.CONFIG_ID))
    )
    factory_waiter = asyncio.create_task(exec_one_off(bus, LoadFactoryByConfig(WidgetConfig())))
    await settle(20)
    assert not ctor_waiter.done()
    assert not factory_waiter.done()

    factory = WidgetFactory()
    static.add_factory(factory)
    (ctor, ctor_ref), (found, found_ref) = await asyncio.wait_for(
        asyncio.gather(ctor_waiter, factory_waiter), 5
    )
    assert ctor is not None
    assert isinstance(ctor.value, ConfigConstructor)
    assert isinstance(ctor.value.construct(), WidgetConfig)
    assert found is not None
    assert found.value is factory
    ctor_ref.release()
    found_ref.release()


async def test_factory_lookup_value_is_stable(core: tuple[Bus, StaticResolver]) -> None:
    # LoadFactoryByConfig allows one value: reaching it cancels the resolver, which
    # must not take its value back (that restarted it in a busy loop).
    bus, static = core
    static.add_factory(WidgetFactory())
    rec = Recorder()
    inst, ref = bus.add_directive(LoadFactoryByConfig(WidgetConfig()), rec)
    await asyncio.sleep(0.05)
    assert len(rec.added) == 1
    assert rec.removed == []
    assert inst.running_resolvers == 0
    ref.release()


# -- remove, replace, add another version -------------------------------------------------------


async def test_removed_factory_withdraws_its_answer_and_a_new_version_serves(
    core: tuple[Bus, StaticResolver],
) -> None:
    bus, static = core
    v1 = WidgetFactory("0.0.1")
    static.add_factory(v1)
    rec = Recorder()
    inst, ref = bus.add_directive(LoadControllerWithConfig(WidgetConfig()), rec)
    await eventually(lambda: bool(v1.built) and running(rec) == v1.built)

    assert static.remove_factory(WidgetConfig.CONFIG_ID) is v1
    await eventually(lambda: v1.built[0].closed)
    assert rec.values == []
    assert inst.get_values() == []
    assert exec_versions(bus) == []

    v2 = WidgetFactory("0.0.2")
    static.add_factory(v2)
    await eventually(lambda: bool(v2.built) and running(rec) == v2.built)
    assert len(inst.get_values()) == 1
    assert exec_versions(bus) == ["0.0.2"]
    assert v1.log == ["execute 0.0.1", "close 0.0.1"]
    assert v2.log == ["execute 0.0.2"]
    ref.release()


async def test_higher_version_added_in_place_replaces_the_running_controller(
    core: tuple[Bus, StaticResolver],
) -> None:
    bus, static = core
    v1 = WidgetFactory("0.0.1")
    static.add_factory(v1)
    rec = Recorder()
    inst, ref = bus.add_directive(LoadControllerWithConfig(WidgetConfig()), rec)
    await eventually(lambda: bool(v1.built) and running(rec) == v1.built)

    v2 = WidgetFactory("0.1.0")
    assert static.add_factory(v2)
    await eventually(lambda: bool(v2.built) and running(rec) == v2.built and v1.built[0].closed)
    await settle(20)
    assert running(rec) == v2.built
    assert len(inst.get_values()) == 1
    assert exec_versions(bus) == ["0.1.0"]
    assert v1.log == ["execute 0.0.1", "close 0.0.1"]
    ref.release()


async def test_an_ignored_add_and_other_config_ids_disturb_nothing(
    core: tuple[Bus, StaticResolver],
) -> None:
    bus, static = core
    v1 = WidgetFactory("0.0.2")
    static.add_factory(v1)
    rec = Recorder()
    _inst, ref = bus.add_directive(LoadControllerWithConfig(WidgetConfig()), rec)
    await eventually(lambda: bool(v1.built) and running(rec) == v1.built)

    assert not static.add_factory(WidgetFactory("0.0.1"))  # older: kept out, no change
    assert not static.add_factory(WidgetFactory("0.0.2"))  # equal: kept out, no change
    other = OtherFactory()
    static.add_factory(other)
    static.remove_factory(OtherConfig.CONFIG_ID)
    static.remove_factory("never/registered")
    await settle(20)
    assert rec.removed == []
    assert v1.log == ["execute 0.0.2"]
    ref.release()


async def test_withdrawn_newer_factory_elsewhere_falls_back_to_this_one(
    core: tuple[Bus, StaticResolver],
) -> None:
    # A plugin's newer factory supersedes the static one; when the plugin's factory
    # goes, the static one serves again (it used to stay superseded for good).
    bus, static = core
    plugin = StaticResolver()
    bus.run_controller(ResolverController(bus, plugin))
    v1 = WidgetFactory("0.0.1")
    static.add_factory(v1)
    rec = Recorder()
    inst, ref = bus.add_directive(LoadControllerWithConfig(WidgetConfig()), rec)
    await eventually(lambda: bool(v1.built) and running(rec) == v1.built)

    v2 = WidgetFactory("0.0.2")
    plugin.add_factory(v2)
    await eventually(lambda: bool(v2.built) and running(rec) == v2.built)
    # Reported once: the static resolver only watches the newer controller.
    assert len(inst.get_values()) == 1
    assert exec_versions(bus) == ["0.0.2"]

    plugin.remove_factory(WidgetConfig.CONFIG_ID)
    await eventually(lambda: len(v1.built) == 2 and running(rec) == v1.built[1:])
    assert v2.built[0].closed
    assert exec_versions(bus) == ["0.0.1"]
    # An equal version elsewhere joins the running controller instead of a second one.
    same = WidgetFactory("0.0.1")
    plugin.add_factory(same)
    await settle(20)
    assert same.built == []
    assert running(rec) == v1.built[1:]
    # ... and when the owner of the running controller withdraws, the other serves.
    static.remove_factory(WidgetConfig.CONFIG_ID)
    await eventually(lambda: bool(same.built) and running(rec) == same.built)
    assert all(w.closed for w in v1.built)
    ref.release()


class OtherConfig(Config):
    CONFIG_ID: ClassVar[str] = "test/other/1"


class OtherFactory(WidgetFactory):
    def config_id(self) -> str:
        return OtherConfig.CONFIG_ID

    def controller_id(self) -> str:
        return "test/other/1"

    def construct_config(self) -> Config:
        return OtherConfig()


async def test_factory_added_from_another_thread_is_served(
    core: tuple[Bus, StaticResolver],
) -> None:
    bus, static = core
    waiter = asyncio.create_task(
        wait_exec_controller_running(bus, LoadControllerWithConfig(WidgetConfig()))
    )
    await settle(10)
    factory = WidgetFactory()
    await asyncio.to_thread(static.add_factory, factory)
    ctrl, _inst, ref = await asyncio.wait_for(waiter, 5)
    assert ctrl is factory.built[0]
    ref.release()


async def test_a_resolver_controller_off_the_bus_follows_no_changes(
    core: tuple[Bus, StaticResolver],
) -> None:
    bus, _ = core
    extra = StaticResolver()
    task = bus.run_controller(ResolverController(bus, extra))
    await settle()
    rec = Recorder()
    _inst, ref = bus.add_directive(LoadControllerWithConfig(WidgetConfig()), rec)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    factory = WidgetFactory()
    extra.add_factory(factory)
    await settle(20)
    assert factory.built == []
    assert rec.added == []
    ref.release()


# -- Bus.reoffer ----------------------------------------------------------------------------------


async def test_reoffer_replaces_one_handlers_answers_after_their_cleanup(bus: Bus) -> None:
    events: list[str] = []
    idle_fired: list[bool] = []
    generation = [0]

    def make(_ask: Ask) -> Sequence[Resolver]:
        gen = generation[0]

        async def hold(handler: ResolverHandler) -> None:
            events.append(f"start {gen}")
            handler.add_value(f"answer {gen}")
            try:
                await asyncio.Event().wait()
            finally:
                # Cleanup that takes a few loop rounds (e.g. releasing a reference).
                await asyncio.sleep(0)
                # A replaced run can no longer add values (no stale duplicates).
                assert handler.add_value(f"late {gen}") is None
                await asyncio.sleep(0)
                events.append(f"cleaned {gen}")

        return [FnResolver(hold)]

    ctrl = Answering(make)
    other = Answering(lambda _a: [FnResolver(adds("other", hold=True))], name="test/other")
    bus.add_handler(ctrl)
    bus.add_handler(other)
    rec = Recorder()
    inst, ref = bus.add_directive(Ask("k"), rec)
    await settle()
    assert events == ["start 0"]

    generation[0] = 1
    tasks = bus.reoffer(ctrl)
    inst.add_idle_callback(lambda: idle_fired.append(True))
    assert len(tasks) == 1
    # The old answer is gone at once; the other handler's answer stays.
    assert sorted(rec.values) == ["other"]
    await settle(10)
    assert events == ["start 0", "cleaned 0", "start 1"]
    assert sorted(rec.values) == ["answer 1", "other"]
    assert idle_fired == []  # never idle between the old run and the new one
    assert ctrl.offered == ["k", "k"]
    assert other.offered == ["k"]
    ref.release()


async def test_reoffer_twice_before_the_old_run_ends_starts_only_the_last(bus: Bus) -> None:
    started: list[int] = []
    generation = [0]

    def make(_ask: Ask) -> Sequence[Resolver]:
        gen = generation[0]

        async def hold(handler: ResolverHandler) -> None:
            started.append(gen)
            handler.add_value(gen)
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.sleep(0)

        return [FnResolver(hold)]

    ctrl = Answering(make)
    bus.add_handler(ctrl)
    rec = Recorder()
    inst, ref = bus.add_directive(Ask("k"), rec)
    await settle()
    generation[0] = 1
    bus.reoffer(ctrl)
    generation[0] = 2
    bus.reoffer(ctrl)
    assert started == [0]
    await settle(10)
    assert started == [0, 2]
    assert rec.values == [2]
    assert [v.value for v in inst.get_values()] == [2]
    ref.release()


async def test_reoffer_matches_and_ignores_handlers_not_on_the_bus(bus: Bus) -> None:
    ctrl = Answering(lambda a: [FnResolver(adds(a.key))])
    assert bus.reoffer(ctrl) == []  # not on the bus: nothing offered
    assert ctrl.offered == []
    bus.add_handler(ctrl)
    a, ref_a = bus.add_directive(Ask("a"))
    b, ref_b = bus.add_directive(Ask("b"))
    await settle()
    bus.reoffer(ctrl, lambda inst: inst is b)
    await settle()
    assert ctrl.offered == ["a", "b", "b"]
    assert [v.value_id for v in a.get_values()] == [1]
    assert [(v.value_id, v.value) for v in b.get_values()] == [(2, "b")]
    ref_a.release()
    ref_b.release()
