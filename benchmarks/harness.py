"""Shared benchmark harness: time callables, print a table, write JSON.

Every benchmark measures its baseline in the same run as its own numbers, because
machines are shared and noisy: compare the ratios, not the absolutes.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["RESULTS_DIR", "Row", "measure", "print_table", "write_json"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True)
class Row:
    """One measured line: what, its baseline (if any), min and median in ms."""

    name: str
    min_ms: float
    median_ms: float
    runs: int
    baseline: str = ""
    note: str = ""


def measure(
    name: str,
    fn: Callable[[], object],
    *,
    repeat: int = 10,
    setup: Callable[[], object] | None = None,
    baseline: str = "",
    note: str = "",
) -> Row:
    """Run ``fn`` ``repeat`` times (``setup`` before each, untimed) and summarise."""
    times: list[float] = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return Row(name, min(times), statistics.median(times), repeat, baseline, note)


def print_table(title: str, rows: Sequence[Row]) -> None:
    """Print rows as an aligned table; ratios are against the row named as baseline."""
    by_name = {row.name: row for row in rows}
    width = max(len(row.name) for row in rows)
    print(f"\n## {title}")
    print(f"{'case':<{width}}  {'min ms':>10}  {'median ms':>10}  {'runs':>5}  ratio")
    for row in rows:
        base = by_name.get(row.baseline)
        ratio = f"{row.median_ms / base.median_ms:.3f}x {row.baseline}" if base else ""
        note = f"  ({row.note})" if row.note else ""
        print(
            f"{row.name:<{width}}  {row.min_ms:>10.2f}  {row.median_ms:>10.2f}"
            f"  {row.runs:>5}  {ratio}{note}"
        )


def write_json(name: str, rows: Sequence[Row], extra: dict[str, object] | None = None) -> Path:
    """Write ``benchmarks/results/<name>.json`` with machine info; return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {
        "benchmark": name,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": [asdict(row) for row in rows],
        **(extra or {}),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
