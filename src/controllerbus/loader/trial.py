"""Trial imports of a new generation, out of process, before a reload switches to it.

Two ways, both running :mod:`controllerbus.loader.probe`:

* :func:`trial_in_subprocess`: a fresh interpreter of the generation's own venv, the
  full "this generation can run on its own" check; ~0.4 s (interpreter start-up and
  importing the bus dominate).
* :class:`TrialServer`: one warm interpreter of the host that has the bus imported
  and forks a child per trial; milliseconds plus the plugin's own import time.

Each trial runs in a session (process group) of its own under the
:class:`~controllerbus.loader.sandbox.TrialLimits`; at its deadline the whole group is
killed, so nothing it started survives and nothing waits on its pipes.

Both return the probe's JSON result: ``{"ok": true, ...}`` or ``{"ok": false,
"error": ...}``; transport failures come back as ``ok: false`` too.
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
from pathlib import Path
from typing import Any

from controllerbus.loader.sandbox import (
    DEFAULT_LIMITS,
    TRIAL_MARKER_ENV,
    TrialLimits,
    describe_status,
    kill_group,
    kill_trial,
)

__all__ = ["TrialServer", "trial_in_subprocess"]

logger = logging.getLogger(__name__)

_REAP_TIMEOUT = 2.0
"""Seconds to wait for a killed process to be reaped before its pipes are closed."""


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
    """Run the probe for ``entry`` (``NAME=module:attr``) with interpreter ``python``.

    Output goes to files, not pipes, so a process the plugin started cannot keep the
    parent waiting; the trial's process group is killed when it ends or overruns.
    """
    marker = uuid.uuid4().hex
    with tempfile.TemporaryFile(dir=cwd) as out, tempfile.TemporaryFile(dir=cwd) as err:
        proc = await asyncio.create_subprocess_exec(
            str(python),
            "-m",
            "controllerbus.loader.probe",
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
    """A warm, forking trial-import server (``python -m controllerbus.loader.probe --serve``).

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
            "controllerbus.loader.probe",
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
