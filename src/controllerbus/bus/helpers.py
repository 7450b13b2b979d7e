"""Helpers over the bus: one-off directives, value collection, reference handlers.

Semantics: docs/bus.md#helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from controllerbus.bus.bus import Bus
from controllerbus.bus.protocols import (
    AttachedValue,
    Directive,
    DirectiveInstance,
    Reference,
    ResolverHandler,
)
from controllerbus.errors import BusError

__all__ = [
    "CallbackHandler",
    "DirectiveDisposed",
    "PassThruHandler",
    "exec_collect_values",
    "exec_one_off",
]


class DirectiveDisposed(BusError):
    """The directive instance was disposed before it produced what was awaited."""


class CallbackHandler:
    """A :class:`ReferenceHandler` calling optional plain functions."""

    def __init__(
        self,
        on_added: Callable[[DirectiveInstance, AttachedValue], None] | None = None,
        on_removed: Callable[[DirectiveInstance, AttachedValue], None] | None = None,
        on_disposed: Callable[[DirectiveInstance], None] | None = None,
    ) -> None:
        self._on_added = on_added
        self._on_removed = on_removed
        self._on_disposed = on_disposed

    def handle_value_added(self, inst: DirectiveInstance, value: AttachedValue) -> None:
        if self._on_added is not None:
            self._on_added(inst, value)

    def handle_value_removed(self, inst: DirectiveInstance, value: AttachedValue) -> None:
        if self._on_removed is not None:
            self._on_removed(inst, value)

    def handle_instance_disposed(self, inst: DirectiveInstance) -> None:
        if self._on_disposed is not None:
            self._on_disposed(inst)


class PassThruHandler:
    """Re-emits every value of one instance into another resolver's handler.

    Ids are mapped; a value removed here is removed there, and on dispose (or
    :meth:`clear`) every value passed through is removed.
    """

    def __init__(
        self,
        target: ResolverHandler,
        on_disposed: Callable[[DirectiveInstance], None] | None = None,
    ) -> None:
        self._target = target
        self._on_disposed = on_disposed
        self._ids: dict[int, int] = {}

    def handle_value_added(self, inst: DirectiveInstance, value: AttachedValue) -> None:
        target_id = self._target.add_value(value.value)
        if target_id is not None:
            self._ids[value.value_id] = target_id

    def handle_value_removed(self, inst: DirectiveInstance, value: AttachedValue) -> None:
        target_id = self._ids.pop(value.value_id, None)
        if target_id is not None:
            self._target.remove_value(target_id)

    def handle_instance_disposed(self, inst: DirectiveInstance) -> None:
        self.clear()
        if self._on_disposed is not None:
            self._on_disposed(inst)

    def clear(self) -> None:
        """Remove every value passed through so far from the target."""
        ids, self._ids = self._ids, {}
        for target_id in ids.values():
            self._target.remove_value(target_id)


async def exec_one_off(
    bus: Bus, directive: Directive, *, return_if_idle: bool = False
) -> tuple[AttachedValue | None, Reference]:
    """Add ``directive`` and wait for its first value.

    Go waits forever when nothing resolves; with ``return_if_idle`` this returns
    ``(None, ref)`` (``ref`` already released) once every resolver has returned
    without a value. Bound the wait with ``asyncio.timeout``.

    Raises:
        DirectiveDisposed: the instance was disposed before a value arrived.
        DirectiveError: the directive is invalid.
    """
    loop = asyncio.get_running_loop()
    first: asyncio.Future[AttachedValue | None] = loop.create_future()

    def added(_inst: DirectiveInstance, value: AttachedValue) -> None:
        if not first.done():
            first.set_result(value)

    def disposed(inst: DirectiveInstance) -> None:
        if not first.done():
            first.set_exception(DirectiveDisposed(f"{_name(inst)} was disposed before a value"))

    inst, ref = bus.add_directive(directive, CallbackHandler(added, None, disposed))
    if return_if_idle and not first.done():
        inst.add_idle_callback(lambda: None if first.done() else first.set_result(None))
    try:
        value = await first
    except BaseException:
        ref.release()
        raise
    if value is None:
        ref.release()
    return value, ref


async def exec_collect_values(bus: Bus, directive: Directive) -> tuple[list[Any], Reference]:
    """Add ``directive`` and collect its values until it is idle or disposed.

    Removed values are dropped from the result. On cancellation the reference is
    released and the cancellation propagates.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    values: dict[int, Any] = {}

    def added(_inst: DirectiveInstance, value: AttachedValue) -> None:
        values[value.value_id] = value.value

    def removed(_inst: DirectiveInstance, value: AttachedValue) -> None:
        values.pop(value.value_id, None)

    def finish(*_args: object) -> None:
        if not done.done():
            done.set_result(None)

    inst, ref = bus.add_directive(directive, CallbackHandler(added, removed, finish))
    inst.add_idle_callback(finish)
    try:
        await done
    except BaseException:
        ref.release()
        raise
    return [values[k] for k in sorted(values)], ref


def _name(inst: DirectiveInstance) -> str:
    return inst.get_directive().get_name()
