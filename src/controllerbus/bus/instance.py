"""Directive instances: values, references, resolvers, dispose and idle.

Semantics: docs/bus.md#instances-and-references.

One :class:`Instance` exists per distinct directive on the bus. It owns:

* the attached values, with per-instance ids from 1 that are never reused;
* references (strong or weak, each optionally with a :class:`ReferenceHandler`);
  releasing the last strong one disposes the instance, at once or after
  ``unref_dispose_dur``;
* the resolvers that handlers returned for it, each run in its own task. The
  "resolvers context" of Go is the set of those tasks: reaching ``max_value_count``
  cancels them all, and removing a value below the limit starts them again.

Every method is synchronous and must be called from the event loop's thread; value
callbacks run synchronously over a snapshot of the references, so a callback may
add or release references (Go would deadlock there).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, unquote

from controllerbus.bus.protocols import (
    AttachedValue,
    Directive,
    DirectiveHandler,
    ReferenceHandler,
    Resolver,
)

__all__ = ["Instance", "directive_label"]

logger = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]


def directive_label(directive: Directive) -> str:
    """The debug label ``Name<k=v&k2=v2>`` (Go: ``directive.GetDirectiveDebugString``).

    Keys are sorted; values are query-encoded then path-unescaped, as Go's
    ``url.PathUnescape(url.Values.Encode())``, so a space shows as ``+``.
    """
    vals = directive.get_debug_vals() if hasattr(directive, "get_debug_vals") else {}
    pairs = [
        f"{unquote(quote_plus(key))}={unquote(quote_plus(value))}"
        for key in sorted(vals)
        for value in vals[key]
    ]
    name = directive.get_name()
    return f"{name}<{'&'.join(pairs)}>" if pairs else name


def _call_safely(what: str, fn: Callable[..., None], *args: Any) -> None:
    # Callbacks belong to other components; one failing must not break the instance.
    try:
        fn(*args)
    except Exception:
        logger.exception("%s raised", what)


class _Ref:
    """A reference handed out by :meth:`Instance.add_reference`."""

    __slots__ = ("_inst", "handler", "released", "weak")

    def __init__(self, inst: Instance, handler: ReferenceHandler | None, weak: bool) -> None:
        self._inst = inst
        self.handler = handler
        self.weak = weak
        self.released = False

    def release(self) -> None:
        """Drop this reference; idempotent."""
        self._inst._release_ref(self)


@dataclass(eq=False, slots=True)
class _Attached:
    """A resolver attached to an instance by one handler."""

    resolver: Resolver
    owner: DirectiveHandler
    task: asyncio.Task[None] | None = None
    errored: bool = False
    detached: bool = False
    restart_pending: bool = False
    value_ids: set[int] = field(default_factory=set)
    # Runs of the resolvers this one replaced (re-offer) that have not ended yet;
    # it starts only once they have, so the old run's cleanup comes first.
    after: set[asyncio.Task[None]] = field(default_factory=set)


class _ResolverHandle:
    """The :class:`ResolverHandler` one attached resolver sees."""

    __slots__ = ("_attached", "_inst")

    def __init__(self, inst: Instance, attached: _Attached) -> None:
        self._inst = inst
        self._attached = attached

    def add_value(self, value: Any) -> int | None:
        return self._inst._add_value(self._attached, value)

    def remove_value(self, value_id: int) -> AttachedValue | None:
        return self._inst._remove_value(self._attached, value_id)


class Instance:
    """A running directive; see the module docstring."""

    def __init__(
        self,
        directive: Directive,
        *,
        spawn: Spawn,
        on_disposed: Callable[[Instance], None],
    ) -> None:
        self._directive = directive
        self._opts = directive.value_options()
        self._spawn = spawn
        self._on_disposed = on_disposed
        self._loop = asyncio.get_running_loop()
        self._label = directive_label(directive)
        self._refs: list[_Ref] = []
        self._values: dict[int, tuple[AttachedValue, _Attached]] = {}
        self._next_id = 1
        self._released = False
        self._unref_timer: asyncio.TimerHandle | None = None
        self._dispose_cbs: dict[int, Callable[[], None]] = {}
        self._idle_cbs: dict[int, Callable[[], None]] = {}
        self._cb_seq = 0
        self._attached: list[_Attached] = []
        self._running = 0
        self._resolvers_cancelled = False

    def __repr__(self) -> str:
        state = "released" if self._released else f"{len(self._values)} values"
        return f"<Instance {self._label} {state}>"

    # -- public surface (DirectiveInstance) ---------------------------------------------

    def get_directive(self) -> Directive:
        """The directive this instance runs."""
        return self._directive

    @property
    def label(self) -> str:
        """The directive's debug label."""
        return self._label

    @property
    def released(self) -> bool:
        """Whether the instance has been disposed."""
        return self._released

    @property
    def running_resolvers(self) -> int:
        """How many resolvers are running now (0 = idle)."""
        return self._running

    def get_values(self) -> list[AttachedValue]:
        """The current values in ascending id order."""
        return [av for av, _ in self._values.values()]

    def add_reference(
        self, handler: ReferenceHandler | None = None, *, weak: bool = False
    ) -> _Ref | None:
        """Add a reference; ``None`` if the instance is already released.

        A handler is told about every current value at once (ascending id).
        """
        if self._released:
            return None
        self._cancel_unref_timer()
        ref = _Ref(self, handler, weak)
        self._refs.append(ref)
        if handler is not None:
            for av in self.get_values():
                _call_safely("handle_value_added", handler.handle_value_added, self, av)
        return ref

    def add_dispose_callback(self, cb: Callable[[], None]) -> Callable[[], None]:
        """Call ``cb`` once when disposed (now, if already released); returns a remover."""
        if self._released:
            cb()
            return _noop
        key = self._next_cb_key()
        self._dispose_cbs[key] = cb
        return _remover(self._dispose_cbs, key)

    def add_idle_callback(self, cb: Callable[[], None]) -> Callable[[], None]:
        """Call ``cb`` once when no resolver is running (now, if idle or released)."""
        if self._released or self._running == 0:
            cb()
            return _noop
        key = self._next_cb_key()
        self._idle_cbs[key] = cb
        return _remover(self._idle_cbs, key)

    def close(self) -> None:
        """Dispose the instance: idempotent; see docs/bus.md#dispose."""
        if self._released:
            return
        self._released = True
        self._cancel_unref_timer()
        handlers = [ref.handler for ref in self._refs if ref.handler is not None]
        for ref in self._refs:
            ref.released = True
        self._refs.clear()
        # Values are dropped without handle_value_removed: the dispose event says it all.
        self._values.clear()
        for attached in self._attached:
            self._detach(attached)
        self._attached.clear()
        self._on_disposed(self)
        for handler in handlers:
            self._loop.call_soon(
                _call_safely, "handle_instance_disposed", handler.handle_instance_disposed, self
            )
        callbacks = [*self._dispose_cbs.values(), *self._idle_cbs.values()]
        self._dispose_cbs.clear()
        self._idle_cbs.clear()
        for cb in callbacks:
            self._loop.call_soon(_call_safely, "dispose callback", cb)
        logger.debug("disposed %s", self._label)

    # -- used by the bus -------------------------------------------------------------------

    def attach_resolvers(self, owner: DirectiveHandler, resolvers: Sequence[Resolver]) -> None:
        """Attach resolvers returned by ``owner`` and start them (docs/bus.md#resolvers)."""
        if self._released:
            return
        for resolver in resolvers:
            attached = _Attached(resolver, owner)
            self._attached.append(attached)
            if not self._resolvers_cancelled:
                self._start(attached)

    def detach_owner(self, owner: DirectiveHandler) -> list[asyncio.Task[None]]:
        """Stop every resolver of ``owner`` and remove the values they added.

        Go leaves those values in place ("TODO: ensure removing resolvers"); here a
        removed controller's answers disappear with it.

        Returns:
            The cancelled resolver tasks, for callers that must wait until they end.
        """
        mine = [a for a in self._attached if a.owner is owner]
        if not mine:
            return []
        self._attached = [a for a in self._attached if a.owner is not owner]
        tasks: list[asyncio.Task[None]] = []
        for attached in mine:
            for value_id in sorted(attached.value_ids):
                self._remove_value(attached, value_id)
            if attached.task is not None:
                tasks.append(attached.task)
            self._detach(attached)
        return tasks

    def replace_resolvers(
        self, owner: DirectiveHandler, resolvers: Sequence[Resolver]
    ) -> list[asyncio.Task[None]]:
        """Detach ``owner``'s resolvers (values removed) and attach ``resolvers``.

        The new resolvers start once every cancelled run of the old ones has ended
        (counted as running meanwhile, so the instance does not look idle between).

        Returns:
            The cancelled resolver tasks.
        """
        if self._released:
            return []
        old = [a for a in self._attached if a.owner is owner]
        pending = {a.task for a in old if a.task is not None}
        for a in old:
            pending |= a.after
        tasks = self.detach_owner(owner)
        for resolver in resolvers:
            attached = _Attached(resolver, owner, after=set(pending))
            self._attached.append(attached)
            if not pending and not self._resolvers_cancelled:
                self._start(attached)
        return tasks

    def resolver_tasks(self) -> list[asyncio.Task[None]]:
        """The tasks of the resolvers running now (to await after :meth:`close`)."""
        return [a.task for a in self._attached if a.task is not None]

    # -- internals -------------------------------------------------------------------------

    def _next_cb_key(self) -> int:
        self._cb_seq += 1
        return self._cb_seq

    def _start(self, attached: _Attached) -> None:
        if self._released or attached.detached or attached.errored or attached.after:
            return
        self._running += 1
        try:
            task = self._spawn(
                _run(attached.resolver, _ResolverHandle(self, attached)), self._label
            )
        except RuntimeError:
            # The bus is closing: nothing may start any more.
            self._running -= 1
            return
        attached.task = task
        task.add_done_callback(lambda t: self._on_run_done(attached, t))

    def _on_run_done(self, attached: _Attached, task: asyncio.Task[None]) -> None:
        attached.task = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            attached.errored = True
            logger.error(
                "resolver exited with error: %s: %s",
                self._label,
                exc,
                exc_info=exc,
                extra={"directive": self._label},
            )
        # Start the replacements waiting for this run before counting it as ended.
        for waiting in self._attached:
            if task in waiting.after:
                waiting.after.discard(task)
                if not waiting.after and not self._resolvers_cancelled:
                    self._start(waiting)
        self._running -= 1
        if self._running == 0 and self._idle_cbs:
            callbacks = list(self._idle_cbs.values())
            self._idle_cbs.clear()
            for cb in callbacks:
                self._loop.call_soon(_call_safely, "idle callback", cb)
        if attached.restart_pending:
            attached.restart_pending = False
            if not self._resolvers_cancelled:
                self._start(attached)

    def _detach(self, attached: _Attached) -> None:
        attached.detached = True
        attached.restart_pending = False
        attached.after.clear()
        if attached.task is not None:
            attached.task.cancel()

    def _cancel_resolvers(self) -> None:
        self._resolvers_cancelled = True
        for attached in self._attached:
            attached.restart_pending = False
            if attached.task is not None:
                attached.task.cancel()

    def _restart_resolvers(self) -> None:
        self._resolvers_cancelled = False
        for attached in self._attached:
            if attached.errored or attached.detached or attached.after:
                continue
            if attached.task is None:
                self._start(attached)
            else:
                # Its cancelled run has not finished yet; start again once it has.
                attached.restart_pending = True

    def _add_value(self, attached: _Attached, value: Any) -> int | None:
        if self._released or attached.detached:
            return None
        limit = self._opts.max_value_count
        count = len(self._values)
        if limit > 0 and self._opts.max_value_hard_cap and count >= limit:
            return None
        value_id = self._next_id
        self._next_id += 1
        av = AttachedValue(value_id, value)
        self._values[value_id] = (av, attached)
        attached.value_ids.add(value_id)
        for ref in list(self._refs):
            if ref.handler is not None and not ref.released:
                _call_safely("handle_value_added", ref.handler.handle_value_added, self, av)
        if limit > 0 and count + 1 >= limit:
            self._cancel_resolvers()
        return value_id

    def _remove_value(self, attached: _Attached, value_id: int) -> AttachedValue | None:
        entry = self._values.get(value_id)
        if self._released or entry is None or entry[1] is not attached:
            return None
        del self._values[value_id]
        attached.value_ids.discard(value_id)
        av = entry[0]
        for ref in list(self._refs):
            if ref.handler is not None and not ref.released:
                _call_safely("handle_value_removed", ref.handler.handle_value_removed, self, av)
        limit = self._opts.max_value_count
        if self._resolvers_cancelled and limit > 0 and len(self._values) < limit:
            self._restart_resolvers()
        return av

    def _release_ref(self, ref: _Ref) -> None:
        if ref.released:
            return
        ref.released = True
        self._refs.remove(ref)
        if self._released:
            return
        if any(not r.weak for r in self._refs):
            self._cancel_unref_timer()
            return
        delay = self._opts.unref_dispose_dur
        if delay <= 0:
            self.close()
        elif self._unref_timer is None:
            self._unref_timer = self._loop.call_later(delay, self.close)

    def _cancel_unref_timer(self) -> None:
        if self._unref_timer is not None:
            self._unref_timer.cancel()
            self._unref_timer = None


async def _run(resolver: Resolver, handle: _ResolverHandle) -> None:
    await resolver.resolve(handle)


def _noop() -> None:
    return None


def _remover(callbacks: dict[int, Callable[[], None]], key: int) -> Callable[[], None]:
    def remove() -> None:
        callbacks.pop(key, None)

    return remove
