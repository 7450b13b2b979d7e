"""Verify benchmark: the cost of the hardened wheel checks against the verify before them.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_verify [--quick]

Two wheels: the tiny loader-hello test wheel (8 members) and the same wheel with 200
extra modules (~3 KB each). For each, in the same run:

* ``baseline verify``: ``verify_wheel`` as it was before the hardening (commit
  ``BASELINE_COMMIT``, loaded from git; the row is skipped without git);
* ``verify``: the current ``verify_wheel`` (raw names, modes, overlap, limits);
* ``verify strict``: the same with ``strict_permissions=True`` (the daemon's default:
  fd-based trust checks of the wheel and its directory chain);
* ``check_members``: the member-directory checks alone (names, modes, duplicates,
  overlap, limits), on an already parsed archive;
* ``check_directory``: the trust walk of the plugins directory alone.

The ratio column compares each row to the baseline verify of the same wheel.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from benchmarks.harness import Row, print_table, write_json
from benchmarks.harness import measure as _measure

ROOT = Path(__file__).resolve().parents[1]
HELLO_PROJECT = ROOT / "tests" / "packages" / "loader-hello"
BASELINE_COMMIT = "729ef98"
MODULE_TEXT = "".join(f"def f{i}(x: int) -> int:\n    return x + {i}\n\n\n" for i in range(80))


def measure(name: str, fn: Callable[[], object], **kwargs: object) -> Row:
    """:func:`benchmarks.harness.measure` after one untimed warm-up call."""
    fn()
    return _measure(name, fn, **kwargs)  # type: ignore[arg-type]  # harness keywords


def _baseline_verify(work: Path) -> Callable[[Path], object] | None:
    """``verify_wheel`` of :data:`BASELINE_COMMIT`, imported from a temp file."""
    try:
        source = subprocess.run(
            ["git", "show", f"{BASELINE_COMMIT}:src/controllerbus/loader/verify.py"],
            capture_output=True,
            check=True,
            cwd=ROOT,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    path = work / "baseline_verify.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("_cbus_baseline_verify", path)
    assert spec is not None
    assert spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    fn: Callable[[Path], object] = module.verify_wheel
    return fn


def _wheels(work: Path) -> dict[str, Path]:
    sys.path.insert(0, str(ROOT))
    from tests.loader.wheelkit import build_wheel, repack

    tiny = build_wheel(HELLO_PROJECT, work / "tiny")
    big = repack(
        tiny,
        work / "big" / tiny.name,
        add={f"cbus_loader_hello/mod_{i:03d}.py": MODULE_TEXT.encode() for i in range(200)},
    )
    return {"tiny": tiny, "200-module": big}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args, _unknown = parser.parse_known_args(argv)
    repeat = 5 if args.quick else 20

    from controllerbus.loader.members import check_members
    from controllerbus.loader.permissions import check_directory
    from controllerbus.loader.verify import verify_wheel

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="cbus-bench-verify-") as tmp:
        work = Path(tmp)
        work.chmod(0o700)
        baseline = _baseline_verify(work)
        for label, wheel in _wheels(work).items():
            base = f"baseline verify ({label})"
            if baseline is not None:
                rows.append(measure(base, functools.partial(baseline, wheel), repeat=repeat))
            note = f"{wheel.stat().st_size // 1024} KiB"
            rows.append(
                measure(
                    f"verify ({label})",
                    functools.partial(verify_wheel, wheel),
                    repeat=repeat,
                    baseline=base,
                    note=note,
                )
            )
            rows.append(
                measure(
                    f"verify strict ({label})",
                    functools.partial(verify_wheel, wheel, strict_permissions=True),
                    repeat=repeat,
                    baseline=base,
                )
            )
            data = wheel.read_bytes()
            with zipfile.ZipFile(wheel) as zf:
                infos = zf.infolist()
            rows.append(
                measure(
                    f"check_members ({label})",
                    functools.partial(check_members, infos, data),
                    repeat=repeat,
                    baseline=base,
                    note=f"{len(infos)} members",
                )
            )
        rows.append(
            measure(
                "check_directory (plugins dir)",
                lambda: check_directory(work, "plugins directory"),
                repeat=repeat,
                note=f"{len(work.parts)} path components",
            )
        )
    print_table("verify: hardened checks vs the verify before them", rows)
    path = write_json("bench_verify", rows, {"baseline_commit": BASELINE_COMMIT})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
