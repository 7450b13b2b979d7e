"""Warm spare children: a plugin child whose start-up is already paid for.

Most of a process plugin's start is the interpreter and its heavy imports
(pydantic, the bus, :mod:`controllerbus.ipc`), none of which depend on the
plugin. A :class:`SparePool` keeps one child of the host's base interpreter that
has done them and said ``hello``, bound to no generation; a (re)load hands it the
generation's site-packages and entry point (``assign``, see
:mod:`controllerbus.ipc.child`), and the pool starts the next spare in the
background once that child is ready.

The generation's code is still imported only in the child, after ``assign``: its
start stays the reload's trial. A spare is used only where it is the same as a
fresh child of the generation's interpreter (:meth:`SparePool.unfit`): the same
base interpreter, the default environment, and no package of the generation that
the spare has already imported (a plugin with its own ``pydantic`` gets a fresh
child). Differences that remain: ``sys.prefix`` and ``sys.executable`` name the
host's environment, not the generation's.

No orphans, as for every child: parent-death signal and end of socket; a spare
is its own process group, and a spare that does not get ready within
``ready_timeout`` or that the pool closes is killed with its group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from controllerbus.ipc.messages import PROTOCOL_VERSION, Hello
from controllerbus.ipc.transport import (
    DEFAULT_MAX_FRAME,
    Connection,
    IPCError,
    open_connection,
    socketpair,
)

__all__ = ["Spare", "SparePool", "WarmSite", "kill_process_group", "top_level_names"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WarmSite:
    """What a spare needs to become a generation's child."""

    site_packages: str
    """The generation's site-packages (first on ``sys.path``, ``.pth`` processed)."""
    skip_pth: tuple[str, ...] = ()
    """``.pth`` files of it the spare must not process (the host-site one)."""


@dataclass(eq=False, slots=True)
class Spare:
    """A ready spare: its process, its connection, what it has imported."""

    proc: asyncio.subprocess.Process
    conn: Connection
    preloaded: frozenset[str]


def kill_process_group(proc: asyncio.subprocess.Process) -> None:
    """``SIGKILL`` ``proc`` and its process group (it leads one); gone already: fine."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def top_level_names(site_packages: str) -> set[str]:
    """The importable top-level names a site directory provides."""
    try:
        entries = os.listdir(site_packages)
    except OSError:
        return set()
    names = set()
    for entry in entries:
        if entry.endswith((".dist-info", ".egg-info", ".pth")) or entry == "__pycache__":
            continue
        names.add(entry.partition(".")[0])
    return names


class SparePool:
    """At most one warm spare child of ``python``, refilled in the background.

    Args:
        python: the spare's interpreter (the host's own by default).
        ready_timeout: a spare not ready (``hello``) within this is killed.
    """

    def __init__(self, python: str | Path = sys.executable, *, ready_timeout: float = 30.0) -> None:
        self.python = str(python)
        self.ready_timeout = ready_timeout
        self._spare: Spare | None = None
        self._starting: asyncio.Task[Spare | None] | None = None
        self._closed = False
        self._disabled: str | None = None
        self.handed_out = 0
        """How many spares became plugin children (benchmarks, tests)."""

    def unfit(
        self, python: str | Path, env: Mapping[str, str] | None, site: WarmSite | None
    ) -> str | None:
        """Why a spare cannot stand in for a fresh child of ``python`` (``None``: it can)."""
        if self._closed:
            return "the pool is closed"
        if self._disabled is not None:
            return self._disabled
        if site is None:
            return "no generation site-packages"
        if env is not None:
            return "the plugin has its own environment"
        if os.path.realpath(python) != os.path.realpath(self.python):
            return f"{python} is not the spare's interpreter {self.python}"
        return None

    async def take(
        self, python: str | Path, env: Mapping[str, str] | None, site: WarmSite | None
    ) -> Spare | None:
        """A ready spare for a child of ``python`` serving ``site``, or ``None``.

        Waits for a spare that is still starting (it started earlier than a fresh
        child would). Never raises for a spare that failed: the caller starts a
        fresh child instead.
        """
        if self.unfit(python, env, site) is not None:
            return None
        assert site is not None
        if self._spare is None and self._starting is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._starting)
        spare = self._spare
        if spare is None:
            return None
        if spare.proc.returncode is not None or spare.conn.closed:
            self._spare = None
            await self._discard(spare)
            return None
        clash = spare.preloaded & top_level_names(site.site_packages)
        if clash:
            logger.info(
                "warm spare not used: the generation has its own %s", ", ".join(sorted(clash))
            )
            return None  # stays for the next plugin
        self._spare = None
        self.handed_out += 1
        return spare

    def refill(self) -> None:
        """Start a new spare in the background unless one is ready or starting."""
        if self._closed or self._disabled is not None:
            return
        if self._spare is not None or (self._starting is not None and not self._starting.done()):
            return
        self._starting = asyncio.create_task(self._start(), name="warm spare")

    async def wait_ready(self) -> bool:
        """Wait for a spare being started; whether one is ready (benchmarks)."""
        if self._starting is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._starting)
        return self._spare is not None

    async def _start(self) -> Spare | None:
        parent, child = socketpair()
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        creating = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                self.python,
                "-m",
                "controllerbus.ipc.child",
                "--spare",
                "--fd",
                str(child.fileno()),
                "--parent-pid",
                str(os.getpid()),
                "--max-frame",
                str(DEFAULT_MAX_FRAME),
                pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own group: one killpg ends what it started
            )
        )
        try:
            # Shielded: a close() arriving mid-spawn must still find (and end) the child.
            proc = await asyncio.shield(creating)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                kill_process_group(started := await creating)
                await started.wait()
            parent.close()
            raise
        except OSError as exc:
            parent.close()
            self._disable(f"cannot start a warm spare with {self.python}: {exc}")
            return None
        finally:
            child.close()
        conn: Connection | None = None
        try:
            async with asyncio.timeout(self.ready_timeout):
                conn = await open_connection(parent, name="warm spare")
                hello = await conn.recv()
            if not isinstance(hello, Hello) or hello.protocol != PROTOCOL_VERSION:
                raise IPCError(f"expected hello (protocol {PROTOCOL_VERSION}), got {hello.kind}")
        except (TimeoutError, IPCError, OSError) as exc:
            what = "not ready in time" if isinstance(exc, TimeoutError) else str(exc)
            kill_process_group(proc)
            if conn is not None:
                conn.close()
            else:
                parent.close()
            await proc.wait()
            self._disable(f"warm spare failed: {what}")
            return None
        except BaseException:
            kill_process_group(proc)
            if conn is not None:
                conn.close()
            else:
                parent.close()
            await asyncio.shield(proc.wait())
            raise
        spare = Spare(proc, conn, frozenset(hello.preloaded))
        if self._closed:
            await self._discard(spare)
            return None
        self._spare = spare
        return spare

    def _disable(self, reason: str) -> None:
        logger.warning("%s; process plugins start fresh children", reason)
        self._disabled = reason

    async def _discard(self, spare: Spare) -> None:
        spare.conn.close("not needed")
        kill_process_group(spare.proc)
        await spare.proc.wait()

    async def aclose(self) -> None:
        """Stop the spare (and one being started); idempotent."""
        self._closed = True
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        spare, self._spare = self._spare, None
        if spare is not None:
            await self._discard(spare)

    def pids(self) -> Iterable[int]:
        """The spare's pid, if one is ready (tests)."""
        return [self._spare.proc.pid] if self._spare is not None else []
