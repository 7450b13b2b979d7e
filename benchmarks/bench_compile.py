"""Benchmark the module compiler against the build tools it sits on, in the same run.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_compile [--quick]

Two generated plugins (in a temporary directory): *tiny* (one module with a
factory) and *200 modules* (a package of 200 modules, 20 of them with a factory).
For each:

* ``cbus warm``: :func:`compile_plugin` in this process after a first compile, with
  one module's content changed before every run, so every run really builds
  (analysis + overlay update + hatchling + atomic publish + cleanup).
* ``cbus no-op``: the same call with nothing changed (analysis + hash + stat).
* ``cbus cold``: the first compile in a fresh interpreter, imports included (timed
  inside the child, from before ``import controllerbus.compiler``).
* ``cbus-compile CLI``: the console script's wall time, interpreter start included.
* baselines: ``hatchling`` ``WheelBuilder`` in-process on the same overlay project
  (warm, and cold in a fresh interpreter), ``python -m build --wheel`` isolated and
  ``--no-isolation`` on the same overlay, and ``uv build`` when ``uv`` is on PATH.

The isolated ``python -m build`` baseline installs hatchling from a local wheelhouse
(``export_wheelhouse``, no network), which is faster than a download would be.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import Row, measure, print_table, write_json
from controllerbus.compiler import CompileOptions, compile_plugin, export_wheelhouse

_MODULE = '''\
"""Generated module {index} of the benchmark plugin."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Thing{index}:
    """Some state, to give the module a realistic size."""

    name: str = "thing-{index}"
    count: int = {index}

    def describe(self) -> str:
        return f"{{self.name}} x {{self.count}}"

    def bump(self, by: int = 1) -> int:
        self.count += by
        return self.count


def helper_{index}(values: list[int]) -> int:
    """Sum the values, skipping negatives."""
    return sum(v for v in values if v >= 0)
'''

_FACTORY = '''

def new_factory(bus: object) -> Thing{index}:
    """Benchmark factory {index}."""
    return Thing{index}()
'''


def make_plugin(root: Path, name: str, modules: int, factories: int) -> Path:
    """Write a src-layout plugin project with ``modules`` modules; return its root."""
    package = root / "src" / name.replace("-", "_")
    package.mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "{name}"
            version = "1.0.0"
            requires-python = ">=3.11"
            dependencies = ["controllerbus"]
            """
        )
    )
    (package / "__init__.py").write_text(f'"""Benchmark plugin {name}."""\n')
    for index in range(modules):
        text = _MODULE.format(index=index)
        if index < factories:
            text += _FACTORY.format(index=index)
        (package / f"mod_{index:03d}.py").write_text(text)
    return root


def _child_ms(code: str, runs: int, setup: Callable[[int], None]) -> list[float]:
    """Run ``code`` in fresh interpreters; each prints its own elapsed ms last."""
    times = []
    for run in range(runs):
        setup(run)
        out = subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout
        times.append(float(out.split()[-1]))
    return times


def _timed(*lines: str) -> str:
    """A child script that prints the ms its ``lines`` took, imports included."""
    body = "\n".join(lines)
    return (
        f"import time\nt = time.perf_counter()\n{body}\nprint((time.perf_counter() - t) * 1000)\n"
    )


def _row(name: str, times: list[float], baseline: str = "", note: str = "") -> Row:
    return Row(name, min(times), statistics.median(times), len(times), baseline, note)


def bench_plugin(label: str, target: Path, work: Path, wheelhouse: Path, quick: bool) -> list[Row]:
    """All rows for one plugin size."""
    repeat = 5 if quick else 20
    slow_repeat = 1 if quick else 3
    cold_repeat = 2 if quick else 5
    rows: list[Row] = []
    out = work / "out"
    codegen_dir = work / "codegen"
    first = compile_plugin([target], CompileOptions(output_dir=out, codegen_dir=codegen_dir))
    overlay = first.codegen_dir
    edited = next((target / "src").rglob("*.py"))
    original = edited.read_text()
    counter = iter(range(1_000_000))

    def change() -> None:
        edited.write_text(original + f"\n# edit {next(counter)}\n")

    def compile_warm() -> None:
        result = compile_plugin([target], CompileOptions(output_dir=out, codegen_dir=codegen_dir))
        assert result.rebuilt

    def compile_noop() -> None:
        result = compile_plugin([target], CompileOptions(output_dir=out, codegen_dir=codegen_dir))
        assert not result.rebuilt

    from hatchling.builders.wheel import WheelBuilder

    scratch = work / "hatchling-out"

    def hatchling_build() -> None:
        list(WheelBuilder(str(overlay)).build(directory=str(scratch), versions=["standard"]))

    hatch = f"{label}: hatchling WheelBuilder in-process"
    hatchling_build()  # first call imports plugins; the warm rows compare warm to warm
    rows.append(measure(hatch, hatchling_build, repeat=repeat, note="same overlay"))
    compile_noop()
    rows.append(
        measure(
            f"{label}: cbus compile warm",
            compile_warm,
            repeat=repeat,
            setup=change,
            baseline=hatch,
            note="content changed every run",
        )
    )
    rows.append(
        measure(
            f"{label}: cbus compile no-op",
            compile_noop,
            repeat=repeat,
            baseline=hatch,
            note="nothing changed: no build",
        )
    )

    # Cold: a fresh interpreter each time, fresh output and codegen directories.
    cold_out = work / "cold"

    def fresh(_run: int) -> None:
        shutil.rmtree(cold_out, ignore_errors=True)

    hatchling_child = _timed(
        "from hatchling.builders.wheel import WheelBuilder",
        f"list(WheelBuilder({str(overlay)!r}).build(",
        f"    directory={str(cold_out / 'h')!r}, versions=['standard']))",
    )
    compile_child = _timed(
        "from pathlib import Path",
        "from controllerbus.compiler import CompileOptions, compile_plugin",
        f"r = compile_plugin([Path({str(target)!r})], CompileOptions(",
        f"    output_dir=Path({str(cold_out / 'o')!r}),",
        f"    codegen_dir=Path({str(cold_out / 'cg')!r})))",
        "assert r.rebuilt",
    )
    hatch_cold = f"{label}: hatchling cold (fresh process, incl. import)"
    rows.append(_row(hatch_cold, _child_ms(hatchling_child, cold_repeat, fresh)))
    rows.append(
        _row(
            f"{label}: cbus compile cold (fresh process, incl. import)",
            _child_ms(compile_child, cold_repeat, fresh),
            baseline=hatch_cold,
        )
    )

    cli = shutil.which("cbus-compile") or str(Path(sys.executable).with_name("cbus-compile"))
    no_isolation = f"{label}: python -m build --wheel --no-isolation"
    rows.append(
        measure(
            no_isolation,
            lambda: _run(
                [
                    sys.executable,
                    "-m",
                    "build",
                    "--wheel",
                    "--no-isolation",
                    "--outdir",
                    str(cold_out / "b"),
                    str(overlay),
                ]
            ),
            repeat=cold_repeat,
            setup=lambda: fresh(0),
            note="same overlay, wall",
        )
    )
    rows.append(
        measure(
            f"{label}: cbus-compile CLI cold",
            lambda: _run(
                [
                    cli,
                    "compile",
                    "-o",
                    str(cold_out / "o"),
                    "--codegen-dir",
                    str(cold_out / "cg"),
                    str(target),
                ]
            ),
            repeat=cold_repeat,
            setup=lambda: fresh(0),
            baseline=no_isolation,
            note="wall, interpreter start included",
        )
    )
    isolated_env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}
    isolated = f"{label}: python -m build --wheel (isolated)"
    rows.append(
        measure(
            isolated,
            lambda: _run(
                [
                    sys.executable,
                    "-m",
                    "build",
                    "--wheel",
                    "--outdir",
                    str(cold_out / "b"),
                    str(overlay),
                ],
                env=isolated_env,
            ),
            repeat=slow_repeat,
            setup=lambda: fresh(0),
            note="hatchling from a local wheelhouse",
        )
    )
    rows.append(
        measure(
            f"{label}: cbus-compile --isolated",
            lambda: _run(
                [
                    cli,
                    "compile",
                    "--isolated",
                    "-o",
                    str(cold_out / "o"),
                    "--codegen-dir",
                    str(cold_out / "cg"),
                    str(target),
                ],
                env=isolated_env,
            ),
            repeat=slow_repeat,
            setup=lambda: fresh(0),
            baseline=isolated,
            note="wall",
        )
    )
    uv = shutil.which("uv")
    if uv is not None:
        rows.append(
            measure(
                f"{label}: uv build --wheel",
                lambda: _run(
                    [uv, "build", "--wheel", "--out-dir", str(cold_out / "u"), str(overlay)]
                ),
                repeat=slow_repeat,
                setup=lambda: fresh(0),
                note="same overlay",
            )
        )
    edited.write_text(original)
    return rows


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(cmd, check=True, capture_output=True, env=env)


def main(argv: list[str] | None = None) -> None:
    """Generate the plugins, measure, print the table and write results/compile.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cbus-bench-compile-") as tmp:
        root = Path(tmp)
        wheelhouse = root / "wheelhouse"
        export_wheelhouse(wheelhouse)
        rows: list[Row] = []
        for label, modules, factories in (("tiny", 1, 1), ("200 modules", 200, 20)):
            slug = label.replace(" ", "-")
            target = make_plugin(root / f"src-{slug}", f"bench-{slug}", modules, factories)
            rows += bench_plugin(label, target, root / f"work-{slug}", wheelhouse, args.quick)
    print_table("cbus-compile vs. build tools (ms)", rows)
    uv_note = "installed" if shutil.which("uv") else "not installed"
    print(f"\nuv build: {uv_note}")
    path = write_json("compile", rows, {"uv": uv_note, "quick": args.quick})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
