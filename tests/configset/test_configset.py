"""Config sets: file format, marshalling, parse errors and apply semantics.

Semantics: docs/bus.md#config-sets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controllerbus.bus import (
    AttachedValue,
    BackoffPolicy,
    Bus,
    CallbackHandler,
    Config,
    DirectiveInstance,
    LoadControllerWithConfig,
    StaticResolver,
    wait_exec_controller_running,
)
from controllerbus.configset import (
    ApplyConfigSet,
    ConfigSetConfig,
    ConfigSetController,
    ConfigSetError,
    ConfigSetState,
    ControllerConfig,
    config_set_to_json,
    config_set_to_yaml,
    parse_document,
    unmarshal_config_set,
)
from controllerbus.core import new_core_bus
from controllerbus.errors import ConfigError
from controllerbus.example.boilerplate import BoilerplateConfig, new_factory
from tests.bus.doubles import settle
from tests.bus.test_loadpath import WidgetFactory
from tests.helpers import eventually

EXAMPLE = """\
boilerplate-example-0:
  config:
    exampleField: "test 123"
  id: controllerbus/example/boilerplate/1
  revision: 1
"""


@pytest.fixture
async def core() -> AsyncIterator[tuple[Bus, StaticResolver]]:
    bus, static = new_core_bus([new_factory], backoff=BackoffPolicy(initial_interval=0.01))
    async with bus:
        yield bus, static
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


# -- scenario 9: format ------------------------------------------------------------------------


def test_json_marshal_matches_go() -> None:
    config_set = {"test": ControllerConfig(1, ConfigSetConfig())}
    assert (
        config_set_to_json(config_set)
        == '{"test":{"revision":1,"id":"controllerbus/configset/1","config":{}}}'
    )
    assert config_set_to_json({"z": ControllerConfig(0, ConfigSetConfig())}) == (
        '{"z":{"id":"controllerbus/configset/1","config":{}}}'
    )


def test_yaml_marshal_sorts_keys() -> None:
    config_set = {"k": ControllerConfig(2, BoilerplateConfig(example_field="hi"))}
    assert config_set_to_yaml(config_set) == (
        "k:\n  config:\n    exampleField: hi\n  id: controllerbus/example/boilerplate/1\n"
        "  revision: 2\n"
    )


async def test_yaml_parses_example_field_and_round_trips(core: tuple[Bus, StaticResolver]) -> None:
    bus, _ = core
    target: dict[str, ControllerConfig] = {}
    added = await unmarshal_config_set(bus, EXAMPLE, target)
    assert added == ["boilerplate-example-0"]
    conf = target["boilerplate-example-0"]
    assert conf.revision == 1
    assert isinstance(conf.config, BoilerplateConfig)
    assert conf.config.example_field == "test 123"
    again: dict[str, ControllerConfig] = {}
    await unmarshal_config_set(bus, config_set_to_yaml(target), again)
    assert again == target
    from_json: dict[str, ControllerConfig] = {}
    await unmarshal_config_set(bus, config_set_to_json(target), from_json, fmt="json")
    assert from_json == target


async def test_unmarshal_keeps_existing_keys_unless_overwrite(
    core: tuple[Bus, StaticResolver],
) -> None:
    bus, _ = core
    keep = ControllerConfig(7, BoilerplateConfig(example_field="mine"))
    target = {"boilerplate-example-0": keep}
    assert await unmarshal_config_set(bus, EXAMPLE, target) == []
    assert target["boilerplate-example-0"] is keep
    assert await unmarshal_config_set(bus, EXAMPLE, target, overwrite=True) == [
        "boilerplate-example-0"
    ]
    assert target["boilerplate-example-0"].revision == 1


@given(
    st.dictionaries(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1),
        st.tuples(st.integers(0, 2**63), st.text(min_size=1)),
        max_size=5,
    )
)
def test_parse_document_round_trips_any_yaml(entries: dict[str, tuple[int, str]]) -> None:
    config_set = {
        key: ControllerConfig(rev, BoilerplateConfig(example_field=field))
        for key, (rev, field) in entries.items()
    }
    raw = parse_document(config_set_to_yaml(config_set))
    assert {k: (v.id, v.revision, dict(v.config)) for k, v in raw.items()} == {
        k: (BoilerplateConfig.CONFIG_ID, rev, {"exampleField": field})
        for k, (rev, field) in entries.items()
    }


# -- errors name the key and the field -------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("a: [1, 2", "line 1: malformed YAML"),
        ("- just\n- a list\n", "top level must be an object"),
        ("k: 3\n", "k: entry must be an object"),
        ("k:\n  config: {}\n", "k.id: config id was not specified"),
        ("k:\n  id: x/1\n", "k.config: config was not specified"),
        ("k:\n  id: x/1\n  config: [1]\n", "k.config: must be an object, got list"),
        (
            "k:\n  id: x/1\n  config: {}\n  rev: 2\n",
            "k.rev: unknown field (did you mean 'revision'?)",
        ),
        ("k:\n  id: x/1\n  config: {}\n  revision: -1\n", "k.revision: must be a non-negative"),
        ("k:\n  id: x/1\n  config: {}\n  revision: 'two'\n", "k.revision: must be a non-negative"),
        ("k:\n  id: 5\n  config: {}\n", "k.id: must be a string, got int"),
    ],
)
def test_envelope_errors(document: str, expected: str) -> None:
    with pytest.raises(ConfigSetError) as info:
        parse_document(document, source="daemon.yaml")
    assert expected in str(info.value)
    assert str(info.value).startswith("daemon.yaml: invalid config set:")
    assert isinstance(info.value, ConfigError)


def test_malformed_json_names_the_line() -> None:
    with pytest.raises(ConfigSetError, match=r"line 2: malformed JSON"):
        parse_document('{"a":\n}', fmt="json")


def test_all_envelope_issues_are_reported_at_once() -> None:
    with pytest.raises(ConfigSetError) as info:
        parse_document("a:\n  config: {}\nb:\n  id: x/1\n")
    assert info.value.issues == (
        "a.id: config id was not specified",
        "b.config: config was not specified",
    )


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "  id: no/such/1\n  config: {}\n",
            "k.id: unknown config id 'no/such/1': no factory on the bus provides it",
        ),
        (
            "  id: controllerbus/example/boilerplate/1\n  config: {exampleField: [1]}\n",
            "k.config.exampleField: Input should be a valid string",
        ),
        (
            "  id: controllerbus/example/boilerplate/1\n  config: {exampleFeld: x}\n",
            "k.config.exampleFeld: Extra inputs are not permitted",
        ),
        (
            "  id: controllerbus/example/boilerplate/1\n  config: {}\n",
            "k.config: example field must be set",
        ),
    ],
)
async def test_typed_errors_name_key_and_field(
    core: tuple[Bus, StaticResolver], entry: str, expected: str
) -> None:
    bus, _ = core
    target: dict[str, ControllerConfig] = {}
    with pytest.raises(ConfigSetError) as info:
        await unmarshal_config_set(bus, "k:\n" + entry, target)
    assert expected in str(info.value)
    assert target == {}


# -- scenario 10: apply semantics ----------------------------------------------------------------


class CountedConfig(Config):
    CONFIG_ID: ClassVar[str] = "test/counted/1"
    label: str = ""


class States:
    """Collects ConfigSetState values of an ApplyConfigSet directive per key."""

    def __init__(self) -> None:
        self.by_key: dict[str, list[ConfigSetState]] = {}

    def handler(self) -> CallbackHandler:
        def added(_inst: DirectiveInstance, av: AttachedValue) -> None:
            if isinstance(av.value, ConfigSetState):
                self.by_key.setdefault(av.value.id, []).append(av.value)

        return CallbackHandler(added)

    def running(self, key: str) -> ConfigSetState | None:
        states = [s for s in self.by_key.get(key, []) if s.controller is not None]
        return states[-1] if states else None


async def _configset_controller(bus: Bus) -> ConfigSetController:
    ctrl, _inst, _ref = await wait_exec_controller_running(
        bus, LoadControllerWithConfig(ConfigSetConfig())
    )
    assert isinstance(ctrl, ConfigSetController)
    return ctrl


async def test_apply_runs_each_key_and_stops_on_release(core: tuple[Bus, StaticResolver]) -> None:
    bus, _ = core
    await _configset_controller(bus)
    config_set = {
        "a": ControllerConfig(1, BoilerplateConfig(example_field="one")),
        "b": ControllerConfig(1, BoilerplateConfig(example_field="two")),
        "": ControllerConfig(1, BoilerplateConfig(example_field="skipped")),
    }
    states = States()
    _inst, ref = bus.add_directive(ApplyConfigSet(config_set), states.handler())
    await eventually(lambda: states.running("a") and states.running("b"))
    assert "" not in states.by_key
    running = {c.get_controller_info().id for c in bus.get_controllers()}
    assert "controllerbus/example/boilerplate/1" in running
    ref.release()
    await settle(20)
    ids = [c.get_controller_info().id for c in bus.get_controllers()]
    assert "controllerbus/example/boilerplate/1" not in ids


async def test_revision_rules_and_key_gc(core: tuple[Bus, StaticResolver]) -> None:
    bus, static = core

    class CountedFactory(WidgetFactory):
        def config_id(self) -> str:
            return CountedConfig.CONFIG_ID

        def construct_config(self) -> Config:
            return CountedConfig()

    factory = CountedFactory()
    static.add_factory(factory)
    ctrl = await _configset_controller(bus)
    states = States()
    r1 = ctrl.push_controller_config("k", ControllerConfig(1, CountedConfig(label="v1")), None)
    r_listen = ctrl.push_controller_config(
        "k",
        ControllerConfig(1, CountedConfig(label="v1")),
        states.by_key.setdefault("k", []).append,
    )
    await eventually(lambda: len(factory.built) == 1)
    # Same revision, different config: ignored.
    r2 = ctrl.push_controller_config("k", ControllerConfig(1, CountedConfig(label="other")))
    await settle(20)
    assert len(factory.built) == 1
    assert ctrl.get_keys()["k"].config == CountedConfig(label="v1")
    # Lower revision: ignored too.
    ctrl.push_controller_config("k", ControllerConfig(0, CountedConfig(label="old"))).release()
    await settle(20)
    assert len(factory.built) == 1
    # Strictly higher revision: restarts with the new config.
    r3 = ctrl.push_controller_config("k", ControllerConfig(2, CountedConfig(label="v2")))
    await eventually(lambda: len(factory.built) == 2)
    await settle(20)
    assert factory.built[0].closed
    assert ctrl.get_keys()["k"] == ControllerConfig(2, CountedConfig(label="v2"))
    last = states.by_key["k"][-1]
    assert last.controller is factory.built[1]
    assert last.controller_config.revision == 2
    # Key GC: the controller stops only when every reference is released.
    for ref in (r1, r2, r_listen):
        ref.release()
    await settle(20)
    assert "k" in ctrl.get_keys()
    assert not factory.built[1].closed
    r3.release()
    await settle(20)
    assert ctrl.get_keys() == {}
    assert factory.built[1].closed
