"""The codec: what may cross, and that a peer cannot make the host import anything."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest
from pydantic import ValidationError

from controllerbus.example.boilerplate import Boilerplate, BoilerplateResult
from controllerbus.ipc.codec import Codec, ForeignValue, NotWireable
from controllerbus.ipc.messages import WireObject


def test_dataclasses_and_models_round_trip() -> None:
    codec = Codec(allow_import=False)
    wire = codec.encode(Boilerplate("hello world"))
    assert wire.type == "controllerbus.example.boilerplate:Boilerplate"
    decoded = codec.decode(wire)
    assert isinstance(decoded, Boilerplate)
    assert decoded.message_text == "hello world"
    assert codec.decode(codec.encode(BoilerplateResult(55))) == BoilerplateResult(55)


def test_data_is_validated_by_the_receivers_class() -> None:
    codec = Codec(allow_import=False)
    bad = WireObject(
        type="controllerbus.example.boilerplate:BoilerplateResult", data={"printed_len": "x"}
    )
    with pytest.raises(ValidationError):
        codec.decode(bad)


def test_a_type_name_never_imports_a_module_on_the_host() -> None:
    name = "ipc_never_imported"  # importable: tests/ipc/plugins is on sys.path
    sys.modules.pop(name, None)
    wire = WireObject(type=f"{name}:Payload", data={"n": 1})
    host = Codec(allow_import=False)
    with pytest.raises(NotWireable, match="unknown type"):
        host.decode(wire)
    assert host.decode_value(wire) == ForeignValue(f"{name}:Payload", {"n": 1})
    assert name not in sys.modules
    child = Codec(allow_import=True)  # a child trusts its host and imports
    assert type(child.decode(wire)).__module__ == name
    sys.modules.pop(name, None)


def test_only_models_and_dataclasses_are_resolved() -> None:
    codec = Codec(allow_import=True)
    # A module-level function or a non-dataclass class is not a wire type.
    for name in ("os:system", "subprocess:Popen", "builtins:object"):
        assert codec.resolve_type(name) is None


def test_local_and_arbitrary_objects_are_not_wireable() -> None:
    @dataclass
    class Local:
        x: int

    codec = Codec(allow_import=False)
    assert not codec.wireable(Local(1))
    assert not codec.wireable(object())
    with pytest.raises(NotWireable, match="module-level pydantic model or dataclass"):
        codec.encode(object())
