"""``cbus demo --watch``: the hot-demo plugin served by a hot daemon until Ctrl-C.

The daemon compiles ``plugins/hot-demo`` (and its path dependency) in-process and
reloads it on every save. After each reload the demo prints what changed, how long
each phase took, and asks the greeter ``Hello("world")``: the answer comes from the
new code, and its greeting count goes on from where the old generation stopped
(state handoff). A syntax error prints the file and line; the old code keeps
answering.

In a source checkout the files edited are the checkout's own ``plugins/``; an
installed package's copy is read-only in spirit, so it is copied into the work
directory first and the demo says where.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from controllerbus.bus.bus import Bus
from controllerbus.bus.helpers import exec_one_off
from controllerbus.daemon import DaemonOptions, daemon_session
from controllerbus.example.hello import Hello, HelloReply
from controllerbus.hot.session import ReloadEvent
from controllerbus.hot.targets import HotTarget

__all__ = ["WATCH_CONFIG", "run_watch_demo"]

WATCH_CONFIG = """\
greeter-demo:
  config:
    punctuation: "!"
  id: controllerbus/example/hot-demo/greeter/1
  revision: 1
"""

_PROJECTS = ("hot-demo", "demo-greeting")


async def _answer(bus: Bus) -> str:
    try:
        async with asyncio.timeout(5):
            value, ref = await exec_one_off(bus, Hello("world"))
    except TimeoutError:
        return "(no answer within 5 s)"
    ref.release()
    reply = value.value if value is not None else None
    if not isinstance(reply, HelloReply):
        return "(no answer)"
    return f'"{reply.text}" (greeting #{reply.count})'


def _prepare(sources: Path, work: Path, in_place: bool) -> tuple[Path, Path, Path]:
    work = work.absolute()
    plugins = sources.absolute()
    if not in_place:
        plugins = work / "plugins"
        for name in _PROJECTS:
            shutil.copytree(sources / name, plugins / name, dirs_exist_ok=True)
    config = work / "controllerbus_daemon.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(WATCH_CONFIG)
    return work, plugins, config


async def run_watch_demo(
    echo: Callable[[str], None],
    stop: asyncio.Event,
    *,
    sources: Path,
    workdir: Path | None = None,
    in_place: bool = True,
) -> None:
    """Serve the hot-demo plugin from ``sources`` until ``stop`` is set.

    Args:
        echo: prints a line.
        stop: set it (signal handler) to shut down.
        sources: the directory holding ``hot-demo/`` and ``demo-greeting/``.
        workdir: state and wheels go here (default: a temporary directory).
        in_place: watch ``sources`` itself; otherwise a copy in the work directory.

    Raises:
        ControllerBusError: the daemon could not start (e.g. a watch failed).
    """
    with tempfile.TemporaryDirectory(prefix="cbus-demo-watch-") as tmp:
        work, plugins, config = await asyncio.to_thread(
            _prepare, sources, workdir or Path(tmp), in_place
        )
        bus_ref: list[Bus] = []
        pending: set[asyncio.Task[None]] = set()

        async def report(event: ReloadEvent) -> None:
            echo(f"* {event.describe()}")
            if bus_ref and (event.ok or event.changed):
                echo(f'  Hello("world") -> {await _answer(bus_ref[0])}')

        def on_reload(event: ReloadEvent) -> None:
            task = asyncio.get_running_loop().create_task(report(event))
            pending.add(task)
            task.add_done_callback(pending.discard)

        options = DaemonOptions(
            config_path=config,
            state_dir=work / "state",
            hot=(HotTarget((plugins / "hot-demo",)),),
            on_reload=on_reload,
        )
        echo(f"controllerbus demo --watch (work directory {work})")
        async with daemon_session(options) as session:
            bus_ref.append(session.bus)
            echo(f'  Hello("world") -> {await _answer(session.bus)}')
            library = plugins / "demo-greeting" / "src" / "demo_greeting" / "__init__.py"
            echo(
                f"\nwatching {len(session.hot.watched) if session.hot else 0} paths. "
                f"Edit {library}\nor anything under {plugins / 'hot-demo' / 'src'}, "
                "save, and watch it reload. Ctrl-C stops."
            )
            await stop.wait()
            for task in list(pending):
                task.cancel()
        echo("stopped: every controller stopped, every plugin unloaded")
