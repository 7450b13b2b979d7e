"""The plugin child process: ``python -m controllerbus.ipc.child``.

Run by the generation's own interpreter (``<generation>/bin/python``), so the
plugin imports its own dependency versions. It imports the plugin's entry point,
runs a bus (:func:`controllerbus.core.new_core_bus`) with the plugin's factories and
serves the host over the inherited socket (``--fd``):

* ``load-controller`` → ``LoadControllerWithConfig`` on the child bus, state back;
* directives in both directions through :class:`~controllerbus.ipc.bridge.Bridge`;
* ``heartbeat`` → answered at once.

No orphans: on Linux the child asks the kernel for ``SIGKILL`` when its parent dies
(``prctl(PR_SET_PDEATHSIG)``), and checks the parent did not die before that call;
everywhere, the end of the socket (the host closed it or died) ends the child.

Warm spare (``--spare``, no ``--entry-point``): the child does its heavy imports
(pydantic, the bus, this package) and says ``hello`` listing the packages it has
imported, then waits, bound to no generation, until the host sends ``assign``:
the plugin's entry point and its generation's site-packages, which go first on
``sys.path`` (their ``.pth`` files processed, except the one that adds the host's
site directories, which the spare already has). From there it is the same child.
Nothing of the plugin is imported before ``assign``.

Exit codes: 0 host closed the connection, 2 the plugin could not be loaded, 3 the
host sent something invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import importlib
import logging
import os
import signal
import site
import socket
import sys
from collections.abc import Sequence
from typing import Any

from controllerbus.bus.bus import Bus
from controllerbus.bus.directives import ExecControllerValue, LoadControllerWithConfig
from controllerbus.bus.helpers import CallbackHandler
from controllerbus.bus.protocols import AttachedValue, DirectiveInstance, Factory, Reference
from controllerbus.ipc.bridge import Bridge, ForwardController
from controllerbus.ipc.codec import Codec
from controllerbus.ipc.messages import (
    PROTOCOL_VERSION,
    Assign,
    ControllerState,
    Error,
    FactoryInfo,
    Heartbeat,
    Hello,
    LoadController,
    Message,
    Ready,
    Release,
)
from controllerbus.ipc.transport import (
    DEFAULT_MAX_FRAME,
    Connection,
    ConnectionClosed,
    IPCError,
    ProtocolError,
    open_connection,
)

__all__ = ["add_site_dirs", "main", "preloaded_packages", "serve_spare", "set_parent_death_signal"]

logger = logging.getLogger("controllerbus.ipc.child")

_PR_SET_PDEATHSIG = 1
CHILD_FORWARD_ID = "controllerbus/ipc/child-forward/1"


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _load_plugin(entry_point: str) -> Any:
    module_name, _, attr = entry_point.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    missing = [n for n in ("binary_id", "binary_version", "factories") if not hasattr(obj, n)]
    if obj is None or missing:
        raise TypeError(
            f"{entry_point} is not a plugin object (missing {', '.join(missing) or 'object'})"
        )
    return obj


class _Child:
    def __init__(self, conn: Connection, bus: Bus, factories: dict[str, Factory]) -> None:
        self.conn = conn
        self.bus = bus
        self.factories = factories
        self.controllers: dict[int, Reference] = {}
        self.bridge = Bridge(bus, conn, Codec(allow_import=True), name="host")

    def send(self, message: Any) -> None:
        self.bridge.send(message)

    def load_controller(self, msg: LoadController) -> None:
        factory = self.factories.get(msg.config_id)
        if factory is None:
            self.send(
                ControllerState(
                    id=msg.id, state="error", error=f"no factory for config id {msg.config_id}"
                )
            )
            return
        try:
            config = type(factory.construct_config()).model_validate(msg.config)
            config.validate_config()
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.send(ControllerState(id=msg.id, state="error", error=f"invalid config: {text}"))
            return

        def added(_inst: DirectiveInstance, av: AttachedValue) -> None:
            value = av.value
            if not isinstance(value, ExecControllerValue) or msg.id not in self.controllers:
                return
            if value.error is not None:
                self.send(ControllerState(id=msg.id, state="error", error=str(value.error)))
            elif value.controller is not None:
                self.send(ControllerState(id=msg.id, state="running"))

        _inst, ref = self.bus.add_directive(
            LoadControllerWithConfig(config), CallbackHandler(on_added=added)
        )
        self.controllers[msg.id] = ref
        for av in _inst.get_values():  # joined an existing instance: state now
            added(_inst, av)

    def on_message(self, msg: Message) -> None:
        """One message from the host, handled in the callback that read it."""
        try:
            self._on_message(msg)
        except ProtocolError as exc:
            with contextlib.suppress(Exception):
                self.conn.send_nowait(Error(message=str(exc)))  # flushed by the close
            raise

    def _on_message(self, msg: Message) -> None:
        if isinstance(msg, Heartbeat):
            self.send(Heartbeat(seq=msg.seq, ack=True))
        elif isinstance(msg, LoadController):
            self.load_controller(msg)
        elif isinstance(msg, Release) and msg.what == "controller":
            ref = self.controllers.pop(msg.id, None)
            if ref is not None:
                ref.release()
        elif isinstance(msg, Error):
            logger.error("host closed the connection: %s", msg.message)
            self.conn.close(msg.message)
        elif not self.bridge.dispatch(msg):
            raise ProtocolError(f"unexpected {msg.kind!r} message from the host")

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        failed: asyncio.Future[IPCError] = loop.create_future()

        def on_failure(exc: IPCError) -> None:
            if not failed.done():
                failed.set_result(exc)

        self.conn.set_handler(self.on_message, on_failure)
        exc = await failed
        if isinstance(exc, ProtocolError):
            logger.error("%s", exc)
            # The connection is closed already: the peer sees the end of the stream.
            return 3
        return 0


async def serve(sock: socket.socket, entry_point: str, *, max_frame: int) -> int:
    """Serve the host over ``sock`` until it closes; return the exit code."""
    conn = await open_connection(sock, name="host", max_frame=max_frame)
    await conn.send(Hello(protocol=PROTOCOL_VERSION, pid=os.getpid()))
    return await _serve_plugin(conn, entry_point)


def preloaded_packages() -> list[str]:
    """The top-level non-stdlib packages imported in this process."""
    names = {name.partition(".")[0] for name in list(sys.modules)}
    return sorted(n for n in names if n not in sys.stdlib_module_names and not n.startswith("_"))


def add_site_dirs(site_dirs: Sequence[str], skip_pth: Sequence[str]) -> None:
    """Put ``site_dirs`` first on ``sys.path`` and process their ``.pth`` files.

    What a generation's interpreter does at start-up for its own site-packages
    (``site.addsitedir``), less the ``.pth`` files in ``skip_pth``.
    """
    for directory in reversed(site_dirs):
        if directory not in sys.path:
            sys.path.insert(0, directory)
    known = {os.path.normcase(os.path.abspath(p)) for p in sys.path if p}
    for directory in site_dirs:
        try:
            names = sorted(n for n in os.listdir(directory) if n.endswith(".pth"))
        except OSError:
            continue
        for name in names:
            if name not in skip_pth:
                site.addpackage(directory, name, known)


async def serve_spare(sock: socket.socket, *, max_frame: int) -> int:
    """Warm spare: say hello, wait for ``assign``, then serve that plugin."""
    from controllerbus.core import new_core_bus  # noqa: F401  (the heavy imports, now)

    gc.collect()
    gc.freeze()  # start-up objects: never scanned again by the collector
    conn = await open_connection(sock, name="host", max_frame=max_frame)
    await conn.send(
        Hello(protocol=PROTOCOL_VERSION, pid=os.getpid(), preloaded=preloaded_packages())
    )
    try:
        msg = await conn.recv()
    except ConnectionClosed:
        return 0  # never needed: the host closed the pool
    except ProtocolError as exc:
        logger.error("%s", exc)
        return 3
    if not isinstance(msg, Assign):
        logger.error("expected assign from the host, got %r", msg.kind)
        await conn.aclose()
        return 3
    conn.max_frame = msg.max_frame
    add_site_dirs(msg.site_dirs, msg.skip_pth)
    for entry in reversed(msg.paths):
        sys.path.insert(0, entry)
    return await _serve_plugin(conn, msg.entry_point)


async def _serve_plugin(conn: Connection, entry_point: str) -> int:
    from controllerbus.core import new_core_bus

    bus, static = new_core_bus()
    plugin: Any = None
    try:
        try:
            plugin = _load_plugin(entry_point)
            factories = list(plugin.factories(bus))
        except (Exception, SystemExit) as exc:
            where = f"{type(exc).__name__}: {exc}".strip()
            await conn.send(Error(message=f"could not load plugin {entry_point}: {where}"))
            return 2
        by_id: dict[str, Factory] = {}
        for factory in factories:
            static.add_factory(factory)
            by_id[factory.config_id()] = factory
        child = _Child(conn, bus, by_id)
        bus.run_controller(ForwardController(child.bridge, CHILD_FORWARD_ID))
        await conn.send(
            Ready(
                binary_id=str(plugin.binary_id),
                binary_version=str(plugin.binary_version),
                factories=[
                    FactoryInfo(
                        config_id=f.config_id(),
                        controller_id=f.controller_id(),
                        version=f.version(),
                    )
                    for f in factories
                ],
            )
        )
        return await child.serve()
    finally:
        if plugin is not None and hasattr(plugin, "pre_unload"):
            with contextlib.suppress(Exception):
                plugin.pre_unload()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await bus.aclose()
        await conn.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m controllerbus.ipc.child",
        description="Serve one controllerbus plugin to its host over an inherited socket.",
    )
    parser.add_argument("--fd", type=int, required=True, help="inherited socket descriptor")
    parser.add_argument("--entry-point", help="plugin object, module:attr")
    parser.add_argument(
        "--spare", action="store_true", help="warm spare: wait for the host to assign a plugin"
    )
    parser.add_argument("--parent-pid", type=int, default=0, help="exit if the parent is gone")
    parser.add_argument("--path", action="append", default=[], help="prepend to sys.path")
    parser.add_argument("--max-frame", type=int, default=DEFAULT_MAX_FRAME)
    args = parser.parse_args(argv)
    if not args.spare and not args.entry_point:
        parser.error("--entry-point is required (or --spare)")
    set_parent_death_signal()
    if args.parent_pid and os.getppid() != args.parent_pid:
        return 0  # the parent died before the death signal was armed
    logging.basicConfig(
        level=os.environ.get("CBUS_CHILD_LOG", "WARNING").upper(),
        format=f"[plugin pid {os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    for entry in reversed(args.path):
        sys.path.insert(0, entry)
    sock = socket.socket(fileno=args.fd)
    if args.spare:
        return asyncio.run(serve_spare(sock, max_frame=args.max_frame))
    return asyncio.run(serve(sock, args.entry_point, max_frame=args.max_frame))


if __name__ == "__main__":
    sys.exit(main())
