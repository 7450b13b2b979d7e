"""Loader benchmark: unload cycles (memory, leaks), verify + install, venv creation.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_unload [--quick] [--cycles N]

Three parts, each with its baseline measured in the same run:

1. **Unload cycles**: N times in one process, activate a generation (put its
   site-packages on ``sys.path``, import the plugin module, instantiate a class,
   use a runtime type alias) and unload it, then ``gc.collect()``. Each cycle uses
   a *different* generation directory, as a hot reload does. Modes, each in a fresh
   child process so their memory does not mix:

   * ``naive``: delete the plugin's ``sys.modules`` entries and its ``sys.path`` entry;
   * ``naive+importer-cache``: the same, plus drop ``sys.path_importer_cache`` entries;
   * ``purge_generation``: :func:`controllerbus.loader.purge_generation`.

   Reported: RSS growth from the end of the first cycle to the end of the last
   (and from before the first), and how many plugin module objects, module
   globals (a module-level function alive keeps them) and classes are still alive
   at the end, plus the median time of one activate + unload + ``gc.collect()``.
2. **Verify + install** of the small wheel vs ``pip install`` into a fresh venv.
3. **Venv creation**: the loader's stdlib builder vs ``venv.EnvBuilder`` defaults vs
   ``virtualenv.cli_run`` (warm; its import time is reported separately).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
import weakref
from pathlib import Path
from typing import Any

from benchmarks.harness import Row, measure, print_table, write_json

ROOT = Path(__file__).resolve().parents[1]
HELLO_PROJECT = ROOT / "tests" / "packages" / "loader-hello"
PLUGIN_MODULE = "cbus_loader_hello.plugin"
PLUGIN_TOPS = ("cbus_loader_hello", "cbusns_shared")
MODES = ("naive", "naive+importer-cache", "purge_generation")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _naive_unload(site_dir: str, *, importer_cache: bool) -> None:
    for name in [n for n in sys.modules if n.split(".")[0] in PLUGIN_TOPS]:
        del sys.modules[name]
    sys.path.remove(site_dir)
    if importer_cache:
        prefix = site_dir + os.sep
        for key in [k for k in sys.path_importer_cache if k == site_dir or k.startswith(prefix)]:
            del sys.path_importer_cache[key]


def run_cycles(mode: str, site_dirs: list[str]) -> dict[str, Any]:
    """Activate and unload each of ``site_dirs`` once, in this process; measure."""
    from controllerbus.loader import purge_generation

    module_refs: list[weakref.ref[object]] = []
    class_refs: list[weakref.ref[object]] = []
    # A module-level function keeps its module's globals: alive = namespace leaked,
    # even when the module object itself is gone.
    function_refs: list[weakref.ref[object]] = []
    cycle_ms: list[float] = []
    gc.collect()
    rss_start = _rss_bytes()
    rss_first = rss_start
    for index, site_dir in enumerate(site_dirs):
        start = time.perf_counter()
        sys.path.insert(0, site_dir)
        plugin: Any = importlib.import_module(PLUGIN_MODULE)
        controller = plugin.HelloController()
        plugin.lookup(controller)
        module_refs.append(weakref.ref(plugin))
        class_refs.append(weakref.ref(plugin.HelloController))
        function_refs.append(weakref.ref(plugin.lookup))
        del plugin, controller
        if mode == "purge_generation":
            purge_generation(site_dir)
        else:
            _naive_unload(site_dir, importer_cache=mode == "naive+importer-cache")
        gc.collect()
        cycle_ms.append((time.perf_counter() - start) * 1000)
        if index == 0:
            rss_first = _rss_bytes()
    gc.collect()
    rss_end = _rss_bytes()
    return {
        "mode": mode,
        "cycles": len(site_dirs),
        "rss_growth_mb": (rss_end - rss_first) / 2**20,
        "rss_total_growth_mb": (rss_end - rss_start) / 2**20,
        "leaked_modules": sum(ref() is not None for ref in module_refs),
        "leaked_classes": sum(ref() is not None for ref in class_refs),
        "leaked_namespaces": sum(ref() is not None for ref in function_refs),
        "cycle_median_ms": statistics.median(cycle_ms),
        "importer_cache_entries": len(sys.path_importer_cache),
    }


def _child_cycles(mode: str, dirs_root: Path, cycles: int) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_unload", "--child", mode, str(dirs_root)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=600,
        env={**os.environ, "CBUS_BENCH_CYCLES": str(cycles)},
    )
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _build_wheel(out: Path) -> Path:
    from hatchling.builders.wheel import WheelBuilder

    (wheel,) = WheelBuilder(str(HELLO_PROJECT)).build(directory=str(out), versions=["standard"])
    return Path(wheel)


def bench_unload(work: Path, wheel: Path, cycles: int) -> list[dict[str, Any]]:
    """Part 1: unload cycles in child processes, one per mode."""
    from controllerbus.loader import apply_install, plan_install, verify_wheel

    generation = apply_install(plan_install(work / "state", verify_wheel(wheel)))
    dirs_root = work / "generations"
    for index in range(cycles):
        # A fresh directory per cycle, as every hot reload installs a new generation.
        shutil.copytree(generation.site_packages, dirs_root / f"{index:04d}" / "site-packages")
    return [_child_cycles(mode, dirs_root, cycles) for mode in MODES]


def bench_install(work: Path, wheel: Path, repeat: int) -> list[Row]:
    """Part 2: verify + install vs pip install into a fresh venv."""
    from controllerbus.loader import apply_install, plan_install, verify_wheel
    from controllerbus.loader.generation import _create_venv

    state = work / "install-state"
    pip_venv = work / "pip-venv"

    def reset_state() -> None:
        shutil.rmtree(state, ignore_errors=True)

    def ours() -> None:
        apply_install(plan_install(state, verify_wheel(wheel)))

    def ours_nocompile() -> None:
        apply_install(plan_install(state, verify_wheel(wheel), compile_bytecode=False))

    def reset_pip() -> None:
        shutil.rmtree(pip_venv, ignore_errors=True)

    def pip_install() -> None:
        _create_venv(pip_venv)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(pip_venv / "bin" / "python"),
                "install",
                "--quiet",
                "--no-deps",
                "--no-index",
                "--no-cache-dir",
                "--disable-pip-version-check",
                str(wheel),
            ],
            check=True,
            capture_output=True,
        )

    verified = verify_wheel(wheel)
    reset_state()
    ours()  # warm the imports (installer, compileall) once, untimed
    return [
        measure("verify_wheel", lambda: verify_wheel(wheel), repeat=repeat * 5),
        measure(
            "plan+apply_install",
            lambda: apply_install(plan_install(state, verified)),
            setup=reset_state,
            repeat=repeat * 2,
            baseline="pip install (fresh venv)",
        ),
        measure(
            "verify+install (ours)",
            ours,
            setup=reset_state,
            repeat=repeat * 2,
            baseline="pip install (fresh venv)",
            note="venv + installer + bytecode + fsync",
        ),
        measure(
            "verify+install, no bytecode",
            ours_nocompile,
            setup=reset_state,
            repeat=repeat * 2,
            baseline="pip install (fresh venv)",
        ),
        measure(
            "reuse existing generation",
            lambda: apply_install(plan_install(state, verified)),
            repeat=repeat * 5,
            baseline="pip install (fresh venv)",
        ),
        measure(
            "pip install (fresh venv)",
            pip_install,
            setup=reset_pip,
            repeat=repeat,
            note="stdlib venv + pip --python, --no-deps --no-index",
        ),
    ]


def bench_venv(work: Path, repeat: int) -> tuple[list[Row], float]:
    """Part 3: venv creation; returns rows and virtualenv's import time in ms."""
    from controllerbus.loader.generation import _create_venv

    counter = iter(range(10**6))

    def target() -> Path:
        return work / "venvs" / str(next(counter))

    start = time.perf_counter()
    import virtualenv

    import_ms = (time.perf_counter() - start) * 1000
    virtualenv.cli_run(["--no-seed", "--activators", "", "-q", str(target())], setup_logging=False)
    stdlib = venv.EnvBuilder(with_pip=False, symlinks=True)
    rows = [
        measure("loader venv (stdlib, no activate)", lambda: _create_venv(target()), repeat=repeat),
        measure(
            "venv.EnvBuilder(with_pip=False)",
            lambda: stdlib.create(target()),
            repeat=repeat,
            baseline="loader venv (stdlib, no activate)",
        ),
        measure(
            "virtualenv.cli_run --no-seed (warm)",
            lambda: virtualenv.cli_run(
                ["--no-seed", "--activators", "", "-q", str(target())], setup_logging=False
            ),
            repeat=repeat,
            baseline="loader venv (stdlib, no activate)",
            note=f"+ {import_ms:.0f} ms import once",
        ),
    ]
    return rows, import_ms


def _print_unload(results: list[dict[str, Any]]) -> None:
    print(f"\n## Unload cycles ({results[0]['cycles']} cycles, one process per mode)")
    print(
        f"{'mode':<22}  {'RSS growth MB':>13}  {'(from start)':>12}  {'leaked modules':>14}"
        f"  {'leaked globals':>14}  {'leaked classes':>14}  {'cycle ms':>8}"
    )
    for r in results:
        print(
            f"{r['mode']:<22}  {r['rss_growth_mb']:>13.2f}  {r['rss_total_growth_mb']:>12.2f}"
            f"  {r['leaked_modules']:>14}  {r['leaked_namespaces']:>14}"
            f"  {r['leaked_classes']:>14}  {r['cycle_median_ms']:>8.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--child``, one unload mode in this process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="fewer cycles and repeats")
    parser.add_argument("--cycles", type=int, default=None, help="unload cycles (default 200)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DIRS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        mode, dirs_root = args.child
        cycles = int(os.environ["CBUS_BENCH_CYCLES"])
        dirs = sorted(str(p / "site-packages") for p in Path(dirs_root).iterdir())[:cycles]
        print(json.dumps(run_cycles(mode, dirs)))
        return 0

    cycles = args.cycles or (50 if args.quick else 200)
    repeat = 2 if args.quick else 5
    with tempfile.TemporaryDirectory(prefix="cbus-bench-unload-") as tmp:
        work = Path(tmp)
        wheel = _build_wheel(work / "dist")
        unload = bench_unload(work, wheel, cycles)
        install_rows = bench_install(work, wheel, repeat)
        venv_rows, virtualenv_import_ms = bench_venv(work, repeat * 4)

    _print_unload(unload)
    print_table("Verify + install of a small plugin wheel", install_rows)
    print_table("Venv creation", venv_rows)
    path = write_json(
        "bench_unload",
        [*install_rows, *venv_rows],
        extra={"unload": unload, "virtualenv_import_ms": virtualenv_import_ms},
    )
    print(f"\nwrote {path}")
    purge = next(r for r in unload if r["mode"] == "purge_generation")
    ok = (
        purge["rss_growth_mb"] < 2
        and purge["leaked_modules"] == 0
        and purge["leaked_namespaces"] == 0
    )
    print(
        f"goal (< 2 MB RSS growth, 0 leaked modules over {cycles} cycles): "
        f"{'met' if ok else 'NOT met'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
