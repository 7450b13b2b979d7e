"""The parent side of a trial: try a new generation out of process before a reload.

A :class:`TrialRunner` is the host's strategy for "can this generation run?" It runs
:mod:`controllerbus.loader.trial_child` (the child side) and answers with a
:class:`TrialResult`. Three implementations, chosen by :data:`TrialKind` through
:func:`trial_runner`:

* ``"fork"`` (:class:`ForkTrialRunner`, the default on POSIX): one warm interpreter
  of the host (:class:`TrialServer`) has the bus imported and forks a child per
  trial; milliseconds plus the plugin's own import time.
* ``"subprocess"`` (:class:`SubprocessTrialRunner`): a fresh interpreter of the
  generation's own venv (:func:`trial_in_subprocess`), the full "this generation
  can run on its own" check; ~0.4 s (interpreter start-up and importing the bus
  dominate).
* ``"none"`` (:class:`NoTrialRunner`): no trial; a failure after the switch still
  rolls back.

The transports return the child's JSON result, ``{"ok": true, ...}`` or ``{"ok":
false, "error": ...}``; transport failures come back as ``ok: false`` too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

if TYPE_CHECKING:
    from controllerbus.loader.generation import Generation

__all__ = [
    "DEFAULT_TRIAL_KIND",
    "ForkTrialRunner",
    "NoTrialRunner",
    "SubprocessTrialRunner",
    "TrialKind",
    "TrialResult",
    "TrialRunner",
    "TrialServer",
    "default_trial_runner",
    "trial_in_subprocess",
    "trial_runner",
]

logger = logging.getLogger(__name__)

TRIAL_TIMEOUT = 60.0
"""Seconds a trial import may take before it counts as failed (and is killed)."""

TrialKind = Literal["fork", "subprocess", "none"]
"""How a reload tries the new generation: see the module docstring."""

TRIAL_KINDS: tuple[TrialKind, ...] = get_args(TrialKind)

DEFAULT_TRIAL_KIND: TrialKind = "fork" if hasattr(os, "fork") else "subprocess"


@dataclass(frozen=True, slots=True)
class TrialResult:
    """What a trial found.

    Attributes:
        ok: the generation imported and constructed its factories.
        error: why not (empty when ``ok``).
        factories: the config ids the trial constructed (empty if unknown).
        skipped: no trial was run (:class:`NoTrialRunner`).
    """

    ok: bool
    error: str = ""
    factories: tuple[str, ...] = field(default=())
    skipped: bool = False

    @classmethod
    def from_json(cls, answer: dict[str, Any]) -> TrialResult:
        """The result of the trial child's JSON answer."""
        if answer.get("ok"):
            return cls(True, factories=tuple(str(f) for f in answer.get("factories", ())))
        return cls(False, error=str(answer.get("error")))


class TrialRunner(Protocol):
    """Runs trials of new generations for one :class:`~controllerbus.loader.host.PluginHost`.

    The host calls :meth:`start` once a plugin is active (a runner may warm up in
    the background, so the first reload is fast too), :meth:`trial` before each
    reload switches, and :meth:`aclose` when it closes.
    """

    kind: TrialKind

    def start(self) -> None:
        """Warm up in the background if the runner has anything to warm; idempotent."""

    async def trial(self, generation: Generation, binary_id: str, entry_point: str) -> TrialResult:
        """Import ``entry_point`` (``module:attr``) of ``generation`` out of process."""

    async def aclose(self) -> None:
        """Stop whatever the runner started (idempotent)."""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


async def _kill(proc: asyncio.subprocess.Process) -> None:
    # Never leave a child behind (trio run_process): kill, then reap, even if cancelled.
    if proc.returncode is None:
        proc.kill()
        await asyncio.shield(proc.wait())


def _failure(reason: str) -> dict[str, Any]:
    return {"ok": False, "error": reason}


async def trial_in_subprocess(python: Path, cwd: Path, entry: str) -> dict[str, Any]:
    """Run the trial child for ``entry`` (``NAME=module:attr``) with interpreter ``python``."""
    proc = await asyncio.create_subprocess_exec(
        str(python),
        "-m",
        "controllerbus.loader.trial_child",
        entry,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=_env(),
    )
    try:
        async with asyncio.timeout(TRIAL_TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        await _kill(proc)
        return _failure(f"the trial import took longer than {TRIAL_TIMEOUT:.0f} s")
    except BaseException:
        await _kill(proc)
        raise
    try:
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        return _failure(f"exit status {proc.returncode}: {' | '.join(tail) or 'no output'}")
    return result


class TrialServer:
    """A warm, forking trial-import server (``python -m controllerbus.loader.trial_child --serve``).

    Started on first use, restarted if it died; requests are serialised.
    """

    def __init__(self, cwd: Path) -> None:
        self._cwd = cwd
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def start(self) -> None:
        """Start the server now (to have it warm before the first reload)."""
        async with self._lock:
            await self._ensure()

    async def _ensure(self) -> asyncio.subprocess.Process:
        if self._closed:
            raise OSError("the trial-import server was closed")
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "controllerbus.loader.trial_child",
            "--serve",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=self._cwd,
            env=_env(),
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(TRIAL_TIMEOUT):
                ready = await proc.stdout.readline()
        except BaseException:
            await _kill(proc)
            raise
        if ready.strip() != b"ready":
            await _kill(proc)
            raise OSError(f"the trial-import server did not start (said {ready[:200]!r})")
        self._proc = proc
        return proc

    async def trial(self, site: Path, entry: str) -> dict[str, Any]:
        """Trial-import ``entry`` (``NAME=module:attr``) with ``site`` first on the path."""
        async with self._lock:
            try:
                proc = await self._ensure()
            except OSError as exc:
                return _failure(f"cannot start the trial-import server: {exc}")
            assert proc.stdin is not None
            assert proc.stdout is not None
            request = json.dumps({"site": str(site), "entry": entry}) + "\n"
            try:
                proc.stdin.write(request.encode())
                await proc.stdin.drain()
                async with asyncio.timeout(TRIAL_TIMEOUT):
                    line = await proc.stdout.readline()
            except TimeoutError:
                await _kill(proc)
                return _failure(f"the trial import took longer than {TRIAL_TIMEOUT:.0f} s")
            except (BrokenPipeError, ConnectionResetError) as exc:
                await _kill(proc)
                return _failure(f"the trial-import server went away: {exc}")
            except BaseException:
                await _kill(proc)
                raise
            if not line:
                await _kill(proc)
                return _failure("the trial-import server went away")
            result: dict[str, Any] = json.loads(line)
            return result

    async def aclose(self) -> None:
        """Stop the server (idempotent); waits for a start or a trial in progress."""
        self._closed = True
        async with self._lock:
            proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            async with asyncio.timeout(2):
                await proc.wait()
        except TimeoutError:
            await _kill(proc)


class ForkTrialRunner:
    """Trials in children forked from a warm :class:`TrialServer` (``kind = "fork"``).

    Args:
        work_dir: the server's working directory (the state directory's ``tmp``).
    """

    kind: TrialKind = "fork"

    def __init__(self, work_dir: Path) -> None:
        self._server = TrialServer(work_dir)
        self._warming: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the server in the background; a failure shows at the first trial."""
        if self._warming is not None:
            return
        try:
            self._warming = asyncio.get_running_loop().create_task(
                self._warm(), name="trial-import server"
            )
        except RuntimeError:  # no running loop: the server starts on demand instead
            return

    async def _warm(self) -> None:
        try:
            await self._server.start()
        except OSError as exc:
            logger.debug("the trial-import server did not start ahead of time: %s", exc)

    async def trial(self, generation: Generation, binary_id: str, entry_point: str) -> TrialResult:
        answer = await self._server.trial(generation.site_packages, f"{binary_id}={entry_point}")
        return TrialResult.from_json(answer)

    async def aclose(self) -> None:
        await self._server.aclose()
        if self._warming is not None:
            await asyncio.gather(self._warming, return_exceptions=True)


class SubprocessTrialRunner:
    """Trials in a fresh interpreter of the generation's own venv (``kind = "subprocess"``).

    Args:
        work_dir: the children's working directory (the state directory's ``tmp``).
    """

    kind: TrialKind = "subprocess"

    def __init__(self, work_dir: Path) -> None:
        self._work_dir = work_dir

    def start(self) -> None:
        """Nothing to warm: every trial starts its own interpreter."""

    async def trial(self, generation: Generation, binary_id: str, entry_point: str) -> TrialResult:
        entry = f"{binary_id}={entry_point}"
        return TrialResult.from_json(
            await trial_in_subprocess(generation.python, self._work_dir, entry)
        )

    async def aclose(self) -> None:
        """Nothing to stop: every trial's child has ended when it returns."""


class NoTrialRunner:
    """No trial (``kind = "none"``): every generation passes; activation still checks."""

    kind: TrialKind = "none"

    def start(self) -> None:
        """Nothing to warm."""

    async def trial(self, generation: Generation, binary_id: str, entry_point: str) -> TrialResult:
        return TrialResult(True, skipped=True)

    async def aclose(self) -> None:
        """Nothing to stop."""


def trial_runner(kind: TrialKind, work_dir: Path) -> TrialRunner:
    """The runner of ``kind``, with ``work_dir`` as its children's working directory.

    Raises:
        ValueError: ``kind`` is not one of :data:`TrialKind`.
    """
    if kind == "fork":
        return ForkTrialRunner(work_dir)
    if kind == "subprocess":
        return SubprocessTrialRunner(work_dir)
    if kind == "none":
        return NoTrialRunner()
    raise ValueError(f"unknown trial kind {kind!r}; expected one of {', '.join(TRIAL_KINDS)}")


def default_trial_runner(work_dir: Path) -> TrialRunner:
    """The runner of :data:`DEFAULT_TRIAL_KIND` (fork where ``os.fork`` exists)."""
    return trial_runner(DEFAULT_TRIAL_KIND, work_dir)
