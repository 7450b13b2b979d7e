"""The loader path: resolver controllers, ExecController, the loader's retry loop.

Semantics: docs/bus.md#the-loader-path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from controllerbus.bus import (
    AttachedValue,
    Backoff,
    BackoffExhausted,
    BackoffPolicy,
    Bus,
    CallbackHandler,
    ConfigConstructor,
    ControllerFailed,
    DirectiveInstance,
    ExecController,
    ExecControllerValue,
    LoadConfigConstructorByID,
    LoadControllerWithConfig,
    LoadFactoryByConfig,
    ResolverController,
    StaticResolver,
    exec_collect_values,
    exec_one_off,
    wait_exec_controller_running,
)
from controllerbus.core import new_core_bus
from controllerbus.errors import DirectiveError
from controllerbus.example.boilerplate import (
    Boilerplate,
    BoilerplateConfig,
    BoilerplateResult,
    new_factory,
)
from tests.bus.doubles import Recorder, WidgetConfig, settle
from tests.bus.doubles import WidgetFactory as WidgetFactory  # re-exported for tests/configset
from tests.helpers import eventually

FAST = BackoffPolicy(initial_interval=0.01, max_interval=0.02, max_elapsed=0.2)


@pytest.fixture
async def core() -> AsyncIterator[tuple[Bus, StaticResolver]]:
    bus, static = new_core_bus([new_factory], backoff=FAST)
    async with bus:
        yield bus, static
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


# -- scenario 1: boilerplate end to end ----------------------------------------------------


async def test_boilerplate_end_to_end(
    core: tuple[Bus, StaticResolver], caplog: pytest.LogCaptureFixture
) -> None:
    bus, _ = core
    with caplog.at_level(logging.INFO):
        ctrl, _inst, _ref = await wait_exec_controller_running(
            bus, LoadControllerWithConfig(BoilerplateConfig(example_field="testing"))
        )
        assert ctrl.get_controller_info().id == "controllerbus/example/boilerplate/1"
        value, _ref2 = await exec_one_off(bus, Boilerplate("hello world"))
    assert value is not None
    assert value.value == BoilerplateResult(printed_len=55)
    assert "hello from boilerplate controller 1: testing" in caplog.text
    assert "logging message from boilerplate directive: hello world" in caplog.text


async def test_boilerplate_counts_utf8_bytes(core: tuple[Bus, StaticResolver]) -> None:
    bus, _ = core
    await wait_exec_controller_running(
        bus, LoadControllerWithConfig(BoilerplateConfig(example_field="x"))
    )
    value, _ = await exec_one_off(bus, Boilerplate("héllo"))
    assert value is not None
    assert value.value.printed_len == 44 + len("héllo".encode())


def test_boilerplate_validation_messages() -> None:
    with pytest.raises(ValueError, match="message text must be specified"):
        Boilerplate("").validate()
    with pytest.raises(ValueError, match="example field must be set"):
        BoilerplateConfig().validate_config()
    opts = Boilerplate("m").value_options()
    assert (opts.max_value_count, opts.max_value_hard_cap, opts.unref_dispose_dur) == (1, True, 1.0)
    assert Boilerplate("a").is_equivalent(Boilerplate("a"))
    assert not Boilerplate("a").is_equivalent(Boilerplate("b"))
    assert not Boilerplate("a").superceeds(Boilerplate("a"))


def test_config_json_form_is_camel_case_and_accepts_snake_case() -> None:
    conf = BoilerplateConfig.model_validate({"exampleField": "test 123"})
    assert conf.example_field == "test 123"
    assert BoilerplateConfig.model_validate({"example_field": "x"}).example_field == "x"
    assert conf.to_json_dict() == {"exampleField": "test 123"}
    assert conf.equals_config(BoilerplateConfig(example_field="test 123"))
    assert not conf.equals_config(BoilerplateConfig(example_field="other"))


async def test_invalid_config_yields_an_error_value(core: tuple[Bus, StaticResolver]) -> None:
    bus, _ = core
    with pytest.raises(ControllerFailed, match="example field must be set"):
        await wait_exec_controller_running(bus, LoadControllerWithConfig(BoilerplateConfig()))


# -- factories under test ------------------------------------------------------------------


# -- scenario 4: supersede -------------------------------------------------------------------


async def test_higher_factory_version_supersedes_running_controller(
    core: tuple[Bus, StaticResolver],
) -> None:
    bus, static = core
    old = WidgetFactory("0.0.1")
    static.add_factory(old)
    ctrl1, _, ref1 = await wait_exec_controller_running(
        bus, LoadControllerWithConfig(WidgetConfig())
    )
    assert ctrl1.get_controller_info().version == "0.0.1"
    # A second resolver (a plugin, say) offers a newer factory for the same config:
    # when it attaches it answers the existing directive, and its ExecController
    # supersedes the running one.
    newer = WidgetFactory("0.0.2")
    bus.run_controller(ResolverController(bus, StaticResolver([newer])))
    await settle(20)
    execs = [i.get_directive() for i in bus.get_directives()]
    versions = [d.factory.version() for d in execs if isinstance(d, ExecController)]
    assert versions == ["0.0.2"]
    assert old.built[0].closed
    assert old.log == ["execute 0.0.1", "close 0.0.1"]
    assert newer.log == ["execute 0.0.2"]
    ref1.release()


async def test_exec_controller_supersede_rule() -> None:
    cfg = WidgetConfig()
    v1, v2 = (
        ExecController(WidgetFactory("0.0.1"), cfg),
        ExecController(WidgetFactory("0.0.2"), cfg),
    )
    assert v2.is_equivalent(v1)
    assert v2.superceeds(v1)
    assert not v1.superceeds(v2)
    assert not v1.superceeds(ExecController(WidgetFactory("0.0.1"), cfg))
    assert not v1.is_equivalent(ExecController(WidgetFactory(), WidgetConfig(name="x")))


# -- the loader's retry loop (the Go gap, fixed) -------------------------------------------


async def test_failed_controller_is_retried_with_backoff_then_runs(
    core: tuple[Bus, StaticResolver],
) -> None:
    bus, static = core
    factory = WidgetFactory(fail_times=2)
    static.add_factory(factory)
    rec = Recorder()
    _inst, ref = bus.add_directive(LoadControllerWithConfig(WidgetConfig()), rec)
    with contextlib.suppress(AssertionError):  # the assertions below say what is wrong
        await eventually(
            lambda: any(
                isinstance(v, ExecControllerValue) and v.controller and not v.error
                for v in rec.values
            ),
            within=1.0,
            step=0.01,
        )
    errors = [v for v in (a.value for a in rec.added) if v.error is not None]
    assert len(errors) == 2
    assert all(e.next_retry_timestamp is not None for e in errors)
    assert "widget failed" in str(errors[0].error)
    assert factory.log == [
        "execute 0.0.1",
        "close 0.0.1",
        "execute 0.0.1",
        "close 0.0.1",
        "execute 0.0.1",
    ]
    (running,) = rec.values
    assert running.controller is factory.built[-1]
    ref.release()
    await settle(10)
    assert factory.built[-1].closed


async def test_retry_gives_up_when_backoff_is_exhausted(
    core: tuple[Bus, StaticResolver],
) -> None:
    bus, static = core
    factory = WidgetFactory(fail_times=10_000)
    static.add_factory(factory)
    gave_up: asyncio.Future[ExecControllerValue] = asyncio.get_running_loop().create_future()

    def added(_inst: DirectiveInstance, av: AttachedValue) -> None:
        if isinstance(av.value.error, BackoffExhausted) and not gave_up.done():
            gave_up.set_result(av.value)

    _inst, ref = bus.add_directive(LoadControllerWithConfig(WidgetConfig()), CallbackHandler(added))
    async with asyncio.timeout(5):
        final = await gave_up
    assert str(final.error).startswith("backoff timeout exceeded: widget failed")
    # Every constructed controller was closed; the policy allows only a few tries.
    assert all(w.closed for w in factory.built)
    assert 3 <= len(factory.built) < 30
    ref.release()


async def test_construct_failure_is_an_error_value_not_retried(
    core: tuple[Bus, StaticResolver],
) -> None:
    bus, static = core
    factory = WidgetFactory(broken=True)
    static.add_factory(factory)
    with pytest.raises(ControllerFailed, match="construct controller test/widget/1: cannot build"):
        await wait_exec_controller_running(bus, LoadControllerWithConfig(WidgetConfig()))


def test_backoff_defaults_and_sequence() -> None:
    policy = BackoffPolicy()
    assert (policy.initial_interval, policy.multiplier, policy.max_interval) == (0.5, 2.0, 30.0)
    assert (policy.max_elapsed, policy.randomization_factor) == (60.0, 0.5)
    now = [0.0]
    # rand 0.5 = the midpoint: no jitter.
    backoff = Backoff(policy, clock=lambda: now[0], rand=lambda: 0.5)
    delays = []
    while (delay := backoff.next_delay()) is not None:
        delays.append(delay)
        now[0] += delay
    # The next one (30 s, capped) would pass 60 s elapsed: cenkalti stops there.
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    capped = Backoff(BackoffPolicy(max_elapsed=0), rand=lambda: 0.5)
    assert [capped.next_delay() for _ in range(8)][-2:] == [30.0, 30.0]
    jittered = Backoff(policy, clock=lambda: 0.0, rand=lambda: 0.0)
    assert jittered.next_delay() == 0.25


# -- helpers and the other directives -----------------------------------------------------------


async def test_exec_one_off_returns_none_when_idle_without_value(
    core: tuple[Bus, StaticResolver],
) -> None:
    bus, _ = core
    value, ref = await exec_one_off(
        bus, LoadConfigConstructorByID("no/such/id"), return_if_idle=True
    )
    assert value is None
    ref.release()  # already released; idempotent


async def test_config_constructor_and_factory_lookup(core: tuple[Bus, StaticResolver]) -> None:
    bus, _ = core
    value, ref = await exec_one_off(bus, LoadConfigConstructorByID(BoilerplateConfig.CONFIG_ID))
    assert value is not None
    assert isinstance(value.value, ConfigConstructor)
    assert isinstance(value.value.construct(), BoilerplateConfig)
    ref.release()
    factory_value, fref = await exec_one_off(
        bus, LoadFactoryByConfig(BoilerplateConfig(example_field="x"))
    )
    assert factory_value is not None
    assert factory_value.value.controller_id() == "controllerbus/example/boilerplate/1"
    fref.release()
    with pytest.raises(DirectiveError, match="config ID cannot be empty"):
        bus.add_directive(LoadConfigConstructorByID(""))


async def test_exec_collect_values_stops_when_idle(core: tuple[Bus, StaticResolver]) -> None:
    bus, _ = core
    values, ref = await exec_collect_values(
        bus, LoadConfigConstructorByID(BoilerplateConfig.CONFIG_ID)
    )
    assert [v.config_id for v in values] == [BoilerplateConfig.CONFIG_ID]
    ref.release()


async def test_static_resolver_keeps_equal_or_newer_factory() -> None:
    static = StaticResolver()
    first = WidgetFactory("0.0.2")
    static.add_factory(first)
    static.add_factory(WidgetFactory("0.0.1"))
    static.add_factory(WidgetFactory("0.0.2"))
    assert static.get_factories() == [first]
    newer = WidgetFactory("0.1.0")
    static.add_factory(newer)
    assert await static.get_factory_matching_config(WidgetConfig()) is newer
    assert await static.get_config_ctor_by_id("missing") is None


async def test_closing_resolver_controller_releases_exec_refs(
    core: tuple[Bus, StaticResolver],
) -> None:
    bus, _ = core
    factory = WidgetFactory("0.0.1")
    extra = ResolverController(bus, StaticResolver([factory]))
    bus.run_controller(extra)
    _ctrl, _inst, ref = await wait_exec_controller_running(
        bus, LoadControllerWithConfig(WidgetConfig())
    )
    extra.close()
    await settle(20)
    assert factory.built[0].closed
    ref.release()


async def test_directive_debug_vals_keep_config_id() -> None:
    class Sneaky(WidgetConfig):
        def debug_vals(self) -> dict[str, list[str]]:
            return {"config-id": ["spoofed"], "name": [self.name]}

    vals = LoadControllerWithConfig(Sneaky()).get_debug_vals()
    assert vals == {"config-id": ["test/widget/1"], "name": ["w"]}
