"""The daemon's plugin loader, followed across the bus's restarts of it.

Semantics: docs/loader.md#waiting-for-the-first-pass.

The bus runs the filesystem loader through an ``ExecController`` directive. When the
loader's ``execute`` fails, the bus backs off and constructs a *new* controller, so the
first instance's ``synced`` never fires once it failed. :class:`RunningLoader` watches
the directive's values instead: it waits on the ``synced`` event of whichever instance
runs now, and raises :class:`~controllerbus.errors.LoaderError` once the bus gave up
(backoff exhausted, or a retry could not be constructed) or the directive went away.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from controllerbus.bus.directives import ExecControllerValue
from controllerbus.bus.helpers import CallbackHandler
from controllerbus.errors import LoaderError
from controllerbus.loader.filesystem import FilesystemLoaderController

if TYPE_CHECKING:
    from controllerbus.bus.bus import Bus
    from controllerbus.bus.protocols import AttachedValue, Directive, DirectiveInstance, Reference

__all__ = ["RunningLoader"]

logger = logging.getLogger(__name__)


class RunningLoader:
    """One ``ExecController`` directive of a filesystem loader, and its current instance."""

    def __init__(self) -> None:
        self.controller: FilesystemLoaderController | None = None
        """The instance running now; ``None`` while the bus waits to retry."""
        self.error: BaseException | None = None
        """Why the bus stopped trying (no retry follows)."""
        self._latest: FilesystemLoaderController | None = None
        self._changed = asyncio.Event()
        self._ref: Reference | None = None

    @classmethod
    async def start(cls, bus: Bus, directive: Directive) -> RunningLoader:
        """Add ``directive`` and wait until a loader instance has finished its first pass.

        Raises:
            LoaderError: the bus gave up on the loader first (the directive is released).
        """
        run = cls()
        _inst, run._ref = bus.add_directive(
            directive, CallbackHandler(run._added, run._removed, run._disposed)
        )
        try:
            await run.first_pass()
        except BaseException:
            run._ref.release()
            raise
        return run

    async def first_pass(self) -> FilesystemLoaderController:
        """The instance running now, once its first pass is done (whichever instance it is)."""
        while True:
            if self.error is not None:
                raise LoaderError(f"cannot start the plugin loader: {self.error}")
            ctrl = self.controller
            if ctrl is not None and ctrl.synced.is_set():
                return ctrl
            self._changed.clear()
            waits = [asyncio.ensure_future(self._changed.wait())]
            if ctrl is not None:
                waits.append(asyncio.ensure_future(ctrl.synced.wait()))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()

    async def stop(self) -> None:
        """Release the directive; wait until the last instance has unloaded its plugins."""
        if self._ref is not None:
            self._ref.release()
        if self._latest is not None:
            await self._latest.stopped.wait()

    def _added(self, _inst: DirectiveInstance, av: AttachedValue) -> None:
        value = av.value
        if not isinstance(value, ExecControllerValue):
            return
        if isinstance(value.controller, FilesystemLoaderController):
            self.controller = self._latest = value.controller
        elif value.error is not None and value.next_retry_timestamp is None:
            self.error = value.error
        self._changed.set()

    def _removed(self, _inst: DirectiveInstance, av: AttachedValue) -> None:
        value = av.value
        if isinstance(value, ExecControllerValue) and value.controller is self.controller:
            self.controller = None  # it failed; the bus retries or gives up
            self._changed.set()

    def _disposed(self, inst: DirectiveInstance) -> None:
        if self.error is None:
            self.error = LoaderError(f"{inst.get_directive().get_name()} was disposed")
        self._changed.set()
