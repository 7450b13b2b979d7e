"""``cbus daemon`` with a control socket, for the hostile-input corpus.

Runs exactly what ``cbus daemon`` runs (:func:`run_daemon_process`: signals, grace
period, exit status) plus one thing a test needs from outside: a Unix socket that
answers ``hello NAME`` with the bus's answer to the host-owned ``Hello`` directive
(a JSON line ``{"text": ..., "responder": ...}``; ``text`` is null when no plugin
answers), and ``ping`` with ``pong``.

Usage: ``python driver.py --control SOCKET [cbus daemon options...]``
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import click

from controllerbus.api.hello import Hello, HelloReply
from controllerbus.bus.bus import Bus
from controllerbus.bus.helpers import exec_one_off
from controllerbus.bus.protocols import Factory
from controllerbus.cli import lifecycle
from controllerbus.cli import main as cli_main
from controllerbus.daemon import DaemonOptions, DaemonSession


async def _answer(session: DaemonSession, line: str) -> dict[str, object]:
    command, _, arg = line.strip().partition(" ")
    if command == "ping":
        return {"pong": True}
    if command == "hello":
        async with asyncio.timeout(5):
            value, ref = await exec_one_off(session.bus, Hello(arg), return_if_idle=True)
        try:
            reply = value.value if value is not None else None
        finally:
            if ref is not None:
                ref.release()
        if isinstance(reply, HelloReply):
            return {"text": reply.text, "responder": reply.responder}
        return {"text": None}
    return {"error": f"unknown command {command!r}"}


def control_hook(path: Path) -> lifecycle.SessionHook:
    """A session hook serving the control socket at ``path``."""

    async def serve(session: DaemonSession) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                line = (await reader.readline()).decode()
                try:
                    answer = await _answer(session, line)
                except Exception as exc:  # report, never crash the daemon
                    answer = {"error": f"{type(exc).__name__}: {exc}"}
                writer.write((json.dumps(answer) + "\n").encode())
                await writer.drain()
            finally:
                writer.close()

        server = await asyncio.start_unix_server(handle, str(path))
        async with server:
            await server.serve_forever()

    return serve


def main() -> None:
    args = sys.argv[1:]
    if len(args) < 2 or args[0] != "--control":
        raise SystemExit("usage: driver.py --control SOCKET [cbus daemon options...]")
    control = Path(args[1])
    real = lifecycle.run_daemon_process

    def with_control(
        options: DaemonOptions,
        *,
        grace: float = lifecycle.DEFAULT_GRACE,
        hook: lifecycle.SessionHook | None = None,
        factories: Iterable[Factory | Callable[[Bus], Factory]] = (),
    ) -> int:
        return real(options, grace=grace, hook=control_hook(control), factories=factories)

    # cbus daemon looks the function up when it runs: the same daemon, plus the socket.
    lifecycle.run_daemon_process = with_control
    cli = cli_main.cli
    assert isinstance(cli, click.Group)
    cli.main(["daemon", *args[2:]], prog_name="cbus")


if __name__ == "__main__":
    main()
