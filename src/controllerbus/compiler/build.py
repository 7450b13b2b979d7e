"""Run the wheel build of an overlay, publish it atomically, clean up older wheels.

Two ways to build, producing byte-identical wheels:

* **in-process** (default): ``hatchling.builders.wheel.WheelBuilder(root)`` with the
  overlay as an explicit root, so the host's working directory is never changed.
  hatchling reads ``SOURCE_DATE_EPOCH`` only from ``os.environ``; we set it for the
  duration of the build and restore the previous value, under a process-wide lock
  (concurrent in-process builds are serialised; each takes milliseconds).
* **isolated**: ``python -m build --wheel`` in a subprocess, which creates a fresh
  environment and installs the overlay's ``build-system.requires`` (the host's exact
  hatchling version) with pip. ``SOURCE_DATE_EPOCH`` is passed in the child's
  environment only. pip's own environment variables apply, so an offline CI points
  ``PIP_NO_INDEX=1`` and ``PIP_FIND_LINKS`` at a wheelhouse (see
  :func:`controllerbus.compiler.wheelhouse.export_wheelhouse`).

hatchling and build are imported lazily: a loader that only loads prebuilt wheels
never pays for them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from controllerbus._fs import fsync_dir
from controllerbus.compiler.errors import BuildFailed
from controllerbus.compiler.plan import SOURCE_DATE_EPOCH

__all__ = [
    "BUILD_DIR_PREFIX",
    "build_wheel",
    "cleanup_wheels",
    "file_sha256",
    "hatchling_version",
    "publish_wheel",
]

logger = logging.getLogger(__name__)

#: Temporary build directories inside the output directory start with this (hidden,
#: so a directory watcher that ignores dot-files never sees a half-written wheel).
BUILD_DIR_PREFIX = ".cbus-build-"

_environ_lock = threading.Lock()


@functools.cache
def hatchling_version() -> str:
    """The installed hatchling's version (pinned in every overlay)."""
    import importlib.metadata  # lazily: ~20 ms, and only a build needs it

    return importlib.metadata.version("hatchling")


@contextlib.contextmanager
def _source_date_epoch() -> Iterator[None]:
    # hatchling has no parameter for it; it reads os.environ when the archive opens.
    key, value = "SOURCE_DATE_EPOCH", str(SOURCE_DATE_EPOCH)
    with _environ_lock:
        previous = os.environ.get(key)
        os.environ[key] = value
        try:
            yield
        finally:
            if previous is None:
                del os.environ[key]
            else:
                os.environ[key] = previous


def build_wheel(overlay: Path, directory: Path, *, isolated: bool = False) -> Path:
    """Build the overlay at ``overlay`` into the empty directory ``directory``.

    Returns:
        The path of the one wheel built.

    Raises:
        BuildFailed: hatchling raised, or ``python -m build`` failed (its output is
            kept in :attr:`BuildFailed.output`).
    """
    if isolated:
        return _build_isolated(overlay, directory)
    return _build_in_process(overlay, directory)


def _build_in_process(overlay: Path, directory: Path) -> Path:
    from hatchling.builders.wheel import WheelBuilder

    with _source_date_epoch():
        try:
            builder = WheelBuilder(str(overlay))
            artifacts = list(builder.build(directory=str(directory), versions=["standard"]))
        except Exception as exc:  # hatchling raises plain exceptions; name them once here
            raise BuildFailed(overlay, f"hatchling: {type(exc).__name__}: {exc}") from exc
    return _one_wheel(overlay, [Path(a) for a in artifacts])


def _build_isolated(overlay: Path, directory: Path) -> Path:
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)}
    cmd = [sys.executable, "-m", "build", "--wheel", "--outdir", str(directory), str(overlay)]
    logger.debug("running %s", cmd)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildFailed(
            overlay,
            f"python -m build exited with status {proc.returncode}",
            output=proc.stdout + proc.stderr,
        )
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("python -m build output:\n%s", proc.stdout + proc.stderr)
    return _one_wheel(overlay, sorted(directory.glob("*.whl")))


def _one_wheel(overlay: Path, wheels: list[Path]) -> Path:
    if len(wheels) != 1:
        raise BuildFailed(overlay, f"expected one wheel, got {[w.name for w in wheels]}")
    return wheels[0]


def file_sha256(path: Path) -> str:
    """sha256 hex of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def publish_wheel(built: Path, target: Path) -> str:
    """Move ``built`` to ``target`` atomically (same filesystem) and durably.

    The file is fsynced before ``os.replace`` and the directory after it, so a
    reader sees either no wheel or the whole wheel, also across a crash.

    Returns:
        The wheel's sha256 hex.
    """
    with open(built, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
        os.fsync(f.fileno())
    os.replace(built, target)
    fsync_dir(target.parent)
    return digest


def cleanup_wheels(output_dir: Path, module: str, keep: str) -> list[Path]:
    """Remove every wheel of the plugin ``module`` in ``output_dir`` except ``keep``.

    A wheel belongs to the plugin when its whole name matches
    ``<module>-<version>-py3-none-any.whl`` (anchored, unlike Go's unanchored search,
    so ``cbus_plugin_a`` never removes ``cbus_plugin_ab-...``).

    Returns:
        The removed paths, sorted.
    """
    pattern = re.compile(rf"{re.escape(module)}-[^-]+-py3-none-any\.whl")
    removed: list[Path] = []
    with os.scandir(output_dir) as entries:
        for entry in entries:
            if entry.name != keep and pattern.fullmatch(entry.name) and entry.is_file():
                with contextlib.suppress(FileNotFoundError):  # a concurrent cleanup won
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    for path in sorted(removed):
        logger.info("removed old plugin wheel %s", path)
    return sorted(removed)
