"""The messages between a host and a plugin child process (pydantic, JSON on the wire).

Every message is a pydantic model with a ``kind`` discriminator; a frame holds one
message as JSON. Nothing is pickled: directives, values and configs travel as
:class:`WireObject` (a type name plus JSON data) and are validated again by the
receiving side's own model (see :mod:`controllerbus.ipc.codec`).

Ids: the side that asks for something numbers it (``LoadController.id``,
``DirectiveAdd.id``) and the answers carry that number back, so host and child each
keep their own counter and the message kind says whose number it is.

Conversation::

    child → host   hello           (protocol, pid; a warm spare: what it imported)
    host  → child  assign          (a warm spare only: the plugin and its paths)
    child → host   ready | error   (the plugin's factories, or why it cannot load)
    host  → child  heartbeat       child answers heartbeat(ack=True)
    host  → child  load-controller child answers controller-state (running | error)
    either         directive-add   peer answers value-add / value-remove /
                                   directive-idle / directive-dispose
    either         release         (a directive or controller the sender asked for)
    either         error           (fatal: the sender closes the connection)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

__all__ = [
    "PROTOCOL_VERSION",
    "Assign",
    "ControllerState",
    "DirectiveAdd",
    "DirectiveDispose",
    "DirectiveIdle",
    "Error",
    "FactoryInfo",
    "Heartbeat",
    "Hello",
    "LoadController",
    "Message",
    "Ready",
    "Release",
    "ValueAdd",
    "ValueRemove",
    "WireObject",
    "decode_message",
    "encode_message",
]

PROTOCOL_VERSION = 1

_Id = Annotated[int, Field(ge=1, lt=1 << 63)]
_TypeName = Annotated[
    str,
    Field(
        min_length=3,
        max_length=300,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$",
    ),
]


class _Msg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WireObject(_Msg):
    """A directive, value or config as data: ``module:qualname`` and its JSON fields."""

    type: _TypeName
    data: JsonValue


class FactoryInfo(_Msg):
    """One factory of the plugin, as the host's proxy factory shows it."""

    config_id: Annotated[str, Field(min_length=1, max_length=300)]
    controller_id: Annotated[str, Field(min_length=1, max_length=300)]
    version: Annotated[str, Field(min_length=1, max_length=100)]


class Hello(_Msg):
    kind: Literal["hello"] = "hello"
    protocol: int
    pid: int
    preloaded: list[Annotated[str, Field(max_length=300)]] = Field(
        default_factory=list, max_length=10_000
    )
    """A warm spare: the top-level packages it has imported (not the stdlib)."""


class Assign(_Msg):
    """Host → warm spare: serve this plugin (the spare imports nothing of it before)."""

    kind: Literal["assign"] = "assign"
    entry_point: Annotated[str, Field(min_length=3, max_length=300)]
    site_dirs: list[Annotated[str, Field(max_length=4096)]] = []
    """Site directories to put first on ``sys.path``, their ``.pth`` files processed."""
    skip_pth: list[Annotated[str, Field(max_length=300)]] = []
    """``.pth`` files of ``site_dirs`` not to process (the spare has their effect)."""
    paths: list[Annotated[str, Field(max_length=4096)]] = []
    """Plain ``sys.path`` entries, put before ``site_dirs``."""
    max_frame: Annotated[int, Field(ge=1024)]


class Ready(_Msg):
    kind: Literal["ready"] = "ready"
    binary_id: Annotated[str, Field(min_length=1, max_length=300)]
    binary_version: Annotated[str, Field(max_length=300)]
    factories: list[FactoryInfo]


class Heartbeat(_Msg):
    kind: Literal["heartbeat"] = "heartbeat"
    seq: int
    ack: bool = False


class LoadController(_Msg):
    kind: Literal["load-controller"] = "load-controller"
    id: _Id
    config_id: Annotated[str, Field(min_length=1, max_length=300)]
    config: dict[str, JsonValue]


class ControllerState(_Msg):
    kind: Literal["controller-state"] = "controller-state"
    id: _Id
    state: Literal["running", "error"]
    error: str | None = None


class DirectiveAdd(_Msg):
    kind: Literal["directive-add"] = "directive-add"
    id: _Id
    directive: WireObject


class DirectiveIdle(_Msg):
    kind: Literal["directive-idle"] = "directive-idle"
    id: _Id


class DirectiveDispose(_Msg):
    kind: Literal["directive-dispose"] = "directive-dispose"
    id: _Id
    reason: str | None = None


class ValueAdd(_Msg):
    kind: Literal["value-add"] = "value-add"
    id: _Id
    value_id: _Id
    value: WireObject


class ValueRemove(_Msg):
    kind: Literal["value-remove"] = "value-remove"
    id: _Id
    value_id: _Id


class Release(_Msg):
    kind: Literal["release"] = "release"
    id: _Id
    what: Literal["directive", "controller"]


class Error(_Msg):
    kind: Literal["error"] = "error"
    message: Annotated[str, Field(max_length=10_000)]


Message = Annotated[
    Hello
    | Assign
    | Ready
    | Heartbeat
    | LoadController
    | ControllerState
    | DirectiveAdd
    | DirectiveIdle
    | DirectiveDispose
    | ValueAdd
    | ValueRemove
    | Release
    | Error,
    Field(discriminator="kind"),
]

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Message)


def encode_message(message: Message) -> bytes:
    """The JSON bytes of ``message``."""
    return message.model_dump_json().encode()


def decode_message(payload: bytes) -> Message:
    """Parse and validate one message.

    Raises:
        pydantic.ValidationError: not JSON, unknown ``kind`` or invalid fields.
    """
    message: Message = _ADAPTER.validate_json(payload)
    return message
