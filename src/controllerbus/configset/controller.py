"""The ``ApplyConfigSet`` directive and the config-set controller.

Semantics: docs/bus.md#the-config-set-controller.

Adding ``ApplyConfigSet(set)`` makes the controller run one controller per key
(through ``LoadControllerWithConfig``). Pushing a key again applies the new config
only if its revision is **strictly** higher; equal or lower revisions are ignored
even when the config differs. One Python extension: a config of a different *class*
(the same config id served by a reloaded plugin's new code) is applied at the same
revision. A key whose references all go away is stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

from controllerbus.bus.config import Config
from controllerbus.bus.directives import ExecControllerValue, LoadControllerWithConfig
from controllerbus.bus.factory import ControllerFactory
from controllerbus.bus.helpers import CallbackHandler
from controllerbus.bus.protocols import (
    AttachedValue,
    Controller,
    ControllerInfo,
    Directive,
    DirectiveInstance,
    Resolver,
    ResolverHandler,
)
from controllerbus.bus.tasks import TaskSet, forever, wait_first
from controllerbus.configset.model import ConfigSet, ControllerConfig

if TYPE_CHECKING:
    from controllerbus.bus.bus import Bus

__all__ = [
    "CONFIGSET_CONTROLLER_ID",
    "ApplyConfigSet",
    "ConfigSetConfig",
    "ConfigSetController",
    "ConfigSetState",
    "KeyReference",
    "new_configset_factory",
]

logger = logging.getLogger(__name__)

CONFIGSET_CONTROLLER_ID = "controllerbus/configset/1"
_VERSION = "0.0.1"


class ConfigSetConfig(Config):
    """The (empty) config of the config-set controller."""

    CONFIG_ID: ClassVar[str] = CONFIGSET_CONTROLLER_ID


@dataclass(frozen=True, slots=True)
class ConfigSetState:
    """The state of one key, attached as a value of ``ApplyConfigSet``."""

    id: str
    controller_config: ControllerConfig
    controller: Controller | None = None
    error: BaseException | None = None


@dataclass(frozen=True, eq=False, slots=True)
class ApplyConfigSet(Directive):
    """Run the controllers of ``config_set``; values are :class:`ConfigSetState`."""

    config_set: Mapping[str, ControllerConfig]

    def validate(self) -> None:
        if not isinstance(self.config_set, Mapping):
            raise ValueError("config set must be a mapping of key to ControllerConfig")

    def is_equivalent(self, other: Directive) -> bool:
        return isinstance(other, ApplyConfigSet) and dict(self.config_set) == dict(other.config_set)

    def get_name(self) -> str:
        return "ApplyConfigSet"

    def get_debug_vals(self) -> dict[str, list[str]]:
        keys = [f"{key}@{conf.revision}" for key, conf in sorted(self.config_set.items())]
        return {"controller-keys": keys}


StateListener = Callable[[ConfigSetState], None]


class KeyReference:
    """A reference to one running key; releasing the last one stops its controller."""

    def __init__(self, running: _RunningController, listener: StateListener | None) -> None:
        self._running = running
        self._listener = listener
        self._released = False

    def release(self) -> None:
        """Drop this reference; idempotent."""
        if not self._released:
            self._released = True
            self._running.drop_ref(self)

    @property
    def listener(self) -> StateListener | None:
        """The callback told about every state change of the key."""
        return self._listener


@dataclass(eq=False)
class _RunningController:
    owner: ConfigSetController
    key: str
    conf: ControllerConfig
    refs: list[KeyReference] = field(default_factory=list)
    restart: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    state: ConfigSetState | None = None

    def publish(self, **changes: object) -> None:
        base = self.state or ConfigSetState(self.key, self.conf)
        self.state = replace(base, controller_config=self.conf, **changes)  # type: ignore[arg-type]  # keyword changes are ConfigSetState fields
        for ref in list(self.refs):
            if ref.listener is not None:
                ref.listener(self.state)

    def drop_ref(self, ref: KeyReference) -> None:
        if ref in self.refs:
            self.refs.remove(ref)
        if not self.refs:
            self.owner._stop_key(self)

    def _on_exec_added(self, _inst: DirectiveInstance, av: AttachedValue) -> None:
        if isinstance(av.value, ExecControllerValue):
            self.publish(controller=av.value.controller, error=av.value.error)

    def _on_exec_removed(self, _inst: DirectiveInstance, av: AttachedValue) -> None:
        value = av.value
        current = self.state.controller if self.state is not None else None
        if isinstance(value, ExecControllerValue) and value.controller is current is not None:
            self.publish(controller=None)

    async def run(self) -> None:
        """Keep ``LoadControllerWithConfig(conf)`` alive; re-add it on restart or dispose."""
        bus = self.owner._bus
        while True:
            conf = self.conf
            self.restart.clear()
            disposed = asyncio.Event()
            handler = CallbackHandler(self._on_exec_added, self._on_exec_removed, _setter(disposed))
            logger.info("config set: starting %s (revision %d)", self.key, conf.revision)
            self.publish(controller=None, error=None)
            _inst, ref = bus.add_directive(LoadControllerWithConfig(conf.config), handler)
            try:
                await wait_first([self.restart, disposed])
            finally:
                ref.release()


def _setter(event: asyncio.Event) -> Callable[[DirectiveInstance], None]:
    def on_disposed(_inst: DirectiveInstance) -> None:
        event.set()

    return on_disposed


class ConfigSetController:
    """Actuates config sets (id ``controllerbus/configset/1``)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._keys: dict[str, _RunningController] = {}
        self._tasks = TaskSet("configset")

    def get_controller_info(self) -> ControllerInfo:
        return ControllerInfo(CONFIGSET_CONTROLLER_ID, _VERSION, "configset actuation controller")

    async def execute(self) -> None:
        """Run until cancelled; on the way out every key's controller is stopped."""
        try:
            await forever()
        finally:
            self._keys.clear()
            await asyncio.shield(self._tasks.aclose())

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        directive = inst.get_directive()
        if isinstance(directive, ApplyConfigSet):
            return [_ApplyResolver(self, dict(directive.config_set))]
        return []

    def close(self) -> None:
        self._tasks.cancel_all()

    def get_keys(self) -> dict[str, ControllerConfig]:
        """The running keys and the config each runs now."""
        return {key: running.conf for key, running in self._keys.items()}

    def push_controller_config(
        self, key: str, conf: ControllerConfig, listener: StateListener | None = None
    ) -> KeyReference:
        """Run ``conf`` under ``key``, or update it if ``conf.revision`` is strictly higher.

        Returns a reference; ``listener`` (if given) is told the current state now and
        every change after.
        """
        running = self._keys.get(key)
        if running is None:
            running = _RunningController(self, key, conf)
            self._keys[key] = running
            running.task = self._tasks.spawn(running.run(), name=f"configset key {key}")
        elif conf.revision > running.conf.revision:
            logger.info(
                "config set: %s revision %d -> %d, restarting",
                key,
                running.conf.revision,
                conf.revision,
            )
            running.conf = conf
            running.restart.set()
        elif type(conf.config) is not type(running.conf.config):
            # Python extension: the same key with a config of another class is the
            # same config from new code (a reloaded plugin); it replaces the old one
            # at the same revision, or the old generation's class would stay alive.
            logger.info("config set: %s config type reloaded, restarting", key)
            running.conf = conf
            running.restart.set()
        elif conf != running.conf:
            logger.info(
                "config set: %s changed without a higher revision (%d); ignored",
                key,
                conf.revision,
            )
        ref = KeyReference(running, listener)
        running.refs.append(ref)
        if listener is not None and running.state is not None:
            listener(running.state)
        return ref

    def _stop_key(self, running: _RunningController) -> None:
        if self._keys.get(running.key) is running:
            del self._keys[running.key]
            logger.info("config set: stopping %s", running.key)
        if running.task is not None:
            running.task.cancel()


class _ApplyResolver:
    def __init__(self, ctrl: ConfigSetController, config_set: ConfigSet) -> None:
        self._ctrl = ctrl
        self._set = config_set

    async def resolve(self, handler: ResolverHandler) -> None:
        value_ids: dict[str, int] = {}

        def listener_for(key: str) -> StateListener:
            def on_state(state: ConfigSetState) -> None:
                old = value_ids.pop(key, None)
                if old is not None:
                    handler.remove_value(old)
                new = handler.add_value(state)
                if new is not None:
                    value_ids[key] = new

            return on_state

        refs = [
            self._ctrl.push_controller_config(key, conf, listener_for(key))
            for key, conf in self._set.items()
            if key
        ]
        try:
            await forever()
        finally:
            for ref in refs:
                ref.release()


def new_configset_factory(bus: Bus) -> ControllerFactory[ConfigSetConfig]:
    """The factory of the config-set controller on ``bus``."""
    return ControllerFactory(
        ConfigSetConfig, lambda _config, _opts: ConfigSetController(bus), version=_VERSION
    )
