"""Host side of a process plugin: spawn, proxy, supervise, restart.

:class:`ProcessPlugin` runs one plugin in a child process
(``<python> -m controllerbus.ipc.child``) and makes its controllers answer on the
host bus as if they were local:

* a :class:`~controllerbus.bus.resolver.ResolverController` over
  :class:`ProxyResolver` offers one :class:`ProxyFactory` per factory the child
  reported; constructing one gives a :class:`ProxyController` whose ``execute()``
  sends ``load-controller`` and runs until the host stops it (``release``) or the
  child reports an error (raised, so the host loader retries with its backoff);
* a :class:`~controllerbus.ipc.bridge.ForwardController` forwards host directives to
  the child and serves the child's directives on the host bus, with values.

Configs: the host may not have the plugin's config classes, so a config id the
child reported gets a :class:`RemoteConfig` subclass (fields kept as JSON); the
child validates it with the real class when it loads the controller.

Supervision: heartbeats every ``heartbeat_interval`` seconds; no answer within
``heartbeat_timeout`` (or the child exits, or sends a malformed message) ends the
session: the child is killed, the host-side controllers are removed (their
directives lose the child's values), and after a delay from the bus's
:class:`~controllerbus.bus.backoff.Backoff` a new child is started and the
controllers are added again, so every live directive is offered to it anew.
:attr:`ProcessPlugin.status` says why (``last_exit``) and how often (``restarts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict

from controllerbus.bus.backoff import Backoff, BackoffPolicy
from controllerbus.bus.bus import Bus
from controllerbus.bus.config import Config
from controllerbus.bus.executor import ControllerFailed
from controllerbus.bus.protocols import (
    ConfigConstructor,
    ConstructOpts,
    Controller,
    ControllerInfo,
    DirectiveInstance,
    Factory,
    Resolver,
)
from controllerbus.bus.resolver import ResolverController
from controllerbus.errors import ControllerBusError
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
from controllerbus.ipc.spare import Spare, SparePool, WarmSite, kill_process_group
from controllerbus.ipc.transport import (
    DEFAULT_MAX_FRAME,
    Connection,
    ConnectionClosed,
    IPCError,
    ProtocolError,
    open_connection,
    socketpair,
)

__all__ = [
    "ProcessPlugin",
    "ProcessPluginError",
    "ProcessStatus",
    "ProxyController",
    "ProxyFactory",
    "ProxyResolver",
    "RemoteConfig",
    "remote_config_class",
]

logger = logging.getLogger(__name__)

State = Literal["starting", "serving", "restarting", "failed", "stopped"]


class ProcessPluginError(ControllerBusError):
    """A plugin child process could not be started or made ready."""


class RemoteConfig(Config):
    """A config of a process plugin's type: JSON fields, validated by the child."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    def to_json_dict(self) -> dict[str, Any]:
        return dict(self.__pydantic_extra__ or {})


_REMOTE_CONFIGS: dict[str, type[RemoteConfig]] = {}


def remote_config_class(config_id: str) -> type[RemoteConfig]:
    """The (cached) :class:`RemoteConfig` subclass of ``config_id``."""
    cls = _REMOTE_CONFIGS.get(config_id)
    if cls is None:
        name = "Remote_" + "".join(c if c.isalnum() else "_" for c in config_id)
        namespace: dict[str, Any] = {"CONFIG_ID": config_id, "__module__": __name__}
        namespace["__annotations__"] = {"CONFIG_ID": ClassVar[str]}
        cls = type(name, (RemoteConfig,), namespace)
        _REMOTE_CONFIGS[config_id] = cls
    return cls


def _config_json(config: Config) -> dict[str, Any]:
    if isinstance(config, RemoteConfig):
        return config.to_json_dict()
    return config.model_dump(mode="json", by_alias=True, exclude_defaults=True)


@dataclass
class ProcessStatus:
    """What the manifest shows of a process plugin."""

    isolation: str = "process"
    state: State = "starting"
    pid: int | None = None
    restarts: int = 0
    last_exit: str | None = None
    started_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "isolation": self.isolation,
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }


class ProxyController:
    """Host stand-in for one controller running in the child."""

    def __init__(self, plugin: ProcessPlugin, info: FactoryInfo, config: Config) -> None:
        self._plugin = plugin
        self._info = ControllerInfo(
            info.controller_id, info.version, f"process plugin {plugin.binary_id}"
        )
        self._config_id = info.config_id
        self._config = _config_json(config)

    def get_controller_info(self) -> ControllerInfo:
        return self._info

    async def execute(self) -> None:
        session = self._plugin.session
        if session is None:
            raise ControllerFailed(f"process plugin {self._plugin.binary_id} is not running")
        await session.run_controller(self._config_id, self._config)

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        return []

    def close(self) -> None:
        return None


class ProxyFactory:
    """Host stand-in for one factory of the child."""

    def __init__(self, plugin: ProcessPlugin, info: FactoryInfo) -> None:
        self._plugin = plugin
        self.info = info

    def __repr__(self) -> str:
        return f"<ProxyFactory {self.info.controller_id}@{self.info.version} (process)>"

    def config_id(self) -> str:
        return self.info.config_id

    def controller_id(self) -> str:
        return self.info.controller_id

    def construct_config(self) -> Config:
        return remote_config_class(self.info.config_id)()

    def construct(self, config: Config, opts: ConstructOpts) -> Controller:
        return ProxyController(self._plugin, self.info, config)

    def version(self) -> str:
        return self.info.version


class ProxyResolver:
    """A :class:`~controllerbus.bus.protocols.FactoryResolver` over the child's factories."""

    def __init__(self, plugin: ProcessPlugin, factories: Sequence[FactoryInfo]) -> None:
        self._plugin = plugin
        self.factories = {f.config_id: ProxyFactory(plugin, f) for f in factories}

    def resolver_id(self) -> str:
        return f"controllerbus/ipc/{self._plugin.binary_id}"

    def resolver_version(self) -> str:
        return "0.0.1"

    async def get_config_ctor_by_id(self, config_id: str) -> ConfigConstructor | None:
        if config_id not in self.factories:
            return None
        return ConfigConstructor(config_id, remote_config_class(config_id))

    async def get_factory_matching_config(self, config: Config) -> Factory | None:
        return self.factories.get(config.config_id())


class _Session:
    """One child process and its connection."""

    def __init__(
        self, plugin: ProcessPlugin, proc: asyncio.subprocess.Process, conn: Connection
    ) -> None:
        self.plugin = plugin
        self.proc = proc
        self.conn = conn
        self.bridge = Bridge(plugin.bus, conn, Codec(allow_import=False), name=plugin.name)
        self.bridge.on_fatal = self.end
        self.ready: Ready | None = None
        self.ended = asyncio.Event()
        self.reason: str | None = None
        self._controllers: dict[int, asyncio.Queue[ControllerState]] = {}
        self._last_ack = time.monotonic()
        self._seq = 0
        self._host_controllers: list[Controller] = []
        self._tasks: list[asyncio.Task[Any]] = []

    def end(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.ended.set()

    async def handshake(self, within: float, *, hello_seen: bool = False) -> Ready:
        try:
            async with asyncio.timeout(within):
                if not hello_seen:  # a warm spare said hello to its pool already
                    hello = await self.conn.recv()
                    if not isinstance(hello, Hello) or hello.protocol != PROTOCOL_VERSION:
                        raise ProtocolError(
                            f"expected hello (protocol {PROTOCOL_VERSION}), got {hello}"
                        )
                ready = await self.conn.recv()
        except TimeoutError:
            raise ProcessPluginError(
                f"{self.plugin.name}: child did not get ready within {within:g} s"
            ) from None
        except ConnectionClosed:
            code = await _wait_exit(self.proc, 5)
            raise ProcessPluginError(
                f"{self.plugin.name}: child exited before it was ready ({_exit_text(code)})"
            ) from None
        except ProtocolError as exc:
            raise ProcessPluginError(str(exc)) from None
        if isinstance(ready, Error):
            raise ProcessPluginError(f"{self.plugin.name}: {ready.message}")
        if not isinstance(ready, Ready):
            raise ProcessPluginError(f"{self.plugin.name}: expected ready, got {ready.kind!r}")
        self.ready = ready
        return ready

    def attach(self) -> None:
        """Put the proxies on the host bus and start reading and heartbeats."""
        bus = self.plugin.bus
        assert self.ready is not None
        resolver = ResolverController(bus, ProxyResolver(self.plugin, self.ready.factories))
        forward = ForwardController(
            self.bridge, f"controllerbus/ipc/forward/{self.plugin.binary_id}"
        )
        self._host_controllers = [resolver, forward]
        self._last_ack = time.monotonic()
        self._tasks = [
            bus.run_controller(resolver),
            bus.run_controller(forward),
            asyncio.create_task(self._read(), name=f"{self.plugin.name} reader"),
            asyncio.create_task(self._heartbeat(), name=f"{self.plugin.name} heartbeat"),
            asyncio.create_task(self._watch_exit(), name=f"{self.plugin.name} exit watch"),
        ]

    async def run_controller(self, config_id: str, config: dict[str, Any]) -> None:
        """Run one controller in the child until cancelled; raise if it fails there."""
        if self.ended.is_set():
            raise ControllerFailed(f"{self.plugin.name}: {self.reason}")
        n = self.bridge.next_id()
        states: asyncio.Queue[ControllerState] = asyncio.Queue()
        self._controllers[n] = states
        try:
            self.bridge.send(LoadController(id=n, config_id=config_id, config=config))
            while True:
                ended = asyncio.ensure_future(self.ended.wait())
                got = asyncio.ensure_future(states.get())
                try:
                    await asyncio.wait({ended, got}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    ended.cancel()
                    if not got.done():
                        got.cancel()
                if got.done() and not got.cancelled():
                    state = got.result()
                    if state.state == "error":
                        raise ControllerFailed(f"{config_id} in {self.plugin.name}: {state.error}")
                    continue
                raise ControllerFailed(f"{self.plugin.name}: {self.reason}")
        finally:
            if self._controllers.pop(n, None) is not None and not self.ended.is_set():
                self.bridge.send(Release(id=n, what="controller"))

    def _on_message(self, msg: Message) -> None:
        """One message from the child, handled in the callback that read it."""
        if isinstance(msg, Heartbeat) and msg.ack:
            self._last_ack = time.monotonic()
        elif isinstance(msg, ControllerState):
            queue = self._controllers.get(msg.id)
            if queue is not None:
                queue.put_nowait(msg)
        elif isinstance(msg, Error):
            self.end(f"child reported an error: {msg.message}")
            self.conn.close(self.reason)
        elif not self.bridge.dispatch(msg):
            raise ProtocolError(
                f"{self.plugin.name}: unexpected {msg.kind!r} message from the child"
            )

    async def _read(self) -> None:
        """Dispatch the child's messages until the connection ends; say why it ended."""
        loop = asyncio.get_running_loop()
        failed: asyncio.Future[IPCError] = loop.create_future()

        def on_failure(exc: IPCError) -> None:
            if not failed.done():
                failed.set_result(exc)

        self.conn.set_handler(self._on_message, on_failure)
        exc = await failed
        if self.ended.is_set():
            return
        if isinstance(exc, ProtocolError):
            logger.error("refused a message from the child: %s", exc)
            self.end(f"malformed message from the child: {exc}")
            return
        # The socket usually ends because the child died: say how it died.
        code = await _wait_exit(self.proc, 1.0)
        self.end(f"child exited ({_exit_text(code)})" if code is not None else str(exc))

    async def _heartbeat(self) -> None:
        plugin = self.plugin
        while True:
            await asyncio.sleep(plugin.heartbeat_interval)
            if time.monotonic() - self._last_ack > plugin.heartbeat_timeout:
                self.end(f"missed heartbeats: no answer for {plugin.heartbeat_timeout:g} s")
                return
            self._seq += 1
            self.bridge.send(Heartbeat(seq=self._seq))

    async def _watch_exit(self) -> None:
        code = await self.proc.wait()
        await asyncio.sleep(0.05)  # let the reader report a protocol error first
        self.end(f"child exited ({_exit_text(code)})")

    async def detach(self) -> None:
        """Remove the proxies from the bus, close the connection, stop the child."""
        bus = self.plugin.bus
        pending: list[asyncio.Task[Any]] = []
        for ctrl in self._host_controllers:
            pending.extend(bus.remove_controller(ctrl))
            with contextlib.suppress(Exception):
                ctrl.close()
        self.bridge.close()
        for task in self._tasks:
            task.cancel()
        pending.extend(self._tasks)
        self.conn.close(self.reason)
        await _stop_process(self.proc, grace=self.plugin.stop_grace)
        if pending:
            await asyncio.wait(pending, timeout=5)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit code {code}"


async def _wait_exit(proc: asyncio.subprocess.Process, within: float) -> int | None:
    try:
        async with asyncio.timeout(within):
            return await proc.wait()
    except TimeoutError:
        return None


async def _stop_process(proc: asyncio.subprocess.Process, *, grace: float) -> None:
    if proc.returncode is not None:
        return
    # Closing the socket already tells the child to exit; give it ``grace`` seconds.
    if await _wait_exit(proc, grace) is not None:
        return
    if _leads_group(proc.pid):  # a warm spare: its group goes with it
        kill_process_group(proc)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


@dataclass
class ProcessPlugin:
    """One plugin running in a child process, with its proxies on ``bus``.

    Args:
        bus: the host bus.
        binary_id: the plugin's id (shown in logs and the manifest).
        python: the interpreter to run (a generation's ``bin/python``).
        entry_point: the plugin object, ``module:attr``.
        sys_path: extra ``sys.path`` entries for the child (tests; a generation's
            interpreter already has its site-packages).
        on_change: called after every status change (the manifest hook).
        warm_site: the generation's site-packages, which lets a warm spare of
            ``spares`` stand in for a fresh child of ``python`` (see
            :mod:`controllerbus.ipc.spare`).
        spares: the pool of warm spares (``None``: always a fresh child).
    """

    bus: Bus
    binary_id: str
    python: Path | str
    entry_point: str
    sys_path: Sequence[str] = ()
    env: Mapping[str, str] | None = None
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 5.0
    ready_timeout: float = 30.0
    stop_grace: float = 2.0
    max_frame: int = DEFAULT_MAX_FRAME
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    stable_after: float = 10.0
    on_change: Callable[[ProcessPlugin], None] | None = None
    warm_site: WarmSite | None = None
    spares: SparePool | None = None
    status: ProcessStatus = field(default_factory=ProcessStatus)
    session: _Session | None = field(default=None, init=False)
    _supervisor: asyncio.Task[None] | None = field(default=None, init=False)
    _detaching: asyncio.Future[None] | None = field(default=None, init=False)
    _prepared: _Session | None = field(default=None, init=False)
    ready: Ready | None = field(default=None, init=False)

    @property
    def name(self) -> str:
        pid = self.status.pid
        return f"process plugin {self.binary_id}" + (f" (pid {pid})" if pid else "")

    @property
    def binary_version(self) -> str:
        """The version the child reported ("" before the first ready)."""
        return self.ready.binary_version if self.ready is not None else ""

    @property
    def factories(self) -> list[FactoryInfo]:
        """The factories the child reported."""
        return list(self.ready.factories) if self.ready is not None else []

    def _changed(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.status, key, value)
        if self.on_change is not None:
            try:
                self.on_change(self)
            except Exception:
                logger.exception("%s: status hook failed", self.name)

    async def start(self) -> Ready:
        """Start the child and wait until it serves; then supervise it.

        Raises:
            ProcessPluginError: the child failed to start or to load the plugin
                (nothing is left running).
        """
        ready = await self.prepare()
        self.begin()
        return ready

    async def prepare(self) -> Ready:
        """Start the child and wait until it is ready, without touching the bus yet.

        A reload prepares the new child while the old one still serves: a plugin
        that fails to import never gets past this point.

        Raises:
            ProcessPluginError: as :meth:`start`.
        """
        self._prepared = await self._spawn(attach=False)
        assert self._prepared.ready is not None
        return self._prepared.ready

    def begin(self) -> None:
        """Put a prepared child's proxies on the bus and start supervising it."""
        session, self._prepared = self._prepared, None
        assert session is not None, "begin() without prepare()"
        self.session = session
        session.attach()
        self._changed(state="serving", pid=session.proc.pid, started_at=time.monotonic())
        self._supervisor = asyncio.create_task(
            self._supervise(session), name=f"supervise {self.binary_id}"
        )

    async def _spawn(self, *, attach: bool = True) -> _Session:
        self._changed(state="starting")
        spare: Spare | None = None
        if self.spares is not None:
            spare = await self.spares.take(self.python, self.env, self.warm_site)
        if spare is not None:
            proc, conn = spare.proc, spare.conn
            self.status.pid = proc.pid
            conn.name = f"plugin {self.binary_id}"
            conn.max_frame = self.max_frame
        else:
            proc, conn = await self._start_fresh()
        session = _Session(self, proc, conn)
        try:
            if spare is not None:
                site = self.warm_site
                assert site is not None
                await conn.send(
                    Assign(
                        entry_point=self.entry_point,
                        site_dirs=[site.site_packages],
                        skip_pth=list(site.skip_pth),
                        paths=[str(p) for p in self.sys_path],
                        max_frame=self.max_frame,
                    )
                )
            await session.handshake(self.ready_timeout, hello_seen=spare is not None)
        except BaseException:
            session.end("failed to start")
            await asyncio.shield(session.detach())
            self._changed(state="failed", pid=None)
            raise
        finally:
            if self.spares is not None:
                self.spares.refill()  # the next spare starts once this child is up
        self.ready = session.ready
        if attach:
            self.session = session
            session.attach()
            self._changed(state="serving", pid=proc.pid, started_at=time.monotonic())
        return session

    async def _start_fresh(self) -> tuple[asyncio.subprocess.Process, Connection]:
        """A new child of ``python`` for this plugin, connected (hello not yet read)."""
        parent, child = socketpair()
        args = [
            "-m",
            "controllerbus.ipc.child",
            "--fd",
            str(child.fileno()),
            "--entry-point",
            self.entry_point,
            "--parent-pid",
            str(os.getpid()),
            "--max-frame",
            str(self.max_frame),
        ]
        for entry in self.sys_path:
            args += ["--path", str(entry)]
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        creating = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                str(self.python),
                *args,
                pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
            )
        )
        try:
            # Shielded: a stop() arriving mid-spawn must still find (and end) the child.
            proc = await asyncio.shield(creating)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                started = await creating
                started.kill()
                await started.wait()
            parent.close()
            raise
        except OSError as exc:
            parent.close()
            raise ProcessPluginError(f"cannot start {self.python}: {exc}") from None
        finally:
            child.close()
        self.status.pid = proc.pid
        try:
            conn = await open_connection(
                parent, name=f"plugin {self.binary_id}", max_frame=self.max_frame
            )
        except BaseException:
            parent.close()
            proc.kill()
            await asyncio.shield(proc.wait())
            raise
        return proc, conn

    async def _supervise(self, session: _Session) -> None:
        backoff = Backoff(self.backoff)
        while True:
            await session.ended.wait()
            reason = session.reason or "connection ended"
            uptime = time.monotonic() - (self.status.started_at or time.monotonic())
            logger.warning("%s: %s; restarting", self.name, reason)
            self.session = None
            self._detaching = asyncio.ensure_future(session.detach())
            await asyncio.shield(self._detaching)
            if uptime >= self.stable_after:
                backoff.reset()
            while True:
                delay = backoff.next_delay()
                if delay is None:
                    self._changed(
                        state="failed", pid=None, last_exit=f"{reason}; backoff timeout exceeded"
                    )
                    logger.error("%s: giving up: backoff timeout exceeded", self.name)
                    return
                self._changed(state="restarting", pid=None, last_exit=reason)
                await asyncio.sleep(delay)
                try:
                    session = await self._spawn()
                except ProcessPluginError as exc:
                    reason = str(exc)
                    continue
                self._changed(restarts=self.status.restarts + 1)
                break

    async def stop(self) -> None:
        """Stop supervising, remove the proxies and end the child (idempotent)."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        if self._detaching is not None:
            await self._detaching
            self._detaching = None
        for session in (self.session, self._prepared):
            if session is not None:
                session.end("stopped by the host")
                await session.detach()
        self.session = self._prepared = None
        self._changed(state="stopped", pid=None)

    def kill_child(self) -> None:
        """SIGKILL the current child (tests and benchmarks)."""
        if self.session is not None and self.session.proc.returncode is None:
            self.session.proc.kill()


def default_python() -> str:
    """The host's own interpreter (for plugins not installed as a generation)."""
    return sys.executable
