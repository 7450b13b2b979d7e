"""Production benchmark: trust check cost, 100 plugins cold start, reload 1 of 100.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_production [--quick] [--plugins N]

1. **Trust check per wheel**: :meth:`TrustFile.check` (hash the file, look the name
   up) on a tiny plugin wheel with a trust file of N entries, against the baseline
   of :func:`verify_wheel` on the same wheel, which every load does anyway. Target:
   the check adds <= 1 ms per wheel.
2. **Cold start**: ``cbus daemon --no-watch --trust`` in a fresh process with a fresh
   state directory, from spawn until the config set (one greeter per plugin) is
   applied, i.e. every plugin is installed, active and its greeter started. N tiny
   plugins against the baseline of one. Target: N=100 in <= 2 s on 2 cores.
   Installs of independent plugins run in parallel threads
   (:meth:`PluginHost.install_ahead`); the same start with them one by one
   (``CBUS_INSTALL_AHEAD=0`` is not a knob: measured in-process below instead).
3. **Reload one of N** (in-process, :func:`daemon_session`): replace plugin 0's wheel
   while N-1 keep serving, against the baseline of the same reload with it alone.
   While it runs, a probe task measures the longest event-loop stall (every plugin
   serves on that loop, so this is the pause the other N-1 see) and a client keeps
   asking ``Hello`` (answered by any greeter). Target: within 20 % of the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from tests.production.prodkit import build, pin, plugin_project

from benchmarks.harness import Row, measure, print_table, write_json
from controllerbus.api.hello import Hello
from controllerbus.bus.helpers import exec_one_off
from controllerbus.core import new_core_bus
from controllerbus.daemon import DaemonOptions, DaemonSession, daemon_session
from controllerbus.loader.host import PluginHost
from controllerbus.loader.state import StateDir
from controllerbus.loader.trust import parse_trust_file
from controllerbus.loader.verify import verify_wheel

CBUS = [sys.executable, "-m", "controllerbus.cli"]


def make_plugins(work: Path, count: int, tag: str) -> list[Path]:
    """``count`` tiny plugins (no dependency) with unique package names, built once."""
    out = work / f"wheels-{tag}"
    return [
        build(plugin_project(work / f"src-{tag}", f"cbb{tag}{i:03d}", dependency=None), out)
        for i in range(count)
    ]


def config_for(wheels: list[Path]) -> str:
    prefixes = [w.name.split("_plugin-")[0] for w in wheels]
    return "".join(f"g{p}:\n  id: test/{p}/greeter/1\n  config: {{}}\n" for p in prefixes)


def bench_trust(wheel: Path, entries: int, repeat: int) -> list[Row]:
    text = pin(wheel) + "".join(
        f"other{i}-1.0-py3-none-any.whl --hash=sha256:{i:064x}\n" for i in range(entries - 1)
    )
    trust = parse_trust_file(text)
    return [
        measure("verify_wheel (every load does it)", lambda: verify_wheel(wheel), repeat=repeat),
        measure(
            f"trust check, {entries}-entry trust file",
            lambda: trust.check(wheel),
            repeat=repeat,
            baseline="verify_wheel (every load does it)",
        ),
        measure(
            f"parse a {entries}-entry trust file", lambda: parse_trust_file(text), repeat=repeat
        ),
    ]


def cold_start(work: Path, wheels: list[Path], name: str) -> float:
    """Seconds from spawning ``cbus daemon`` until its config set is applied."""
    run = Path(tempfile.mkdtemp(dir=work, prefix="run-"))
    plugins = run / "plugins"
    plugins.mkdir()
    for wheel in wheels:
        shutil.copy2(wheel, plugins / wheel.name)
    (run / "trust.txt").write_text(pin(*wheels))
    (run / "cbus.yaml").write_text(config_for(wheels))
    log = run / "daemon.log"
    started = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CBUS, "daemon", "-c", "cbus.yaml", "--plugins-dir", "plugins", "--no-watch",
             "--trust", "trust.txt", "--state-dir", "state"],
            cwd=run, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        while b"applying config set" not in log.read_bytes():
            if proc.poll() is not None or time.perf_counter() - started > 300:
                raise RuntimeError(f"{name}: daemon did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    if f"{len(wheels)} plugin(s) active" not in log.read_text():
        raise RuntimeError(f"{name}: not every plugin loaded:\n{log.read_text()[-3000:]}")
    shutil.rmtree(run, ignore_errors=True)
    return elapsed


def bench_cold(work: Path, many: list[Path], repeat: int) -> list[Row]:
    rows = []
    for label, wheels in (("1 plugin", many[:1]), (f"{len(many)} plugins", many)):
        times = [cold_start(work, wheels, label) * 1000 for _ in range(repeat)]
        rows.append(
            Row(
                f"daemon cold start, {label}, to all serving",
                min(times),
                statistics.median(times),
                repeat,
                baseline="daemon cold start, 1 plugin, to all serving" if wheels is many else "",
                note="fresh process and state dir, --trust",
            )
        )
    return rows


@contextlib.asynccontextmanager
async def session(work: Path, wheels: list[Path]) -> AsyncIterator[DaemonSession]:
    run = Path(tempfile.mkdtemp(dir=work, prefix="session-"))
    plugins = run / "plugins"
    plugins.mkdir()
    for wheel in wheels:
        shutil.copy2(wheel, plugins / wheel.name)
    config = run / "cbus.yaml"
    config.write_text(config_for(wheels))
    options = DaemonOptions(
        config_path=config, plugins_dir=plugins, state_dir=run / "state", watch=False
    )
    async with daemon_session(options) as running:
        yield running


async def _stall_probe(stop: asyncio.Event, worst: list[float]) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        worst[0] = max(worst[0], now - last)
        last = now


async def _asker(running: DaemonSession, stop: asyncio.Event, answered: list[int]) -> None:
    while not stop.is_set():
        value, ref = await exec_one_off(running.bus, Hello("bench"), return_if_idle=True)
        ref.release()
        if value is not None:
            answered[0] += 1
        await asyncio.sleep(0.002)


async def reload_rows(
    work: Path, wheels: list[Path], v2: Path, repeat: int
) -> dict[str, list[float]]:
    """Reload plugin 0 back and forth ``repeat`` times; times, stalls, answers."""
    async with session(work, wheels) as running:
        host = running.host
        assert host is not None
        v1 = wheels[0]
        times: list[float] = []
        stalls: list[float] = []
        answers: list[float] = []
        for i in range(repeat):
            stop = asyncio.Event()
            worst, answered = [0.0], [0]
            tasks = [
                asyncio.create_task(_stall_probe(stop, worst)),
                asyncio.create_task(_asker(running, stop, answered)),
            ]
            await asyncio.sleep(0.02)
            start = time.perf_counter()
            await host.load(v2 if i % 2 == 0 else v1)
            times.append((time.perf_counter() - start) * 1000)
            stop.set()
            await asyncio.gather(*tasks)
            stalls.append(worst[0] * 1000)
            answers.append(answered[0])
        return {"times": times, "stalls": stalls, "answers": answers}


async def host_reload_times(work: Path, wheels: list[Path], v2: Path, repeat: int) -> list[float]:
    """Reload plugin 0 on a bare PluginHost (no config set): the loader's own share."""
    bus, _static = new_core_bus()
    async with bus:
        with StateDir(Path(tempfile.mkdtemp(dir=work, prefix="host-"))) as state:
            host = PluginHost(bus, state)
            await host.install_ahead(wheels)
            for wheel in wheels:
                await host.load(wheel)
            times = []
            for i in range(repeat):
                start = time.perf_counter()
                await host.load(v2 if i % 2 == 0 else wheels[0])
                times.append((time.perf_counter() - start) * 1000)
            await host.aclose()
            return times


def bench_reload(work: Path, many: list[Path], v2: Path, repeat: int) -> list[Row]:
    rows = []
    for label, wheels in (("alone", many[:1]), (f"with {len(many) - 1} others loaded", many)):
        times = asyncio.run(host_reload_times(work, wheels, v2, repeat))
        rows.append(
            Row(
                f"host only: reload 1 plugin, {label}",
                min(times),
                statistics.median(times),
                repeat,
                baseline="host only: reload 1 plugin, alone" if label != "alone" else "",
                note="PluginHost.load, no config set",
            )
        )
    for label, wheels in (("alone", many[:1]), (f"with {len(many) - 1} others serving", many)):
        result = asyncio.run(reload_rows(work, wheels, v2, repeat))
        base = "reload 1 plugin, alone"
        rows.append(
            Row(
                f"reload 1 plugin, {label}",
                min(result["times"]),
                statistics.median(result["times"]),
                repeat,
                baseline=base if label != "alone" else "",
                note="Hello answers during reload: "
                f"median {statistics.median(result['answers']):.0f}",
            )
        )
        rows.append(
            Row(
                f"longest loop stall during it, {label}",
                min(result["stalls"]),
                statistics.median(result["stalls"]),
                repeat,
                note="the pause every other plugin sees",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--plugins", type=int, default=100, help="plugins for scale (100)")
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else 3
    with tempfile.TemporaryDirectory(prefix="cbus-bench-prod-") as tmp:
        work = Path(tmp)
        many = make_plugins(work, args.plugins, "s")
        v2 = build(
            plugin_project(
                work / "src-v2", f"cbbs{0:03d}", version="2.0.0", dependency=None, word="howdy"
            ),
            work / "wheels-v2",
        )
        rows = bench_trust(many[0], args.plugins, 20 if args.quick else 200)
        print_table("Trust check per wheel (tiny plugin wheel)", rows)
        cold = bench_cold(work, many, repeat)
        print_table(f"{args.plugins} tiny plugins: daemon cold start to all serving", cold)
        reload = bench_reload(work, many, v2, 2 if args.quick else 6)
        print_table(f"Reload one of {args.plugins} while the others serve (in-process)", reload)
    path = write_json(
        "production",
        [*rows, *cold, *reload],
        extra={"plugins": args.plugins, "cpus": os.cpu_count()},
    )
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
