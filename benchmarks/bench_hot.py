"""Hot-reload benchmark: save a source file -> the first directive answered by the new code.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_hot [--quick] [--edits N] [--reloads N]

The hot path runs in this process: :func:`controllerbus.daemon.daemon_session` with
one ``hot`` target (what ``cbus daemon --hot`` runs), a config set starting the
plugin's greeter, and one ``Hello`` directive held open for the whole run. Each
edit rewrites the path-dependency library's ``GREETING``; the clock starts just
before the file is written and stops when the held directive receives a value with
the new greeting (the value callback runs on the loop, so no polling delay). Per
edit: total, the phases the reloader reports (debounce, compile, verify, install,
trial, stop old, activate, on_change, handoff) and the serving gap (the old value
removed -> the new value added: the time no generation answers).

Two plugins: the tiny generated greeter (``tests/loader/pluginkit.py``) and the same
plus 200 modules the plugin package imports.

Baselines, same run, same plugin:

(a) ``python -m build --no-isolation`` of both projects + ``pip install --no-deps``
    into a fresh venv + importing the plugin in a new process (isolated builds need
    the network and are slower still);
(b) restarting the whole daemon process on change, as uvicorn/hupper-style
    restarters do: SIGTERM the running ``cbus daemon --hot``, start a new one, wait
    for its first answer (a probe controller writes it to a file);
(c) the floor: unzip the wheel into a fresh directory and import the plugin.

Then RSS growth and plugin modules left after ``--reloads`` hot reloads of the tiny
plugin (1,000 by default; ``--quick``: 30).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.loader.pluginkit import PluginProjects, write_projects

from benchmarks.harness import Row, print_table, write_json
from controllerbus.bus.helpers import CallbackHandler
from controllerbus.bus.protocols import AttachedValue, DirectiveInstance
from controllerbus.daemon import DaemonOptions, daemon_session
from controllerbus.example.hello import Hello, HelloReply
from controllerbus.hot import HotTarget, ReloadEvent
from controllerbus.loader.purge import purge_generation

PHASES = (
    "debounce",
    "compile",
    "verify",
    "install",
    "trial",
    "stop old",
    "activate",
    "on_change",
    "handoff",
)


_BUILD_SYSTEM = '\n[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def make_plugin(root: Path, prefix: str, modules: int) -> PluginProjects:
    projects = write_projects(root, prefix)
    for project in (projects.target, projects.library):
        # For baseline (a): `python -m build` needs a backend (the compiler does not).
        pyproject = project / "pyproject.toml"
        pyproject.write_text(pyproject.read_text() + _BUILD_SYSTEM)
    package = projects.target / "src" / projects.package
    names = [f"mod_{i:03d}" for i in range(modules)]
    for name in names:
        (package / f"{name}.py").write_text(
            f'"""Filler module {name}."""\n\nVALUE = {name!r}\n\n\n'
            "def work(x: int) -> int:\n    return x * 2 + 1\n\n\n"
            "class Thing:\n    def __init__(self) -> None:\n        self.value = VALUE\n"
        )
    if names:
        greeter = package / "greeter.py"
        imports = "".join(f"from {projects.package} import {n}  # noqa: F401\n" for n in names)
        future = "from __future__ import annotations\n"
        greeter.write_text(greeter.read_text().replace(future, future + imports, 1))
    return projects


@dataclass
class _Expect:
    text: str = ""
    removed: float = 0.0


@dataclass
class HotRun:
    totals: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=dict)
    rss_mb: float = 0.0
    modules_left: int = 0
    unclean: int = 0
    reloads: int = 0


def hot_config(work: Path, projects: PluginProjects) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "cbus.yaml"
    cfg.write_text(f"greeter:\n  id: {projects.config_id}\n  config: {{}}\n  revision: 1\n")
    return cfg


async def run_hot(
    work: Path, projects: PluginProjects, edits: int, *, leak_check: bool = False
) -> HotRun:
    cfg = hot_config(work, projects)
    events: asyncio.Queue[ReloadEvent] = asyncio.Queue()
    options = DaemonOptions(
        config_path=cfg,
        state_dir=work / "state",
        hot=(HotTarget((projects.target,)),),
        on_reload=events.put_nowait,
    )
    run = HotRun()
    loop = asyncio.get_running_loop()
    expected = _Expect()
    arrived: asyncio.Future[float] | None = None

    def added(_inst: DirectiveInstance, av: AttachedValue) -> None:
        reply = av.value
        wanted = isinstance(reply, HelloReply) and reply.text.startswith(expected.text)
        if wanted and arrived is not None and not arrived.done():
            arrived.set_result(time.perf_counter())

    def removed(_inst: DirectiveInstance, _av: AttachedValue) -> None:
        expected.removed = time.perf_counter()

    async with daemon_session(options) as session:
        assert (await events.get()).ok
        _inst, ref = session.bus.add_directive(Hello("bench"), CallbackHandler(added, removed))
        await asyncio.sleep(0.2)
        host = session.host
        assert host is not None
        tops = projects.top_levels(f"cbus_plugin_{projects.target.name.replace('-', '_')}")
        rss_first = 0
        for index in range(edits):
            greeting = f"hi{index}"
            expected.text = f"{greeting}, bench"
            arrived = loop.create_future()
            started = time.perf_counter()
            projects.set_greeting(greeting)
            async with asyncio.timeout(60):
                answered = await arrived
                event = await events.get()
            assert event.ok, event.error
            run.totals.append((answered - started) * 1000)
            run.gaps.append(max(0.0, (answered - expected.removed) * 1000))
            for phase in PHASES:
                run.phases.setdefault(phase, []).append(event.phases.get(phase, 0.0))
            if leak_check and index == 9:
                gc.collect()
                rss_first = _rss_bytes()
        ref.release()
        if leak_check:
            gc.collect()
            run.rss_mb = (_rss_bytes() - rss_first) / 2**20
            active = set(host.active().values())
            run.modules_left = sum(
                1
                for name, module in list(sys.modules.items())
                if name.split(".")[0] in tops
                and not any(g in str(getattr(module, "__file__", "")) for g in active)
            )
            run.unclean = sum(1 for r in host.unload_reports if not r.clean)
            run.reloads = edits
    return run


def baseline_build_install(work: Path, projects: PluginProjects, repeat: int) -> list[float]:
    """(a) python -m build + pip install into a fresh venv + import in a new process."""
    host_site = next(p for p in sys.path if p.endswith("site-packages"))
    times = []
    for index in range(repeat):
        projects.set_greeting(f"build{index}")
        dist, venv = work / f"dist{index}", work / f"venv{index}"
        started = time.perf_counter()
        for project in (projects.library, projects.target):
            subprocess.run(
                [sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(dist)],
                cwd=project,
                check=True,
                capture_output=True,
            )
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        python = venv / "bin" / "python"
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
            + [str(w) for w in dist.glob("*.whl")],
            check=True,
            capture_output=True,
        )
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        # addsitedir, not a path line: the host's own .pth files (editable installs) count.
        Path(site, "_host.pth").write_text(f"import site; site.addsitedir({host_site!r})\n")
        subprocess.run(
            [str(python), "-c", f"import {projects.package}.greeter"],
            check=True,
            capture_output=True,
        )
        times.append((time.perf_counter() - started) * 1000)
    return times


def baseline_restart(work: Path, projects: PluginProjects, repeat: int) -> list[float]:
    """(b) restart the whole daemon process on change; until its first answer."""
    replies = work / "restart-replies.jsonl"
    cfg = work / "restart.yaml"
    cfg.write_text(
        f"greeter:\n  id: {projects.config_id}\n  config: {{}}\n  revision: 1\n"
        f"probe:\n  id: controllerbus/example/hello-probe/1\n"
        f"  config: {{name: bench, out: {replies}}}\n  revision: 1\n"
    )
    argv = [sys.executable, "-m", "controllerbus.cli", "daemon", "-c", str(cfg)]
    argv += ["--hot", str(projects.target), "--state-dir", str(work / "restart-state")]

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_answer(text: str, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if replies.exists() and text in replies.read_text():
                return
            assert proc.poll() is None, "the daemon exited"
            time.sleep(0.005)
        raise TimeoutError(text)

    proc = start()
    times = []
    try:
        wait_answer(", bench", proc)
        for index in range(repeat):
            greeting = f"restart{index}"
            started = time.perf_counter()
            projects.set_greeting(greeting)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            proc = start()
            wait_answer(f"{greeting}, bench", proc)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return times


def baseline_floor(work: Path, wheel: Path, module: str, repeat: int) -> list[float]:
    """(c) unzip the wheel into a fresh directory and import the plugin, in-process."""
    times = []
    for index in range(repeat + 1):
        target = work / f"floor{index}"
        started = time.perf_counter()
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(target)
        sys.path.insert(0, str(target))
        importlib.import_module(module)
        elapsed = (time.perf_counter() - started) * 1000
        purge_generation(target)
        if index:  # the first pays for finder set-up
            times.append(elapsed)
    return times


def _row(name: str, values: list[float], baseline: str = "", note: str = "") -> Row:
    return Row(name, min(values), statistics.median(values), len(values), baseline, note)


def bench_plugin(
    work: Path, label: str, modules: int, edits: int, repeat: int, baselines: bool
) -> tuple[list[Row], dict[str, object]]:
    projects = make_plugin(work / "projects", f"cbb_hot_{label.replace('-', '_')}", modules)
    run = asyncio.run(run_hot(work / "hot", projects, edits))
    hot_name = f"{label}: hot save -> new code answers"
    rows = [_row(hot_name, run.totals, note=f"p95 {_pct(run.totals, 0.95):.1f} ms")]
    rows.append(_row(f"{label}: serving gap", run.gaps, note=f"p95 {_pct(run.gaps, 0.95):.1f} ms"))
    for phase in PHASES:
        rows.append(_row(f"{label}:   phase {phase}", run.phases[phase]))
    if baselines:
        from controllerbus.compiler import CompileOptions, compile_plugin

        compiled = compile_plugin(
            [projects.target],
            CompileOptions(output_dir=work / "floor-out", codegen_dir=work / "floor-cg"),
        )
        rows.append(
            _row(
                f"{label}: (c) floor unzip+import",
                baseline_floor(work, compiled.wheel, compiled.module, repeat * 3),
                baseline=hot_name,
            )
        )
        rows.append(
            _row(
                f"{label}: (b) restart daemon process",
                baseline_restart(work, projects, repeat),
                baseline=hot_name,
            )
        )
        rows.append(
            _row(
                f"{label}: (a) build+pip install+import",
                baseline_build_install(work, projects, max(2, repeat // 2)),
                baseline=hot_name,
            )
        )
    summary: dict[str, object] = {
        "median_ms": statistics.median(run.totals),
        "p95_ms": _pct(run.totals, 0.95),
        "gap_median_ms": statistics.median(run.gaps),
        "gap_p95_ms": _pct(run.gaps, 0.95),
        "edits": edits,
    }
    return rows, summary


def bench_reloads(work: Path, reloads: int) -> HotRun:
    projects = make_plugin(work / "projects", "cbb_hot_leak", 0)
    return asyncio.run(run_hot(work / "hot", projects, reloads, leak_check=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="fewer edits, reloads, repeats")
    parser.add_argument("--edits", type=int, default=None, help="edits per plugin (30)")
    parser.add_argument("--reloads", type=int, default=None, help="reloads for RSS (1000)")
    args = parser.parse_args(argv)
    edits = args.edits or 30
    reloads = args.reloads or (30 if args.quick else 1000)
    repeat = 3 if args.quick else 6
    rows: list[Row] = []
    summaries: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="cbus-bench-hot-") as tmp:
        root = Path(tmp)
        for label, modules, baselines in (("tiny", 0, True), ("200-module", 200, True)):
            plugin_rows, summary = bench_plugin(
                root / label, label, modules, edits, repeat, baselines
            )
            rows += plugin_rows
            summaries[label] = summary
        leak = bench_reloads(root / "leak", reloads)
    print_table("Hot reload: file saved -> first directive answered by the new code", rows)
    by = {row.name: row for row in rows}

    def ratio(fast: str, slow: str) -> float:
        return by[slow].median_ms / by[fast].median_ms

    hot = "tiny: hot save -> new code answers"
    print(
        f"\ntiny: (a) is {ratio(hot, 'tiny: (a) build+pip install+import'):.1f}x and "
        f"(b) {ratio(hot, 'tiny: (b) restart daemon process'):.1f}x the hot path's median"
    )
    print(
        f"\n## {leak.reloads} hot reloads of the tiny plugin: RSS growth {leak.rss_mb:.2f} MB "
        f"(after the 10th), plugin modules of old generations left: {leak.modules_left}, "
        f"non-clean unloads: {leak.unclean}"
    )
    path = write_json(
        "hot",
        rows,
        extra={
            "summary": summaries,
            "reloads": {
                "count": leak.reloads,
                "rss_growth_mb": leak.rss_mb,
                "modules_left": leak.modules_left,
                "unclean_unloads": leak.unclean,
            },
        },
    )
    print(f"\nwrote {path}")
    print(json.dumps(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
