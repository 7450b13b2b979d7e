"""Process-plugin benchmark: directive round trip, value throughput, host RSS over restarts.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_ipc [--quick] [--cycles N]

Everything uses a real host bus (``new_core_bus``) and the echo plugin of
``tests/ipc/plugins/ipc_echo.py``; the process plugin is a real child
(``python -m controllerbus.ipc.child``) of this interpreter.

1. **Round trip** of a one-value directive (``Echo(text)`` → one ``EchoReply``):
   ``exec_one_off`` + release, timed one by one; median and p99 in µs.
   Baselines in the same run: the same controller in-process, and the floor of a
   process hop on this machine (one ``heartbeat`` frame to a child and back over
   the same transport, no bus). The three run interleaved in ten blocks, so the
   machine's load hits them alike.
2. **Throughput** of values streamed from a plugin (``Stream(n)`` → n values), in
   values per second, process vs in-process.
3. **Reload, save to serving**, through a real ``PluginHost`` with two wheels of a
   tiny plugin (alternating): ``load()`` (verify, install a generation, switch)
   plus starting the plugin's controller and its first answer; in-process (with
   the default trial import) vs process isolation (the new child's start is the
   trial). "save to serving": saves further apart than a spare's start (the
   aftermath of the previous reload is over, 0.3 s pause, outside the timing);
   "back to back": the next reload at once (a spare may still be starting).
4. **Host RSS** over N back-to-back reloads of a process plugin through the
   ``PluginHost`` (warm spares, a new child each time, the old one ends): growth
   from the end of the first reload to the end of the last, from
   ``/proc/self/statm``.
5. **Fresh child** (no spare) start to serving, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Row, print_table, write_json
from controllerbus.bus import Bus, CallbackHandler, LoadControllerWithConfig, exec_one_off
from controllerbus.bus.directives import LoadConfigConstructorByID
from controllerbus.bus.executor import wait_exec_controller_running
from controllerbus.core import new_core_bus
from controllerbus.example.boilerplate import Boilerplate
from controllerbus.ipc.host import ProcessPlugin, remote_config_class
from controllerbus.ipc.messages import Heartbeat
from controllerbus.ipc.transport import open_connection, socketpair

PLUGINS = Path(__file__).resolve().parents[1] / "tests" / "ipc" / "plugins"
sys.path.insert(0, str(PLUGINS))

import ipc_echo  # type: ignore[import-not-found]  # noqa: E402
from tests.ipc.test_loader_process import make_wheel  # noqa: E402

from controllerbus.loader.host import PluginHost  # noqa: E402
from controllerbus.loader.state import StateDir  # noqa: E402

ECHO_ID = "test/ipc/echo/1"
_SPARES_USED: dict[str, int] = {}

_PONG = """
import asyncio, socket, sys
from controllerbus.ipc.transport import ConnectionClosed, open_connection
async def main():
    conn = await open_connection(socket.socket(fileno=int(sys.argv[1])))
    try:
        while True:
            conn.send_nowait(await conn.recv())
    except ConnectionClosed:
        pass
asyncio.run(main())
"""


def _rss_kib() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def _summary(name: str, samples: list[float], baseline: str = "", note: str = "") -> Row:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    row = Row(
        name,
        ordered[0] * 1000,
        statistics.median(ordered) * 1000,
        len(ordered),
        baseline,
        note or f"p99 {p99 * 1e6:.0f} us, median {statistics.median(ordered) * 1e6:.0f} us",
    )
    return row


async def _round_trips(bus: Bus, n: int, tag: str) -> list[float]:
    times = []
    for i in range(n + 20):
        start = time.perf_counter()
        av, ref = await exec_one_off(bus, ipc_echo.Echo(f"{tag}{i}"))
        elapsed = time.perf_counter() - start
        ref.release()
        assert av is not None
        if i >= 20:  # warm-up
            times.append(elapsed)
    return times


async def _stream(bus: Bus, count: int) -> float:
    done = asyncio.Event()
    seen = 0

    def added(_inst: object, _av: object) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    start = time.perf_counter()
    _inst, ref = bus.add_directive(ipc_echo.Stream(count), CallbackHandler(added))
    await done.wait()
    elapsed = time.perf_counter() - start
    ref.release()
    return elapsed


async def _start_echo(bus: Bus, config: Any) -> Any:
    _ctrl, _inst, ref = await wait_exec_controller_running(bus, LoadControllerWithConfig(config))
    return ref


async def _pong() -> tuple[Any, Any]:
    parent, child = socketpair()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PONG, str(child.fileno()), pass_fds=(child.fileno(),)
    )
    child.close()
    return proc, await open_connection(parent)


async def _floor(conn: Any, n: int) -> list[float]:
    times = []
    for i in range(n + 20):
        start = time.perf_counter()
        conn.send_nowait(Heartbeat(seq=i + 1))
        await conn.recv()
        if i >= 20:
            times.append(time.perf_counter() - start)
    return times


async def _interleaved(cases: dict[str, Any], n: int, blocks: int = 10) -> dict[str, list[float]]:
    """Run every case in turns of ``n / blocks``, so the machine's load hits all alike."""
    out: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(blocks):
        for name, case in cases.items():
            out[name] += await case(max(1, n // blocks))
    return out


async def _serve_once(bus: Bus) -> Any:
    """Start the reloaded plugin's controller and get its first answer; return the ref."""
    av, cref = await exec_one_off(bus, LoadConfigConstructorByID("test/ipc/old/1"))
    assert av is not None
    config = av.value.construct()
    cref.release()
    ref = await _start_echo(bus, config)
    answer, aref = await exec_one_off(bus, Boilerplate(f"serving {time.perf_counter()}"))
    assert answer is not None
    aref.release()
    return ref


async def _reloads(
    isolation: str, wheels: list[Path], repeat: int, *, spaced: bool, rss: list[int] | None = None
) -> list[float]:
    """Reload times, save to serving. ``spaced``: saves further apart than a spare start."""
    times = []
    with tempfile.TemporaryDirectory(prefix="bench-ipc-") as tmp:
        bus, _ = new_core_bus()
        with StateDir(Path(tmp) / "state") as state:
            host = PluginHost(bus, state, isolation=isolation)  # type: ignore[arg-type]
            await host.load(wheels[0])
            ref = await _serve_once(bus)
            for i in range(1, repeat + 1):
                ref.release()
                del ref  # its handler's closure would keep the old controller alive
                if spaced:  # the previous reload's aftermath is over, a spare is warm
                    await host.spares.wait_ready()
                    await asyncio.sleep(0.3)
                started = time.perf_counter()
                await host.load(wheels[i % 2])
                ref = await _serve_once(bus)
                times.append(time.perf_counter() - started)
                if rss is not None:
                    gc.collect()
                    rss.append(_rss_kib())
            _SPARES_USED[isolation] = host.spares.handed_out
            ref.release()
            del ref
            await asyncio.sleep(0.05)  # let the disposal run before the final unload
            await host.aclose()
        await bus.aclose()
    return times


def _plugin(bus: Bus) -> ProcessPlugin:
    return ProcessPlugin(
        bus,
        binary_id="bench-echo",
        python=sys.executable,
        entry_point="ipc_echo:PLUGIN",
        sys_path=[str(PLUGINS)],
    )


async def run(
    round_trips: int, stream: int, cycles: int, reloads: int
) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    extra: dict[str, Any] = {}

    # Round trips: in-process, process plugin and the bare frame hop, interleaved.
    inbus, static = new_core_bus()
    static.add_factory(ipc_echo._factories(inbus)[0])
    inref = await _start_echo(inbus, ipc_echo.EchoConfig())
    bus, _ = new_core_bus()
    plugin = _plugin(bus)
    await plugin.start()
    ref = await _start_echo(bus, remote_config_class(ECHO_ID)())
    pong, pong_conn = await _pong()
    samples = await _interleaved(
        {
            "in-process": lambda k: _round_trips(inbus, k, "in"),
            "floor": lambda k: _floor(pong_conn, k),
            "process": lambda k: _round_trips(bus, k, "proc"),
        },
        round_trips,
    )
    inproc, floor, proc = samples["in-process"], samples["floor"], samples["process"]
    inproc_stream = await _stream(inbus, stream)
    proc_stream = await _stream(bus, stream)
    await pong_conn.aclose()
    pong.kill()
    await pong.wait()
    inref.release()
    await inbus.aclose()
    ref.release()
    await plugin.stop()
    await bus.aclose()
    rows.append(_summary("round trip in-process", inproc))
    rows.append(_summary("round trip hop floor (frame)", floor))
    rows.append(_summary("round trip process plugin", proc, baseline="round trip in-process"))
    rows.append(
        _summary(
            "round trip process plugin vs floor", proc, baseline="round trip hop floor (frame)"
        )
    )

    rates = {
        "in-process": stream / inproc_stream,
        "process": stream / proc_stream,
    }
    extra["stream_values"] = stream
    extra["stream_values_per_s"] = rates
    extra["round_trip_us"] = {
        name: {
            "median": statistics.median(samples) * 1e6,
            "p99": sorted(samples)[int(len(samples) * 0.99) - 1] * 1e6,
        }
        for name, samples in (("in-process", inproc), ("process", proc), ("floor", floor))
    }

    # Reloads through the plugin host, and the host's RSS over many of them.
    rss: list[int] = []
    with tempfile.TemporaryDirectory(prefix="bench-ipc-wheels-") as tmp:
        wheels = [
            make_wheel(Path(tmp), generation=name, conflict=False) for name in ("aaaa", "bbbbb")
        ]
        inproc_reload = await _reloads("inprocess", wheels, reloads, spaced=True)
        proc_reload = await _reloads("process", wheels, reloads, spaced=True)
        spaced_spares = _SPARES_USED["process"]
        burst = await _reloads("process", wheels, cycles, spaced=False, rss=rss)
    rows.append(_summary("reload in-process, save to serving", inproc_reload, note="trial: fork"))
    rows.append(
        _summary(
            "reload process plugin, save to serving",
            proc_reload,
            baseline="reload in-process, save to serving",
            note=f"warm spare: {spaced_spares} of {reloads}",
        )
    )
    rows.append(
        _summary(
            "reload process plugin, back to back",
            burst,
            baseline="reload in-process, save to serving",
            note=f"warm spare: {_SPARES_USED['process']} of {cycles}",
        )
    )

    # Fresh children (no spare): start to serving.
    bus, _ = new_core_bus()
    start_times: list[float] = []
    config = remote_config_class(ECHO_ID)()
    for _ in range(10):
        started = time.perf_counter()
        plugin = _plugin(bus)
        await plugin.start()
        ref = await _start_echo(bus, config)
        av, eref = await exec_one_off(bus, ipc_echo.Echo("cycle"))
        start_times.append(time.perf_counter() - started)
        assert av is not None
        eref.release()
        ref.release()
        await plugin.stop()
        del plugin
    await bus.aclose()
    rows.append(
        _summary("fresh child start to serving", start_times, note="spawn + ready + answer")
    )
    extra["cycles"] = cycles
    extra["rss_kib_after_first"] = rss[0]
    extra["rss_kib_after_last"] = rss[-1]
    extra["rss_kib_max"] = max(rss)
    extra["rss_growth_kib"] = rss[-1] - rss[0]
    return rows, extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer samples and cycles (CI)")
    parser.add_argument("--cycles", type=int, help="process-plugin reloads for the host RSS")
    args = parser.parse_args(argv)
    round_trips = 300 if args.quick else 2000
    stream = 2000 if args.quick else 20000
    cycles = args.cycles or (20 if args.quick else 1000)
    reloads = 4 if args.quick else 10
    rows, extra = asyncio.run(run(round_trips, stream, cycles, reloads))
    print_table("process plugins (IPC)", rows)
    rates = extra["stream_values_per_s"]
    print(
        f"\nstreamed {extra['stream_values']} values: "
        f"in-process {rates['in-process']:.0f}/s, process {rates['process']:.0f}/s"
    )
    print(
        f"host RSS over {extra['cycles']} process-plugin reloads: "
        f"{extra['rss_kib_after_first']} KiB after the first -> "
        f"{extra['rss_kib_after_last']} KiB after the last "
        f"({extra['rss_growth_kib']:+d} KiB, max {extra['rss_kib_max']} KiB)"
    )
    path = write_json("ipc", rows, extra=extra)
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
