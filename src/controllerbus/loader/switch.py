"""The activation switch of a load: the crash guard around it, rollback, crash recovery.

:class:`Switch` is the side-effect half of :class:`~controllerbus.loader.host.PluginHost`'s
switch step: it imports and registers a generation on the bus
(:func:`~controllerbus.loader.activation.activate`) between the
:class:`~controllerbus.loader.crashguard.ActivationGuard` marker and a residue
:class:`~controllerbus.loader.residue.Baseline`, activates the old generation again
after a failed switch, and records a generation the previous process died activating.
The host decides when; this module only does it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from controllerbus.loader.activation import ActivePlugin, activate, entry_point_of
from controllerbus.loader.errors import LoaderError
from controllerbus.loader.residue import Baseline

if TYPE_CHECKING:
    from controllerbus.bus.bus import Bus
    from controllerbus.loader.crashguard import ActivationGuard
    from controllerbus.loader.generation import Generation
    from controllerbus.loader.manifest import ManifestBook
    from controllerbus.loader.plugin_resolver import ConstructHook, StateHandoff

__all__ = ["Switch"]

logger = logging.getLogger(__name__)


class Switch:
    """Activates generations on one bus, guarded by one state directory's crash marker.

    ``baselines`` holds what existed before each active generation was imported (for
    the residue check of its unload); the host pops a generation's baseline then.
    """

    def __init__(
        self,
        bus: Bus,
        guard: ActivationGuard,
        book: ManifestBook,
        state_path: Path,
        handoff: StateHandoff | None,
    ) -> None:
        self._bus = bus
        self._guard = guard
        self._book = book
        self._state_path = state_path
        self._handoff = handoff
        self.baselines: dict[str, Baseline] = {}

    def construct_hook(self, binary_id: str) -> ConstructHook | None:
        handoff = self._handoff
        if handoff is None:
            return None
        return lambda config, controller: handoff.restore_into(binary_id, config, controller)

    def activate(self, generation: Generation, binary_id: str, ep_value: str) -> ActivePlugin:
        """:func:`activate`, between the crash guard's marker and a residue baseline."""
        baseline = Baseline.take()
        # A crash from here to end() marks the generation suspect on the next start.
        self._guard.begin(binary_id, generation.id, generation.wheel.path)
        try:
            active = activate(
                self._bus,
                generation,
                binary_id,
                ep_value,
                on_construct=self.construct_hook(binary_id),
            )
        except BaseException:
            self._guard.end(generation.id, ok=False)
            raise
        self._guard.end(generation.id, ok=True)
        self.baselines[generation.id] = baseline
        return active

    def rollback(self, binary_id: str, old: Generation) -> ActivePlugin | None:
        """Activate ``old`` again after a failed switch; ``None`` if that failed too."""
        try:
            restored = self.activate(old, binary_id, entry_point_of(old.wheel)[1])
        except LoaderError as exc:
            logger.error(
                "plugin %s: rolling back to the previous generation failed too: %s", binary_id, exc
            )
            return None
        logger.warning(
            "plugin %s: the new generation failed; generation %s is serving again",
            binary_id,
            old.id[:12],
        )
        return restored

    def recover_crash(self) -> None:
        """Mark a generation the previous process died activating suspect or quarantined."""
        crash = self._guard.recover()
        if crash is None:
            return
        message = (
            f"the daemon died while activating generation {crash.generation[:12]} "
            f"(crash {crash.count})"
        )
        if crash.status == "quarantined":
            message += (
                "; quarantined: it is not loaded again until you run "
                f"`cbus plugins retry {crash.binary_id} --state-dir {self._state_path}`"
            )
        else:
            message += "; suspect: it is loaded again only after a trial import passes"
        logger.error("plugin %s: %s", crash.binary_id, message)
        self._book.crashed(
            crash.binary_id, Path(crash.wheel), crash.generation, message, crash.status
        )
