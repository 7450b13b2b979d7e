"""Directives and values as validated data: which objects cross a process boundary.

An object can cross if its class is a pydantic model or a dataclass: it is sent as
:class:`~controllerbus.ipc.messages.WireObject` (``module:qualname`` + JSON fields)
and rebuilt by the receiver with pydantic validation against the receiver's own
copy of the class. Nothing is pickled, so the worst a peer can send is data that
fails validation.

Resolving a type name is the trust decision. The host passes ``allow_import=False``:
a type is looked up only among modules already imported in the host, so a child
cannot make the host import anything. A child (which trusts its host) may import.
A value whose type the receiver does not know arrives as :class:`ForeignValue`
(type name + data) rather than being dropped.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, JsonValue, TypeAdapter

from controllerbus.ipc.messages import WireObject

__all__ = ["Codec", "ForeignValue", "NotWireable", "type_name"]


class NotWireable(TypeError):
    """The object cannot travel (not a pydantic model or dataclass, or unknown type)."""


@dataclass(frozen=True, slots=True)
class ForeignValue:
    """A value whose class the receiving process does not have: its type and data."""

    type: str
    data: JsonValue


def type_name(cls: type) -> str:
    """``module:qualname`` of ``cls``."""
    return f"{cls.__module__}:{cls.__qualname__}"


class Codec:
    """Encodes objects to :class:`WireObject` and back, caching one adapter per class."""

    def __init__(self, *, allow_import: bool) -> None:
        self.allow_import = allow_import
        self._adapters: dict[type, TypeAdapter[Any] | None] = {}
        self._types: dict[str, type | None] = {}

    def _adapter(self, cls: type) -> TypeAdapter[Any] | None:
        try:
            return self._adapters[cls]
        except KeyError:
            pass
        adapter: TypeAdapter[Any] | None = None
        wire_shaped = issubclass(cls, BaseModel) or dataclasses.is_dataclass(cls)
        if wire_shaped and "<locals>" not in cls.__qualname__:
            try:
                adapter = TypeAdapter(cls)
            except Exception:  # an unsupported field type: not wireable
                adapter = None
        self._adapters[cls] = adapter
        return adapter

    def wireable(self, obj: object) -> bool:
        """Whether ``obj`` can be encoded."""
        return self._adapter(type(obj)) is not None

    def encode(self, obj: object) -> WireObject:
        """Encode ``obj``.

        Raises:
            NotWireable: ``obj`` is not a module-level pydantic model or dataclass.
        """
        if isinstance(obj, ForeignValue):
            return WireObject(type=obj.type, data=obj.data)
        adapter = self._adapter(type(obj))
        if adapter is None:
            raise NotWireable(
                f"{type_name(type(obj))} cannot cross a process boundary: make it a "
                "module-level pydantic model or dataclass"
            )
        if isinstance(obj, BaseModel):
            data = obj.model_dump(mode="json", by_alias=True)
        else:
            data = adapter.dump_python(obj, mode="json")
        return WireObject(type=type_name(type(obj)), data=data)

    def resolve_type(self, name: str) -> type | None:
        """The class named ``module:qualname``, or ``None`` if unknown here."""
        try:
            return self._types[name]
        except KeyError:
            pass
        module_name, _, qualname = name.partition(":")
        module = sys.modules.get(module_name)
        if module is None and self.allow_import:
            try:
                module = importlib.import_module(module_name)
            except Exception:
                module = None
        found: Any = module
        for part in qualname.split(".") if module is not None else ():
            found = getattr(found, part, None)
            if found is None:
                break
        cls = found if isinstance(found, type) and self._adapter(found) is not None else None
        if cls is not None:
            self._types[name] = cls
        return cls

    def decode(self, wire: WireObject) -> Any:
        """Rebuild the object (validated by its class).

        Raises:
            NotWireable: the type is unknown here.
            pydantic.ValidationError: the data does not fit the class.
        """
        cls = self.resolve_type(wire.type)
        if cls is None:
            raise NotWireable(f"unknown type {wire.type}")
        adapter = self._adapter(cls)
        assert adapter is not None
        return adapter.validate_python(wire.data)

    def decode_value(self, wire: WireObject) -> Any:
        """Like :meth:`decode`, but an unknown type becomes a :class:`ForeignValue`."""
        if self.resolve_type(wire.type) is None:
            return ForeignValue(wire.type, wire.data)
        return self.decode(wire)
