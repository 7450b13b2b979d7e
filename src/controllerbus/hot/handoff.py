"""State handoff across a reload: ``snapshot() -> state`` on the old controller,
``restore(state)`` on the new one.

A controller that wants its state to survive a hot reload defines both methods::

    def snapshot(self) -> object:        # plain JSON data: dict, list, str, int, ...
        return {"greeted": self._greeted}

    def restore(self, state: object) -> None:
        self._greeted = int(state["greeted"])

When the loader replaces a generation it calls ``snapshot()`` on every controller
of the old generation just before stopping it, and keeps the result as JSON
*text*. When the new generation's factory constructs the controller for the same
config id (the config set restarts it on the new code), ``restore()`` receives a
fresh ``json.loads`` of that text before the controller runs. Nothing of the old
generation crosses over, so the unload's leak proof stays clean.

* A ``snapshot()`` that raises or returns something JSON cannot encode is logged;
  the new controller starts without state (the new code is not at fault).
* A ``restore()`` that raises fails the load: the loader takes the new generation
  off the bus again, reactivates the old one, and restores it from the same
  state. The error (with file:line) goes to the log and the manifest.

Matching: a state goes to the new controller of the same config id whose config
serialises identically; failing that, to the next one of the same config id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from controllerbus.loader.trial_child import describe_exception

__all__ = ["Handoff", "HandoffStats", "config_key"]

logger = logging.getLogger(__name__)


def config_key(config_id: str, config: object) -> str:
    """``config_id`` plus the config's canonical JSON, when it has one."""
    dump = getattr(config, "model_dump", None)
    if callable(dump):
        try:
            return config_id + "\0" + json.dumps(dump(mode="json"), sort_keys=True)
        except (TypeError, ValueError):
            pass
    return config_id


@dataclass(slots=True)
class HandoffStats:
    """What the last reload of one plugin carried over.

    Attributes:
        captured: controllers whose ``snapshot()`` was kept.
        restored: controllers of the new generation given a state.
        failed: snapshot or restore failures, as text with file:line.
    """

    captured: int = 0
    restored: int = 0
    failed: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Pending:
    # config id -> [(config key, json text)], in capture order; never objects.
    states: dict[str, list[tuple[str, str]]]
    left: dict[str, list[tuple[str, str]]]
    restore_error: str | None = None
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def check(self) -> None:
        if self.restore_error is not None or not any(self.left.values()):
            self.drained.set()


class Handoff:
    """The state carried from one generation of each plugin to the next.

    The loader calls :meth:`capture` before stopping an old generation, the plugin
    factories call :meth:`restore_into` when they construct a controller, and the
    loader waits for :meth:`settle` and asks :meth:`restore_error` after the switch
    (a failure means rollback, after :meth:`rearm`), and calls :meth:`finish` when
    the load is settled.

    Args:
        settle_timeout: seconds :meth:`settle` waits for the restarted controllers.
    """

    def __init__(self, *, settle_timeout: float = 2.0) -> None:
        self._settle_timeout = settle_timeout
        self._pending: dict[str, _Pending] = {}
        # Controller -> config key (text): how a snapshot finds its new controller.
        self._keys: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()
        self.stats: dict[str, HandoffStats] = {}
        """Per plugin: what its last reload carried."""

    def capture(self, binary_id: str, factories: Iterable[Any]) -> None:
        """Snapshot every live controller of ``factories`` (``PluginFactory`` wrappers)."""
        states: dict[str, list[tuple[str, str]]] = defaultdict(list)
        stats = HandoffStats()
        for factory in factories:
            config_id = factory.config_id()
            for controller in factory.constructed():
                snapshot = getattr(controller, "snapshot", None)
                if not callable(snapshot):
                    continue
                try:
                    text = json.dumps(snapshot())
                except Exception as exc:
                    reason = f"snapshot() of {config_id} failed: {describe_exception(exc)}"
                    logger.error("plugin %s: %s; its state is not carried over", binary_id, reason)
                    stats.failed.append(reason)
                    continue
                key = self._key_of(controller, config_id)
                states[config_id].append((key, text))
                stats.captured += 1
        self.stats[binary_id] = stats
        if states:
            self._pending[binary_id] = _Pending(
                dict(states), {k: list(v) for k, v in states.items()}
            )

    def _key_of(self, controller: object, config_id: str) -> str:
        try:
            return self._keys.get(controller, config_id)
        except TypeError:
            return config_id

    def restore_into(self, binary_id: str, config: object, controller: object) -> str | None:
        """Note ``controller``'s config and give it the captured state, if any (sync).

        The loader calls this for every controller a plugin factory constructs.

        Returns:
            Why ``restore()`` failed (text with file:line), or ``None``. The factory
            then fails the construct; the loader sees it through :meth:`restore_error`.
            Never the exception itself: its frames would pin the failed generation.
        """
        config_id = str(getattr(config, "config_id", lambda: "")())
        key = config_key(config_id, config)
        with contextlib.suppress(TypeError):
            self._keys[controller] = key
        pending = self._pending.get(binary_id)
        restore = getattr(controller, "restore", None)
        if pending is None or not callable(restore):
            return None
        queue = pending.left.get(config_id)
        if not queue:
            return None
        index = next((i for i, (k, _t) in enumerate(queue) if k == key), 0)
        _key, text = queue.pop(index)
        try:
            restore(json.loads(text))
        except Exception as exc:
            reason = f"restore() of {config_id} failed: {describe_exception(exc)}"
            pending.restore_error = reason
            self.stats.setdefault(binary_id, HandoffStats()).failed.append(reason)
            return reason
        finally:
            pending.check()
        self.stats.setdefault(binary_id, HandoffStats()).restored += 1
        return None

    async def settle(self, binary_id: str) -> None:
        """Wait until every captured state was restored (or one failed), or the timeout.

        The config set restarts controllers on the new generation a few loop
        iterations after the switch; a state nobody took by then is dropped (logged).
        """
        pending = self._pending.get(binary_id)
        if pending is None:
            return
        pending.check()
        try:
            async with asyncio.timeout(self._settle_timeout):
                await pending.drained.wait()
        except TimeoutError:
            left = sorted(k for k, v in pending.left.items() if v)
            logger.warning(
                "plugin %s: no controller of the new generation took the state of %s",
                binary_id,
                ", ".join(left),
            )

    def restore_error(self, binary_id: str) -> str | None:
        """Why a ``restore()`` of the current reload of ``binary_id`` failed, or ``None``."""
        pending = self._pending.get(binary_id)
        return pending.restore_error if pending is not None else None

    def rearm(self, binary_id: str) -> None:
        """Offer the captured states again (to the old generation, after a rollback)."""
        pending = self._pending.get(binary_id)
        if pending is not None:
            pending.left = {k: list(v) for k, v in pending.states.items()}
            pending.restore_error = None
            pending.drained.clear()

    def finish(self, binary_id: str) -> None:
        """Drop what was captured for ``binary_id``: the load is settled."""
        self._pending.pop(binary_id, None)
