"""``cbus demo``: the whole pipeline end to end, in a temporary work directory.

Compile the hot-demo plugin (with its path dependency), run the daemon on it,
ask the plugin a question, edit the plugin's library and watch the running daemon
swap generations, prove the old generation is gone, feed it a corrupt wheel and see
the last good generation keep serving, then shut down cleanly. The steps print
what happened and how long it took; nothing outside the work directory is touched.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from controllerbus.api.hello import Hello
from controllerbus.bus.bus import Bus
from controllerbus.bus.helpers import exec_one_off
from controllerbus.compiler import CompileOptions, CompileResult, compile_plugin
from controllerbus.daemon import DaemonOptions, daemon_session
from controllerbus.errors import ControllerBusError
from controllerbus.example import boilerplate
from controllerbus.example.boilerplate import Boilerplate
from controllerbus.loader.host import PluginHost
from controllerbus.loader.manifest import wheel_key

__all__ = ["DEMO_BINARY_ID", "demo_sources", "run_demo"]

logger = logging.getLogger(__name__)

DEMO_BINARY_ID = "controllerbus/examples/hot-demo/codegen-demo/1"
_PROJECTS = ("hot-demo", "demo-greeting")
_CONFIG = """\
boilerplate-demo-0:
  config:
    exampleField: testing
  id: controllerbus/example/boilerplate/1
  revision: 1
greeter-demo:
  config:
    punctuation: "!"
  id: controllerbus/example/hot-demo/greeter/1
  revision: 1
loader-demo:
  config: {}
  id: controllerbus/example/hot-demo/demo-controller/1
  revision: 1
"""


class DemoError(ControllerBusError):
    """A demo step did not produce what it should have."""


def demo_sources() -> Path:
    """The directory holding the example plugin projects.

    A source checkout's ``plugins/`` comes first (editable installs); an installed
    wheel carries a copy under ``controllerbus/_demo``.
    """
    checkout = Path(__file__).resolve().parents[3] / "plugins"
    if all((checkout / name / "pyproject.toml").is_file() for name in _PROJECTS):
        return checkout
    packaged = Path(str(resources.files("controllerbus") / "_demo"))
    if all((packaged / name / "pyproject.toml").is_file() for name in _PROJECTS):
        return packaged
    raise DemoError(
        "cannot find the example plugin projects (plugins/hot-demo and plugins/demo-greeting); "
        "run the demo from a source checkout or pass --sources"
    )


@dataclass
class _Steps:
    echo: Callable[[str], None]
    number: int = 0

    def step(self, text: str) -> None:
        self.number += 1
        self.echo(f"\n[{self.number}] {text}")

    def detail(self, text: str) -> None:
        self.echo(f"    {text}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


async def _ask(bus: Bus, name: str) -> str:
    async with asyncio.timeout(10):
        value, ref = await exec_one_off(bus, Hello(name))
    ref.release()
    if value is None:
        raise DemoError("nobody answered Hello")
    reply = value.value
    return f'"{reply.text}" (greeting #{reply.count})'


async def _wait_generation(host: PluginHost, not_this: str, within: float) -> str:
    # The manifest records a reload once the old generation's unload is confirmed.
    try:
        async with asyncio.timeout(within):
            return await host.wait_for_generation(DEMO_BINARY_ID, not_this)
    except TimeoutError:
        raise DemoError(f"the daemon did not load a new generation within {within:.0f} s") from None


def _compile(project: Path, out: Path, codegen: Path) -> tuple[CompileResult, float]:
    started = time.perf_counter()
    result = compile_plugin(
        [project], CompileOptions(output_dir=out, codegen_dir=codegen, binary_id=DEMO_BINARY_ID)
    )
    return result, time.perf_counter() - started


async def run_demo(
    echo: Callable[[str], None], *, sources: Path | None = None, workdir: Path | None = None
) -> None:
    """Run the demo, printing each step with ``echo``.

    Raises:
        ControllerBusError: a step failed (compile, load, or an unexpected answer).
    """
    src = sources or demo_sources()
    with tempfile.TemporaryDirectory(prefix="cbus-demo-") as tmp:
        work = workdir or Path(tmp)
        await _run(echo, src, work)
        if workdir is None:
            echo("    (the work directory was removed; pass --workdir to keep it)")


async def _run(echo: Callable[[str], None], src: Path, work: Path) -> None:
    steps = _Steps(echo)
    echo(f"controllerbus demo (work directory {work})")
    projects = work / "plugins"
    for name in _PROJECTS:
        shutil.copytree(src / name, projects / name, dirs_exist_ok=True)
    out, codegen = work / "dist-plugins", work / "codegen"
    config = work / "controllerbus_daemon.yaml"
    config.write_text(_CONFIG)

    steps.step("compile plugins/hot-demo and its path dependency demo-greeting")
    first, took = await asyncio.to_thread(_compile, projects / "hot-demo", out, codegen)
    steps.detail(f"{first.wheel.name}")
    steps.detail(
        f"version {first.version}, {len(first.factories)} factories, "
        f"requires {', '.join(first.requires)}: {_ms(took)}"
    )
    again, took = await asyncio.to_thread(_compile, projects / "hot-demo", out, codegen)
    steps.detail(
        f"compile again, nothing changed: {'rebuilt?!' if again.rebuilt else 'no build'}, "
        f"{_ms(took)}"
    )

    steps.step("start the daemon with --plugins-dir (watching) and the demo config set")
    options = DaemonOptions(
        config_path=config, plugins_dir=out, state_dir=work / "state", watch=True
    )
    started = time.perf_counter()
    async with daemon_session(options, factories=[boilerplate.new_factory]) as session:
        host, bus = session.host, session.bus
        assert host is not None
        generation = host.active()[DEMO_BINARY_ID]
        took = time.perf_counter() - started
        steps.detail(f"plugin active in generation {generation[:12]} (its own venv) in {_ms(took)}")
        steps.detail(f'Hello("world") -> {await _ask(bus, "world")}  (the plugin\'s greeter)')
        async with asyncio.timeout(10):
            value, ref = await exec_one_off(bus, Boilerplate("hello world"))
        ref.release()
        assert value is not None
        steps.detail(f'Boilerplate("hello world") -> {value.value}  (the host\'s controller)')

        steps.step('edit demo-greeting: GREETING = "howdy", and compile again')
        library = projects / "demo-greeting" / "src" / "demo_greeting" / "__init__.py"
        library.write_text(library.read_text().replace('GREETING = "hello"', 'GREETING = "howdy"'))
        second, took = await asyncio.to_thread(_compile, projects / "hot-demo", out, codegen)
        changed = time.perf_counter()
        steps.detail(f"{second.wheel.name}: {_ms(took)} (the old wheel was removed)")
        new_generation = await _wait_generation(host, generation, within=30)
        serving = time.perf_counter() - changed
        steps.detail(
            f"the daemon saw the new wheel, tried it in a subprocess and switched to "
            f"generation {new_generation[:12]}: {_ms(serving)} from wheel to new code"
        )
        steps.detail(f'Hello("world") -> {await _ask(bus, "world")}  (count carried over)')
        report = next((r for r in host.unload_reports if r.generation == generation), None)
        if report is None:
            raise DemoError(f"no unload report for generation {generation[:12]}")
        verdict = "nothing survived" if report.clean else f"{len(report.survivors)} survived"
        steps.detail(
            f"old generation unloaded: {len(report.modules)} modules purged, "
            f"{report.tracked} objects checked with weak references, {verdict}"
        )

        steps.step("drop a corrupt wheel of the same plugin into the plugins directory")
        bad = out / second.wheel.name.replace(second.version, "9.9.9")
        bad.write_bytes(b"this is not a zip file")
        try:
            async with asyncio.timeout(3):
                record = await host.wait_for_record(wheel_key(bad))
        except TimeoutError:
            record = None
        if record is None or record.error is None:
            raise DemoError("the corrupt wheel was not reported")
        reason = record.error.splitlines()[-1].strip().removeprefix("- ")
        steps.detail(f"rejected before anything was installed: {reason}")
        steps.detail(
            f'Hello("world") -> {await _ask(bus, "world")}  '
            f"(generation {host.active()[DEMO_BINARY_ID][:12]} keeps serving)"
        )
        bad.unlink()
        steps.step("shut down")
    steps.detail(f"every controller stopped, every plugin unloaded; manifest in {work / 'state'}")
