"""Trial imports run ahead, while the installs of a cold start are still going.

Semantics: docs/loader.md#trials-ahead.

A cold start of many plugins installs their generations in parallel threads
(:func:`~controllerbus.loader.production.install_all_ahead`) and then loads them one
by one. Each load's trial import waits for the trial runner; run one after the other
they cost as much as the installs. :class:`TrialsAhead` starts a generation's trial
as soon as its install is done, so trials overlap with the installs still running,
and the load that follows takes the answer instead of asking again.

Nothing is skipped: the load still runs every check in its order (trust, verify,
host requirements, install), and only then uses the answer for *that* generation id,
binary id and entry point. A failed or missing answer is not used: the load runs
the trial itself (and reports its failure as always). A generation the daemon died
activating never uses an answer from ahead (its trial is forced, see the crash guard).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from controllerbus.loader.activation import entry_point_of
from controllerbus.loader.errors import LoaderError

if TYPE_CHECKING:
    from controllerbus.loader.generation import Generation
    from controllerbus.loader.trial import TrialResult, TrialRunner

__all__ = ["TrialsAhead"]

logger = logging.getLogger(__name__)

_Key = tuple[str, str, str]  # generation id, binary id, entry point


class TrialsAhead:
    """Trial answers for generations installed ahead, keyed by generation and entry point."""

    def __init__(self, runner: TrialRunner) -> None:
        self._runner = runner
        self._tasks: dict[_Key, asyncio.Task[TrialResult]] = {}

    def installed(self, generation: Generation) -> None:
        """Start the trial of a generation installed ahead (from the event loop)."""
        if self._runner.kind == "none":
            return
        try:
            binary_id, ep_value = entry_point_of(generation.wheel)
        except LoaderError:
            return  # the load reports it
        key = (generation.id, binary_id, ep_value)
        if key not in self._tasks:
            self._tasks[key] = asyncio.get_running_loop().create_task(
                self._runner.trial(generation, binary_id, ep_value),
                name=f"trial ahead {binary_id}",
            )

    async def take(self, generation: Generation, binary_id: str, ep_value: str) -> bool:
        """Whether the trial of exactly this generation and entry point passed ahead.

        The answer is used once; ``False`` (no answer, or a failure) means: run it.
        """
        task = self._tasks.pop((generation.id, binary_id, ep_value), None)
        if task is None:
            return False
        try:
            result = await task
        except Exception as exc:  # a transport problem: the load's own trial will say
            logger.debug("trial ahead of %s failed to run: %s", binary_id, exc)
            return False
        return result.ok

    async def aclose(self) -> None:
        """Cancel and await the trials nobody took."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
