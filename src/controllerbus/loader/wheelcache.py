"""Mirror the wheels a trust file pins from a package index into a local directory.

Rules: docs/production.md#loading-from-a-package-index.

With ``--index-url`` the daemon keeps its plugins directory (the default
``--find-links`` location too) filled with exactly the wheels the trust file names:
:func:`mirror_trusted` fetches each entry's wheel that is not there yet, checks its
sha256 against the pin *before* it gets its final name (so the filesystem loader
never sees an unpinned file), and leaves everything else alone. Loading then works
as from a local wheelhouse: offline once mirrored, same trust checks.

A ``name==version`` entry takes the first file of that version on the index that is
a wheel for this interpreter and whose hash is pinned; source distributions are
never downloaded. :func:`mirror_forever` repeats the mirror when the trust file
changes (and retries after a failed pass); an index that goes away only delays new
wheels, the running generations keep serving.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from packaging.tags import sys_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from controllerbus.errors import LoaderError
from controllerbus.loader.index import IndexClient, IndexFile, IndexUnavailable
from controllerbus.loader.trust import TrustEntry, TrustFile, TrustPolicy, sha256_of

__all__ = ["MirrorReport", "mirror_forever", "mirror_trusted"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class MirrorReport:
    """What one mirror pass did.

    Attributes:
        downloaded: file names fetched from the index.
        present: file names already in the directory with a pinned hash.
        errors: one message per entry that could not be mirrored.
    """

    downloaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _wanted_files(entry: TrustEntry, files: list[IndexFile]) -> list[IndexFile]:
    tags = set(sys_tags())
    out = []
    for file in files:
        if file.yanked or not file.filename.endswith(".whl"):
            continue
        if entry.filename:
            if file.filename == entry.filename:
                out.append(file)
            continue
        try:
            _name, version, _build, ftags = parse_wheel_filename(file.filename)
        except InvalidWheelFilename:
            continue
        if version != entry.version or not (set(ftags) & tags):
            continue
        declared = file.hashes.get("sha256")
        if declared is None or declared in entry.hashes:
            out.append(file)
    return out


def _present(entry: TrustEntry, dest: Path) -> str | None:
    """The name of a file in ``dest`` that already satisfies ``entry``."""
    names = [entry.filename] if entry.filename else []
    if not entry.filename:
        for path in sorted(dest.glob("*.whl")):
            try:
                name, version, _b, _t = parse_wheel_filename(path.name)
            except InvalidWheelFilename:
                continue
            if name == entry.name and version == entry.version:
                names.append(path.name)
    for fname in names:
        path = dest / fname
        if path.is_file():
            try:
                if sha256_of(path) in entry.hashes:
                    return fname
            except LoaderError:
                continue
    return None


def _mirror_entry(client: IndexClient, entry: TrustEntry, dest: Path, report: MirrorReport) -> None:
    if (name := _present(entry, dest)) is not None:
        report.present.append(name)
        return
    files = _wanted_files(entry, client.project_files(entry.name))
    if not files:
        report.errors.append(
            f"{entry} (trust file line {entry.line}): no pinned wheel of it on {client.url} "
            "(sdists are never used); upload the wheel CI built"
        )
        return
    for file in files:
        target = dest / file.filename
        tmp = dest / f".{file.filename}.verify"
        sha = client.download(file, tmp)
        if sha not in entry.hashes:
            tmp.unlink(missing_ok=True)
            report.errors.append(
                f"{file.filename}: the index served sha256 {sha}, which the trust file does "
                f"not pin (line {entry.line}); not kept"
            )
            continue
        tmp.replace(target)
        report.downloaded.append(file.filename)
        logger.info("mirrored %s from %s (sha256 %s)", file.filename, client.url, sha[:16])
        return


def mirror_trusted(client: IndexClient, trust: TrustFile, dest: Path) -> MirrorReport:
    """Fetch every wheel ``trust`` pins that ``dest`` lacks (blocking; use a thread).

    Raises:
        IndexUnavailable: the index did not answer (after its retries); files already
            mirrored in this pass are kept.
    """
    dest.mkdir(parents=True, exist_ok=True)
    report = MirrorReport()
    for entry in trust:
        try:
            _mirror_entry(client, entry, dest, report)
        except LoaderError as exc:
            if isinstance(exc, IndexUnavailable):
                raise
            report.errors.append(str(exc))
    for error in report.errors:
        logger.error("index mirror: %s", error)
    return report


async def mirror_forever(
    client: IndexClient,
    policy: TrustPolicy,
    dest: Path,
    *,
    poll: float = 5.0,
    on_change: asyncio.Event | None = None,
) -> None:
    """Mirror whenever the trust file changed or the last pass failed; runs until cancelled.

    Args:
        poll: seconds between checks of the trust file.
        on_change: set after a pass that downloaded something.
    """
    done: TrustFile | None = None
    while True:
        await asyncio.sleep(poll)
        try:
            trust = policy.current()
        except LoaderError as exc:
            logger.error("index mirror paused: %s", exc)
            continue
        if trust == done:
            continue
        try:
            report = await asyncio.to_thread(mirror_trusted, client, trust, dest)
        except LoaderError as exc:
            logger.error("%s", exc)
            continue
        done = trust if not report.errors else None
        if report.downloaded and on_change is not None:
            on_change.set()
