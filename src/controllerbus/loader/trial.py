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

Every trial runs in a session (process group) of its own under the runner's
:class:`~controllerbus.loader.sandbox.TrialLimits`; at the deadline the whole group
(and any process carrying the trial's environment marker) is killed, so nothing it
started survives and nothing waits on its pipes.

The transports return the child's JSON result, ``{"ok": true, ...}`` or ``{"ok":
false, "error": ...}``; transport failures come back as ``ok: false`` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from controllerbus.loader.sandbox import (
    DEFAULT_LIMITS,
    TRIAL_MARKER_ENV,
    TrialLimits,
    describe_status,
    kill_group,
    kill_trial,
)

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

_REAP_TIMEOUT = 2.0
"""Seconds to wait for a killed process to be reaped before its pipes are closed."""

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
    """Kill ``proc``'s whole process group, reap it, and never wait on its pipes forever.

    Never leaves a child behind (trio run_process), even if cancelled.
    """
    kill_group(proc.pid)  # the process is its group's leader (start_new_session)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    try:
        async with asyncio.timeout(_REAP_TIMEOUT):
            await asyncio.shield(proc.wait())
    except TimeoutError:
        # Something outside the group still holds a pipe: asyncio's wait() would wait
        # for its EOF. Close our ends; the child is reaped by the child watcher.
        transport = getattr(proc, "_transport", None)
        if transport is not None:
            transport.close()


def _failure(reason: str) -> dict[str, Any]:
    return {"ok": False, "error": reason}


def deadline_failure(limits: TrialLimits) -> dict[str, Any]:
    """The result of a trial that hit its deadline."""
    return _failure(
        f"import did not finish in {limits.deadline:g} s (the trial deadline; the trial "
        "and every process it started were killed)"
    )


async def trial_in_subprocess(
    python: Path, cwd: Path, entry: str, limits: TrialLimits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """Run the trial child for ``entry`` (``NAME=module:attr``) with interpreter ``python``.

    Output goes to files, not pipes, so a process the plugin started cannot keep the
    parent waiting; the trial's process group is killed when it ends or overruns.
    """
    marker = uuid.uuid4().hex
    with tempfile.TemporaryFile(dir=cwd) as out, tempfile.TemporaryFile(dir=cwd) as err:
        proc = await asyncio.create_subprocess_exec(
            str(python),
            "-m",
            "controllerbus.loader.trial_child",
            "--limits",
            json.dumps(limits.to_json()),
            entry,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=cwd,
            env={**_env(), TRIAL_MARKER_ENV: marker},
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(limits.deadline):
                await proc.wait()
        except TimeoutError:
            kill_trial(proc.pid, marker)
            await _kill(proc)
            return deadline_failure(limits)
        except BaseException:
            kill_trial(proc.pid, marker)
            await _kill(proc)
            raise
        left = kill_trial(proc.pid, marker)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(1 << 20), err.read(1 << 20)
    try:
        result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        status = describe_returncode(proc.returncode, limits)
        tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
        return _failure(f"the trial import crashed ({status}): {' | '.join(tail) or 'no output'}")
    if left and result.get("ok"):
        listed = ", ".join(f"pid {p} ({cmd})" for p, cmd in left[:5])
        return _failure(
            f"the import left {len(left)} process(es) running: {listed} "
            "(killed; start processes in a controller and stop them in close())"
        )
    return result


def describe_returncode(returncode: int | None, limits: TrialLimits) -> str:
    """:func:`~controllerbus.loader.sandbox.describe_status` for a ``returncode``."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        return describe_status(-returncode & 0x7F, limits)  # a wait status "killed by N"
    return f"exit status {returncode}"


class TrialServer:
    """A warm, forking trial-import server (``python -m controllerbus.loader.trial_child --serve``).

    Started on first use, restarted if it died; requests are serialised. The server
    runs in a session of its own and forks every trial into another one: a trial
    that overruns its deadline is killed with its process group, and the server
    stays warm.
    """

    def __init__(self, cwd: Path) -> None:
        self._cwd = cwd
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

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
            start_new_session=True,
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(_START_TIMEOUT):
                ready = await proc.stdout.readline()
        except BaseException:
            await _kill(proc)
            raise
        if ready.strip() != b"ready":
            await _kill(proc)
            raise OSError(f"the trial-import server did not start (said {ready[:200]!r})")
        self._proc = proc
        return proc

    async def trial(
        self, site: Path, entry: str, limits: TrialLimits = DEFAULT_LIMITS
    ) -> dict[str, Any]:
        """Trial-import ``entry`` (``NAME=module:attr``) with ``site`` first on the path."""
        async with self._lock:
            try:
                proc = await self._ensure()
            except OSError as exc:
                return _failure(f"cannot start the trial-import server: {exc}")
            assert proc.stdin is not None
            assert proc.stdout is not None
            marker = uuid.uuid4().hex
            request = {
                "site": str(site),
                "entry": entry,
                "limits": limits.to_json(),
                "marker": marker,
            }
            child: int | None = None
            try:
                async with asyncio.timeout(limits.deadline):
                    proc.stdin.write((json.dumps(request) + "\n").encode())
                    await proc.stdin.drain()
                    started = await proc.stdout.readline()
                    child = int(json.loads(started)["pid"]) if started else None
                    line = await proc.stdout.readline() if started else b""
            except TimeoutError:
                await self._abandon(proc, child, marker)
                return deadline_failure(limits)
            except (BrokenPipeError, ConnectionResetError) as exc:
                await _kill(proc)
                return _failure(f"the trial-import server went away: {exc}")
            except (ValueError, KeyError, TypeError) as exc:
                await _kill(proc)
                return _failure(f"the trial-import server said something odd: {exc}")
            except BaseException:
                await self._abandon(proc, child, marker)
                raise
            if not line:
                await _kill(proc)
                return _failure("the trial-import server went away")
            result: dict[str, Any] = json.loads(line)
            return result

    async def _abandon(
        self, proc: asyncio.subprocess.Process, child: int | None, marker: str
    ) -> None:
        """Kill an overrunning trial's group; keep the server if it answers at once."""
        if child is None:
            await _kill(proc)
            return
        kill_trial(child, marker)
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(_REAP_TIMEOUT):
                await proc.stdout.readline()  # the server's "crashed (SIGKILL)" answer
        except (TimeoutError, OSError):
            await _kill(proc)

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


_START_TIMEOUT = 60.0
"""Seconds the trial server may take to start (interpreter start-up on a busy machine)."""


class ForkTrialRunner:
    """Trials in children forked from a warm :class:`TrialServer` (``kind = "fork"``).

    Args:
        work_dir: the server's working directory (the state directory's ``tmp``).
    """

    kind: TrialKind = "fork"

    def __init__(self, work_dir: Path, limits: TrialLimits = DEFAULT_LIMITS) -> None:
        self._server = TrialServer(work_dir)
        self._limits = limits
        self._warming: asyncio.Task[None] | None = None

    @property
    def server_pid(self) -> int | None:
        """The warm server's pid while it runs (a child of the host's, not a plugin's)."""
        return self._server.pid

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
        entry = f"{binary_id}={entry_point}"
        answer = await self._server.trial(generation.site_packages, entry, self._limits)
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

    def __init__(self, work_dir: Path, limits: TrialLimits = DEFAULT_LIMITS) -> None:
        self._work_dir = work_dir
        self._limits = limits

    def start(self) -> None:
        """Nothing to warm: every trial starts its own interpreter."""

    async def trial(self, generation: Generation, binary_id: str, entry_point: str) -> TrialResult:
        entry = f"{binary_id}={entry_point}"
        return TrialResult.from_json(
            await trial_in_subprocess(generation.python, self._work_dir, entry, self._limits)
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


def trial_runner(
    kind: TrialKind, work_dir: Path, limits: TrialLimits = DEFAULT_LIMITS
) -> TrialRunner:
    """The runner of ``kind``, with ``work_dir`` as its children's working directory.

    Raises:
        ValueError: ``kind`` is not one of :data:`TrialKind`.
    """
    if kind == "fork":
        return ForkTrialRunner(work_dir, limits)
    if kind == "subprocess":
        return SubprocessTrialRunner(work_dir, limits)
    if kind == "none":
        return NoTrialRunner()
    raise ValueError(f"unknown trial kind {kind!r}; expected one of {', '.join(TRIAL_KINDS)}")


def default_trial_runner(work_dir: Path, limits: TrialLimits = DEFAULT_LIMITS) -> TrialRunner:
    """The runner of :data:`DEFAULT_TRIAL_KIND` (fork where ``os.fork`` exists)."""
    return trial_runner(DEFAULT_TRIAL_KIND, work_dir, limits)
