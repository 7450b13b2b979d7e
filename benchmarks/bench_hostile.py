"""Hostile-file benchmark: from a file appearing in the plugins dir to its rejection.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_hostile [--quick] [--deadline S] [--repeat N]

A real ``cbus daemon`` subprocess (``tests/hostile/driver.py``) serves the test
plugin with ``--trial-timeout S``. Each hostile file is dropped into the plugins
directory as a newer wheel of the plugin (rename into place); the time is measured
from the rename until ``manifest.json`` records the rejection. Cases: a corrupt zip
(refused by verification), an import that crashes the trial, and the worst case, an
import that never returns (refused when the trial deadline kills it).

Baseline, same run: a good newer wheel from the rename until the manifest shows it
active (the whole watch → verify → install → trial → switch pipeline). The bound
printed is ``deadline + that baseline``: no hostile file may take longer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.hostile.harness import DaemonUnderTest, GoodPlugin, build_good_plugin
from tests.loader.pluginkit import rewrite_member
from tests.loader.wheelkit import corrupt_member

from benchmarks.harness import Row, print_table, write_json

_HOOK = "CONTROLLER_ID = "


def _hang(good: GoodPlugin, src: Path, dst: Path) -> Path:
    code = "import time\ntime.sleep(10**6)\n"
    return rewrite_member(src, dst, good.greeter_member, _HOOK, code + _HOOK)


def _crash(good: GoodPlugin, src: Path, dst: Path) -> Path:
    return rewrite_member(src, dst, good.greeter_member, _HOOK, "import os\nos._exit(3)\n" + _HOOK)


def _corrupt(good: GoodPlugin, src: Path, dst: Path) -> Path:
    return corrupt_member(src, dst, good.greeter_member)


def _good(good: GoodPlugin, src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


Make = Callable[[GoodPlugin, Path, Path], Path]


def _time_one(dut: DaemonUnderTest, make: Make, staging: Path, *, good: bool) -> float:
    source = dut.next_wheel(staging)
    made = make(dut.good, source, staging / "out" / source.name)
    started = time.perf_counter()
    dropped = dut.drop(made)
    key = dut.good.binary_id
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            manifest = json.loads((dut.state / "manifest.json").read_text())
        except (OSError, ValueError):
            manifest = {"plugins": []}
        for record in manifest["plugins"]:
            mine = record["binary_id"] == key and record["wheel"] == str(dropped)
            if good and mine and record["status"] == "active":
                return (time.perf_counter() - started) * 1000
            if not good:
                failures = record.get("failures", [])
                if any(f.get("wheel") == str(dropped) for f in failures):
                    elapsed = (time.perf_counter() - started) * 1000
                    dut.remove(dropped)
                    return elapsed
        time.sleep(0.005)
    raise RuntimeError(f"no outcome for {dropped.name} within 120 s:\n{dut.text()[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run per case")
    parser.add_argument("--deadline", type=float, default=2.0, help="--trial-timeout (s)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else args.repeat
    cases: list[tuple[str, Make, bool]] = [
        ("good newer wheel active (baseline)", _good, True),
        ("corrupt zip rejected", _corrupt, False),
        ("import crashes the trial, rejected", _crash, False),
        ("import never returns, rejected (worst case)", _hang, False),
    ]
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        root = Path(tmp)
        good = build_good_plugin(root / "good", "bench_hostile")
        dut = DaemonUnderTest(root / "daemon", good, args=("--trial-timeout", str(args.deadline)))
        dut.start()
        times: dict[str, list[float]] = {name: [] for name, _make, _good in cases}
        try:
            for _ in range(repeat):
                for name, make, is_good in cases:
                    times[name].append(_time_one(dut, make, root / "staging", good=is_good))
            dut.stop()
        finally:
            dut.kill()
    base = cases[0][0]
    rows = [
        Row(name, min(t), statistics.median(t), len(t), baseline="" if name == base else base)
        for name, t in times.items()
    ]
    worst = max(max(t) for name, t in times.items() if name != base)
    bound = args.deadline * 1000 + max(times[base])
    print_table(f"hostile file → rejection recorded (trial deadline {args.deadline:g} s)", rows)
    print(f"\nworst case {worst:.0f} ms; bound (deadline + baseline) {bound:.0f} ms")
    path = write_json(
        "bench_hostile",
        rows,
        {"deadline_s": args.deadline, "worst_ms": round(worst, 1), "bound_ms": round(bound, 1)},
    )
    print(f"wrote {path}")
    if worst > bound:
        print("FAIL: a rejection took longer than the deadline bound", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
