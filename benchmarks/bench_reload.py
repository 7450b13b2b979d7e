"""Reload benchmark: PluginHost load, reload and unload on a real bus, and many cycles.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_reload [--quick] [--cycles N]

Everything runs in this process, on one asyncio loop, with a real bus
(``new_core_bus``), a locked ``StateDir`` and a :class:`PluginHost`. The plugin is a
small generated project (a greeter answering ``Hello`` through a path-dependency
library, see ``tests/loader/pluginkit.py``) compiled twice with ``compile_plugin``:
wheel A says "hello", wheel B "howdy".

1. **Operations** (each timed ``repeat`` times):

   * first load: verify + host-dependency check + install a generation (venv,
     installer, bytecode) + activate;
   * reload to the other wheel with each trial runner: ``"fork"`` (the default: trial
     import in a child of a warm forking server), ``"subprocess"`` (trial import in
     a fresh interpreter of the new generation) and ``"none"`` (no trial);
   * unload (stop, purge, leak check, garbage-collect the generation).

   Baselines, measured in the same run: the floor of "new code serving"
   (extract the same wheel into a fresh directory, put it on ``sys.path``, import the
   plugin, purge it), and the "restart the process" alternative (a cold
   ``python -c "import <plugin module>"``).
2. **Cycles**: N load/unload cycles alternating A and B; every cycle starts the
   greeter through ``LoadControllerWithConfig`` and checks its answer. Reported:
   RSS growth (``/proc/self/statm``) from the end of the first cycle to the end of
   the last, plugin modules left in ``sys.modules``, and unload reports that were
   not clean.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Coroutine, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tests.loader.pluginkit import PluginProjects, write_projects

from benchmarks.harness import Row, measure, print_table, write_json
from controllerbus.api.hello import Hello, HelloReply
from controllerbus.bus.directives import LoadControllerWithConfig
from controllerbus.bus.executor import wait_exec_controller_running
from controllerbus.bus.helpers import exec_one_off
from controllerbus.configset import lookup_config_constructor
from controllerbus.core import new_core_bus
from controllerbus.loader.host import PluginHost, UnloadReport
from controllerbus.loader.purge import purge_generation
from controllerbus.loader.state import StateDir
from controllerbus.loader.trial import trial_runner

if TYPE_CHECKING:
    from controllerbus.bus.bus import Bus
    from controllerbus.compiler import CompileResult
    from controllerbus.loader.trial import TrialKind

PREFIX = "cbb_reload"
TRIAL_KINDS: tuple[TrialKind, ...] = ("fork", "subprocess", "none")
TRIAL_NOTES = {
    "fork": "default: trial in a child of a warm forking server",
    "subprocess": "trial in a fresh interpreter of the generation",
    "none": "no trial",
}
T = TypeVar("T")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class Plugin:
    projects: PluginProjects
    a: CompileResult
    b: CompileResult

    @property
    def tops(self) -> tuple[str, ...]:
        return self.projects.top_levels(self.a.module)

    def modules_left(self) -> int:
        return sum(1 for name in list(sys.modules) if name.split(".")[0] in self.tops)


def build_plugin(work: Path) -> Plugin:
    projects = write_projects(work / "projects", PREFIX)
    a = projects.compile(work / "a")
    projects.set_greeting("howdy")
    b = projects.compile(work / "b")
    return Plugin(projects, a, b)


class Runner:
    """One event loop kept for the whole benchmark; ``run`` drives a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


async def greet(bus: Bus, config_id: str) -> str:
    """Start the greeter, ask ``Hello("bench")``, stop it; keep no reference."""
    ctor = await lookup_config_constructor(bus, config_id)
    assert ctor is not None, f"no plugin serves {config_id}"
    config = type(ctor.construct()).model_validate({"punctuation": "!"})
    _ctrl, _inst, ref = await wait_exec_controller_running(bus, LoadControllerWithConfig(config))
    del _ctrl, _inst, config, ctor
    try:
        async with asyncio.timeout(10):
            value, hello_ref = await exec_one_off(bus, Hello("bench"))
        hello_ref.release()
        assert value is not None
        assert isinstance(value.value, HelloReply)
        return value.value.text
    finally:
        ref.release()


def bench_operations(
    runner: Runner, bus: Bus, state: StateDir, plugin: Plugin, repeat: int
) -> list[Row]:
    """Part 1: first load, reloads, unload, with their baselines."""
    bid = plugin.projects.binary_id
    rows: list[Row] = []

    for kind in TRIAL_KINDS:
        host = PluginHost(bus, state, trials=trial_runner(kind, state.tmp_dir))
        # Untimed warm-up: the first load also starts the trial server (fork) in the
        # background; let it get ready so it does not compete with the timed runs.
        runner.run(host.load(plugin.a.wheel))
        runner.run(host.unload(bid))
        runner.run(asyncio.sleep(1.0))
        if kind == TRIAL_KINDS[0]:

            def ensure_unloaded(host: PluginHost = host) -> None:
                if host.active():
                    runner.run(host.unload(bid))

            def first_load(host: PluginHost = host) -> None:
                runner.run(host.load(plugin.a.wheel))

            rows.append(
                measure(
                    "first load (verify+install+activate)",
                    first_load,
                    setup=ensure_unloaded,
                    repeat=repeat,
                    baseline="floor: unzip+import+purge",
                    note="new generation (venv) every time",
                )
            )

        wheels = [plugin.b.wheel, plugin.a.wheel]
        turn = iter(range(10**9))

        def reload(
            host: PluginHost = host, wheels: list[Path] = wheels, turn: Iterator[int] = turn
        ) -> None:
            result = runner.run(host.load(wheels[next(turn) % 2]))
            assert result.replaced is not None
            assert result.replaced.clean, result.replaced.survivors

        runner.run(host.load(plugin.a.wheel))  # untimed: the generation to replace
        rows.append(
            measure(
                f"reload, trial={kind}",
                reload,
                repeat=repeat,
                baseline="restart: python -c 'import plugin'",
                note=TRIAL_NOTES[kind],
            )
        )
        text = runner.run(greet(bus, plugin.projects.config_id))
        assert text in ("hello, bench!", "howdy, bench!"), text

        if kind == TRIAL_KINDS[0]:

            def ensure_loaded(host: PluginHost = host) -> None:
                if not host.active():
                    runner.run(host.load(plugin.a.wheel))

            def unload(host: PluginHost = host) -> None:
                report = runner.run(host.unload(bid))
                assert report.clean, report.survivors

            rows.append(
                measure(
                    "unload (stop+purge+leak check+gc)",
                    unload,
                    setup=ensure_loaded,
                    repeat=repeat,
                    baseline="floor: unzip+import+purge",
                )
            )
        runner.run(host.aclose())

    rows.append(bench_floor(state.path.parent / "floor", plugin, repeat))
    rows.append(bench_restart(state.path.parent / "restart", plugin, max(3, repeat // 2)))
    return rows


def bench_floor(work: Path, plugin: Plugin, repeat: int) -> Row:
    """Extract the wheel to a fresh directory, import the plugin module, purge it."""
    counter = iter(range(10**9))

    def floor() -> None:
        target = work / str(next(counter))
        with zipfile.ZipFile(plugin.a.wheel) as zf:
            zf.extractall(target)
        sys.path.insert(0, str(target))
        importlib.import_module(plugin.a.module)
        purge_generation(target)

    floor()  # warm: the first import of a new module name pays for finder set-up
    row = measure("floor: unzip+import+purge", floor, repeat=repeat * 3, note="same code")
    assert plugin.modules_left() == 0
    return row


def bench_restart(work: Path, plugin: Plugin, repeat: int) -> Row:
    """A cold interpreter importing the plugin: the "restart the process" reload."""
    with zipfile.ZipFile(plugin.a.wheel) as zf:
        zf.extractall(work)
    env = {**os.environ, "PYTHONPATH": str(work)}
    argv = [sys.executable, "-c", f"import {plugin.a.module}"]

    def restart() -> None:
        subprocess.run(argv, check=True, env=env, capture_output=True)

    restart()  # warm the OS caches
    return measure(
        "restart: python -c 'import plugin'",
        restart,
        repeat=repeat,
        baseline="floor: unzip+import+purge",
        note="new interpreter",
    )


@dataclass(frozen=True, slots=True)
class CycleResult:
    cycles: int
    rss_growth_mb: float
    rss_total_growth_mb: float
    modules_left: int
    unclean_reports: int
    survivors: tuple[str, ...]
    cycle_median_ms: float
    sys_path_left: int
    importer_cache_left: int


def bench_cycles(
    runner: Runner, bus: Bus, state: StateDir, plugin: Plugin, cycles: int
) -> CycleResult:
    """Part 2: load (A or B), greet, unload, ``cycles`` times; memory and leaks."""
    host = PluginHost(bus, state)
    bid = plugin.projects.binary_id
    reports: list[UnloadReport] = []
    times: list[float] = []

    async def cycle(index: int) -> None:
        wheel, expected = (
            (plugin.a.wheel, "hello, bench!")
            if index % 2 == 0
            else (plugin.b.wheel, "howdy, bench!")
        )
        await host.load(wheel)
        text = await greet(bus, plugin.projects.config_id)
        assert text == expected, (index, text)
        reports.append(await host.unload(bid))

    gc.collect()
    rss_start = rss_first = _rss_bytes()
    for index in range(cycles):
        started = time.perf_counter()
        runner.run(cycle(index))
        times.append((time.perf_counter() - started) * 1000)
        if index == 0:
            gc.collect()
            rss_first = _rss_bytes()
    gc.collect()
    rss_end = _rss_bytes()
    runner.run(host.aclose())
    unclean = [r for r in reports if not r.clean]
    generations = str(state.generations_dir)
    return CycleResult(
        cycles=cycles,
        rss_growth_mb=(rss_end - rss_first) / 2**20,
        rss_total_growth_mb=(rss_end - rss_start) / 2**20,
        modules_left=plugin.modules_left(),
        unclean_reports=len(unclean),
        survivors=tuple(s for r in unclean[:3] for s in r.survivors),
        cycle_median_ms=statistics.median(times),
        sys_path_left=sum(1 for p in sys.path if p.startswith(generations)),
        importer_cache_left=sum(1 for p in sys.path_importer_cache if p.startswith(generations)),
    )


def _print_cycles(result: CycleResult) -> None:
    print(f"\n## Load/unload cycles ({result.cycles}, wheels A/B alternating, one process)")
    print(
        f"RSS growth {result.rss_growth_mb:.2f} MB after the first cycle "
        f"({result.rss_total_growth_mb:.2f} MB from the start); "
        f"plugin modules left in sys.modules: {result.modules_left}; "
        f"non-clean unload reports: {result.unclean_reports}; "
        f"sys.path / importer-cache entries left: {result.sys_path_left} / "
        f"{result.importer_cache_left}; median cycle {result.cycle_median_ms:.1f} ms "
        "(load + start greeter + Hello + unload)"
    )
    for survivor in result.survivors:
        print(f"  survivor: {survivor}")


def run(work: Path, cycles: int, repeat: int) -> tuple[list[Row], CycleResult]:
    plugin = build_plugin(work)
    runner = Runner()

    async def start() -> Bus:
        bus, _static = new_core_bus()
        await bus.__aenter__()
        return bus

    try:
        bus = runner.run(start())
        try:
            with StateDir(work / "state") as state:
                rows = bench_operations(runner, bus, state, plugin, repeat)
                result = bench_cycles(runner, bus, state, plugin, cycles)
        finally:
            runner.run(bus.__aexit__(None, None, None))
    finally:
        runner.close()
    return rows, result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 if the memory or leak goal is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="fewer cycles and repeats")
    parser.add_argument("--cycles", type=int, default=None, help="load/unload cycles (200)")
    args = parser.parse_args(argv)
    cycles = args.cycles or (50 if args.quick else 200)
    repeat = 4 if args.quick else 10

    with tempfile.TemporaryDirectory(prefix="cbus-bench-reload-") as tmp:
        rows, result = run(Path(tmp), cycles, repeat)

    print_table("PluginHost operations on a small plugin (real bus, one process)", rows)
    _print_cycles(result)
    path = write_json("reload", rows, extra={"cycles": asdict(result)})
    print(f"\nwrote {path}")
    ok = result.rss_growth_mb < 2 and result.modules_left == 0 and result.unclean_reports == 0
    print(
        f"goal (< 2 MB RSS growth, 0 modules left, every unload clean over {cycles} cycles): "
        f"{'met' if ok else 'NOT met'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
