"""Directives forwarded across a connection, both ways, with their values.

Host and child each run one :class:`Bridge` over their connection. It is symmetric:

* **asking**: a :class:`ForwardController` on the local bus is offered every
  directive; for each that can cross (see :mod:`controllerbus.ipc.codec`) it
  attaches a resolver that sends ``directive-add`` to the peer and adds the values
  the peer reports (``value-add`` / ``value-remove``) to the local instance. The
  resolver returns when the peer says the directive is idle; the peer's reference is
  released (``release``) when the local instance is disposed or the resolver is
  cancelled or detached.
* **serving**: a ``directive-add`` from the peer is added to the local bus with a
  reference handler that reports its values, idleness and disposal back.

Loops are cut in two places: a directive the peer asked for is never asked back of
that peer, and a value this bridge imported from the peer into an instance is never
reported back to that peer when the peer also asks for that instance.

The loader's own directives (``LoadControllerWithConfig``, ``ExecController``,
``LoadFactoryByConfig``, ``LoadConfigConstructorByID``) are never forwarded: the
host reaches a child's factories through proxy factories instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from controllerbus.bus.bus import Bus
from controllerbus.bus.directives import (
    ExecController,
    LoadConfigConstructorByID,
    LoadControllerWithConfig,
    LoadFactoryByConfig,
)
from controllerbus.bus.instance import directive_label
from controllerbus.bus.protocols import (
    AttachedValue,
    ControllerInfo,
    DirectiveInstance,
    Reference,
    Resolver,
    ResolverHandler,
)
from controllerbus.ipc.codec import Codec, NotWireable
from controllerbus.ipc.messages import (
    DirectiveAdd,
    DirectiveDispose,
    DirectiveIdle,
    Message,
    Release,
    ValueAdd,
    ValueRemove,
)
from controllerbus.ipc.transport import Connection, IPCError, ProtocolError

__all__ = ["Bridge", "ForwardController"]

logger = logging.getLogger(__name__)

_LOADER_DIRECTIVES = (
    LoadControllerWithConfig,
    ExecController,
    LoadFactoryByConfig,
    LoadConfigConstructorByID,
)


class _Asked:
    """A local instance this bridge asked the peer about (requester side)."""

    __slots__ = ("done", "handler", "ids", "inst", "remote_id", "remove_dispose_cb")

    def __init__(self, inst: DirectiveInstance, handler: ResolverHandler, remote_id: int) -> None:
        self.inst = inst
        self.handler = handler
        self.remote_id = remote_id
        self.ids: dict[int, int] = {}  # peer's value id -> local value id
        self.done = asyncio.Event()
        self.remove_dispose_cb: Callable[[], None] | None = None


class _Served:
    """A directive the peer asked for, added on the local bus (server side)."""

    __slots__ = ("bridge", "inst", "ref", "remote_id", "sent_values", "skipped")

    def __init__(self, bridge: Bridge, remote_id: int) -> None:
        self.bridge = bridge
        self.remote_id = remote_id
        self.inst: DirectiveInstance | None = None
        self.ref: Reference | None = None
        self.skipped: set[int] = set()
        self.sent_values = False

    def handle_value_added(self, inst: DirectiveInstance, value: AttachedValue) -> None:
        if self.bridge.importing is inst:
            self.skipped.add(value.value_id)  # came from this very peer
            return
        try:
            wire = self.bridge.codec.encode(value.value)
        except NotWireable as exc:
            self.skipped.add(value.value_id)
            logger.warning("%s: value of %s not sent: %s", self.bridge.name, inst, exc)
            return
        self.sent_values = True
        self.bridge.send(ValueAdd(id=self.remote_id, value_id=value.value_id, value=wire))

    def handle_value_removed(self, inst: DirectiveInstance, value: AttachedValue) -> None:
        if value.value_id in self.skipped:
            self.skipped.discard(value.value_id)
            return
        self.bridge.send(ValueRemove(id=self.remote_id, value_id=value.value_id))

    def handle_instance_disposed(self, inst: DirectiveInstance) -> None:
        if self.bridge.served.pop(self.remote_id, None) is self:
            self.bridge.send(DirectiveDispose(id=self.remote_id, reason="disposed"))


class Bridge:
    """The directive traffic of one connection (see the module docstring)."""

    def __init__(self, bus: Bus, conn: Connection, codec: Codec, *, name: str) -> None:
        self.bus = bus
        self.conn = conn
        self.codec = codec
        self.name = name
        self.asked: dict[int, _Asked] = {}
        self.served: dict[int, _Served] = {}
        self.importing: DirectiveInstance | None = None
        self._adding: object | None = None
        self._next_id = 0
        self._served_insts: dict[int, int] = {}  # id(instance) -> how many served refs
        self.closed = False
        self.on_fatal: Callable[[str], None] | None = None

    # -- plumbing ------------------------------------------------------------------------

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def send(self, message: Message, *, urgent: bool = True) -> None:
        """Send without waiting; a failure ends the connection (reported once).

        ``urgent=False`` for bookkeeping the peer does not wait on (see
        :meth:`~controllerbus.ipc.transport.Connection.send_nowait`).
        """
        if self.closed:
            return
        try:
            self.conn.send_nowait(message, urgent=urgent)
        except IPCError as exc:
            self.fatal(str(exc))

    def fatal(self, reason: str) -> None:
        if self.on_fatal is not None:
            self.on_fatal(reason)
        self.conn.close(reason)

    def is_from_peer(self, inst: DirectiveInstance) -> bool:
        return id(inst) in self._served_insts or inst.get_directive() is self._adding

    # -- asking the peer -----------------------------------------------------------------

    def ask(self, inst: DirectiveInstance, handler: ResolverHandler) -> _Asked | None:
        try:
            wire = self.codec.encode(inst.get_directive())
        except NotWireable:
            return None
        asked = _Asked(inst, handler, self.next_id())
        self.asked[asked.remote_id] = asked
        asked.remove_dispose_cb = inst.add_dispose_callback(lambda: self.forget(asked))
        self.send(DirectiveAdd(id=asked.remote_id, directive=wire))
        return asked

    def forget(self, asked: _Asked) -> None:
        """Release the peer's reference for ``asked`` and drop its values here."""
        if self.asked.pop(asked.remote_id, None) is None:
            return
        asked.done.set()
        if asked.remove_dispose_cb is not None:
            asked.remove_dispose_cb()
        for local_id in asked.ids.values():
            asked.handler.remove_value(local_id)
        asked.ids.clear()
        # Nobody waits for a release: it rides along with the next request.
        self.send(Release(id=asked.remote_id, what="directive"), urgent=False)

    def _on_value_add(self, msg: ValueAdd) -> None:
        asked = self.asked.get(msg.id)
        if asked is None:
            return  # released here while the value was in flight
        try:
            value = self.codec.decode_value(msg.value)
        except (ValidationError, NotWireable) as exc:
            raise ProtocolError(
                f"{self.name}: value of type {msg.value.type} for "
                f"{directive_label(asked.inst.get_directive())} is invalid: {exc}"
            ) from None
        self.importing = asked.inst
        try:
            local_id = asked.handler.add_value(value)
        finally:
            self.importing = None
        if local_id is not None:
            asked.ids[msg.value_id] = local_id

    def _on_value_remove(self, msg: ValueRemove) -> None:
        asked = self.asked.get(msg.id)
        if asked is None:
            return
        local_id = asked.ids.pop(msg.value_id, None)
        if local_id is not None:
            asked.handler.remove_value(local_id)

    def _on_idle(self, msg: DirectiveIdle) -> None:
        asked = self.asked.get(msg.id)
        if asked is not None:
            asked.done.set()

    def _on_dispose(self, msg: DirectiveDispose) -> None:
        asked = self.asked.pop(msg.id, None)
        if asked is None:
            return
        asked.done.set()
        if asked.remove_dispose_cb is not None:
            asked.remove_dispose_cb()
        for local_id in asked.ids.values():
            asked.handler.remove_value(local_id)
        asked.ids.clear()
        if msg.reason and msg.reason != "disposed":
            logger.info("%s: peer refused %s: %s", self.name, asked.inst, msg.reason)

    # -- serving the peer ----------------------------------------------------------------

    def _on_directive_add(self, msg: DirectiveAdd) -> None:
        if msg.id in self.served:
            raise ProtocolError(f"{self.name}: directive id {msg.id} is already in use")
        try:
            directive = self.codec.decode(msg.directive)
            if isinstance(directive, _LOADER_DIRECTIVES) or not hasattr(directive, "is_equivalent"):
                raise NotWireable(f"{msg.directive.type} is not a directive served here")
        except (NotWireable, ValidationError) as exc:
            self.send(DirectiveDispose(id=msg.id, reason=f"refused: {_first_line(exc)}"))
            return
        served = _Served(self, msg.id)
        self.served[msg.id] = served
        # add_directive offers the new instance to every handler before it returns,
        # our ForwardController included: mark it as the peer's first.
        self._adding = directive
        try:
            inst, ref = self.bus.add_directive(directive, served)
        except Exception as exc:
            self.served.pop(msg.id, None)
            self._adding = None
            self.send(DirectiveDispose(id=msg.id, reason=f"refused: {_first_line(exc)}"))
            return
        self._adding = None
        served.inst, served.ref = inst, ref
        key = id(inst)
        self._served_insts[key] = self._served_insts.get(key, 0) + 1

        def disposed() -> None:
            self._served_insts.pop(key, None)

        inst.add_dispose_callback(disposed)

        def idle() -> None:
            if self.served.get(msg.id) is served:
                # After values, idle is a hint the requester rarely waits for; without
                # values it is the answer ("nothing here") and goes at once.
                self.send(DirectiveIdle(id=msg.id), urgent=not served.sent_values)

        inst.add_idle_callback(idle)

    def _on_release(self, msg: Release) -> None:
        served = self.served.pop(msg.id, None)
        if served is None or served.ref is None:
            return
        served.ref.release()
        if served.inst is not None:
            key = id(served.inst)
            left = self._served_insts.get(key, 0) - 1
            if left > 0:
                self._served_insts[key] = left
            else:
                self._served_insts.pop(key, None)

    # -- dispatch and shutdown -----------------------------------------------------------

    def dispatch(self, msg: Message) -> bool:
        """Handle a directive message; ``False`` if ``msg`` is not one.

        Raises:
            ProtocolError: the message is invalid in context (the caller closes).
        """
        if isinstance(msg, ValueAdd):
            self._on_value_add(msg)
        elif isinstance(msg, ValueRemove):
            self._on_value_remove(msg)
        elif isinstance(msg, DirectiveIdle):
            self._on_idle(msg)
        elif isinstance(msg, DirectiveDispose):
            self._on_dispose(msg)
        elif isinstance(msg, DirectiveAdd):
            self._on_directive_add(msg)
        elif isinstance(msg, Release) and msg.what == "directive":
            self._on_release(msg)
        else:
            return False
        return True

    def close(self) -> None:
        """Connection gone: release everything served, drop every imported value."""
        if self.closed:
            return
        self.closed = True
        for served in list(self.served.values()):
            if served.ref is not None:
                served.ref.release()
        self.served.clear()
        self._served_insts.clear()
        for asked in list(self.asked.values()):
            asked.done.set()
            if asked.remove_dispose_cb is not None:
                asked.remove_dispose_cb()
            for local_id in asked.ids.values():
                asked.handler.remove_value(local_id)
        self.asked.clear()


class _ForwardResolver:
    def __init__(self, bridge: Bridge, inst: DirectiveInstance) -> None:
        self._bridge = bridge
        self._inst = inst
        self._asked: _Asked | None = None

    async def resolve(self, handler: ResolverHandler) -> None:
        bridge = self._bridge
        if self._asked is None or self._asked.remote_id not in bridge.asked:
            self._asked = bridge.ask(self._inst, handler)
        asked = self._asked
        if asked is None:
            return
        # Cancelled (e.g. the directive reached its value cap): the peer's reference
        # and its values stay, as a cancelled local resolver's values do; a restart
        # of this resolver waits on the same request. The reference goes when the
        # instance is disposed (dispose callback) or the connection ends.
        await asked.done.wait()


class ForwardController:
    """Offers every local directive that can cross to the peer of ``bridge``."""

    def __init__(self, bridge: Bridge, controller_id: str, version: str = "0.0.1") -> None:
        self._bridge = bridge
        self._info = ControllerInfo(controller_id, version, f"forwards directives to {bridge.name}")

    def get_controller_info(self) -> ControllerInfo:
        return self._info

    async def execute(self) -> None:
        return None

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        bridge = self._bridge
        if bridge.closed or bridge.is_from_peer(inst):
            return []
        directive: Any = inst.get_directive()
        if isinstance(directive, _LOADER_DIRECTIVES) or not bridge.codec.wireable(directive):
            return []
        return [_ForwardResolver(bridge, inst)]

    def close(self) -> None:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
