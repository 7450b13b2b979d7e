"""CI recipe: compile every plugin of this directory isolated, prove it, pin it.

Run by ``nox -s plugins`` (and by the test suite, on the repository's own plugins)::

    python plugins/ci_build.py [OUT_DIR]      # default: dist-plugins

For each plugin in :data:`TARGETS` it runs ``cbus-compile compile --isolated`` into
``OUT_DIR``, then ``cbus-compile verify WHEEL TARGET`` (rebuild from the sources,
fail if the bytes differ), and finally
``cbus plugins trust OUT_DIR -o OUT_DIR/trust.txt``: the trust file the fleet's
``cbus daemon --trust`` reads. Exits non-zero on the first failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

TARGETS = {
    # project directory (under plugins/) -> the plugin's stable binary id
    "hot-demo": "controllerbus/examples/hot-demo/codegen-demo/1",
}
"""The plugins CI ships. Libraries they vendor (demo-greeting) are not listed."""

CBUS_COMPILE = str(Path(sys.executable).with_name("cbus-compile"))
CBUS = [sys.executable, "-m", "controllerbus.cli"]


def _run(*args: str) -> str:
    print("+", " ".join(args), file=sys.stderr, flush=True)
    result = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"ci_build: failed ({result.returncode}): {' '.join(args)}")
    return result.stdout


def main(argv: list[str]) -> int:
    """Compile, verify and pin; see the module docstring."""
    out = Path(argv[0] if argv else "dist-plugins").absolute()
    for name, binary_id in TARGETS.items():
        target = str(HERE / name)
        line = _run(
            CBUS_COMPILE, "compile", target, "-o", str(out),
            "--plugin-binary-id", binary_id, "--isolated", "--json",
        )  # fmt: skip
        wheel = json.loads(line.splitlines()[-1])["wheel"]
        _run(CBUS_COMPILE, "verify", wheel, target, "--isolated")
    _run(*CBUS, "plugins", "trust", str(out), "-o", str(out / "trust.txt"))
    print(f"ci_build: {len(TARGETS)} plugin(s) in {out}, pinned in {out / 'trust.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
