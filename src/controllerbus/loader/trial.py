"""Trial imports of a new generation, out of process, before a reload switches to it.

Two ways, both running :mod:`controllerbus.loader.probe`:

* :func:`trial_in_subprocess`: a fresh interpreter of the generation's own venv, the
  full "this generation can run on its own" check; ~0.4 s (interpreter start-up and
  importing the bus dominate).
* :class:`TrialServer`: one warm interpreter of the host that has the bus imported
  and forks a child per trial; milliseconds plus the plugin's own import time.

Both return the probe's JSON result: ``{"ok": true, ...}`` or ``{"ok": false,
"error": ...}``; transport failures come back as ``ok: false`` too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["TrialServer", "trial_in_subprocess"]

logger = logging.getLogger(__name__)

TRIAL_TIMEOUT = 60.0
"""Seconds a trial import may take before it counts as failed (and is killed)."""


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
    """Run the probe for ``entry`` (``NAME=module:attr``) with interpreter ``python``."""
    proc = await asyncio.create_subprocess_exec(
        str(python),
        "-m",
        "controllerbus.loader.probe",
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
    """A warm, forking trial-import server (``python -m controllerbus.loader.probe --serve``).

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
            "controllerbus.loader.probe",
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
