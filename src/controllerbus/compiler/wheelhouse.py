"""Repack installed distributions as wheels, for isolated builds without a network.

``cbus-compile compile --isolated`` runs ``python -m build``, whose fresh environment
installs the overlay's ``build-system.requires`` (``hatchling==<host version>``) with
pip. Offline, pip needs those wheels locally. The host already has exactly that
hatchling and its dependencies installed, so we rebuild wheels from the installed
files (listed in each ``RECORD``) instead of downloading anything::

    cbus-compile wheelhouse ./wheelhouse
    PIP_NO_INDEX=1 PIP_FIND_LINKS=./wheelhouse cbus-compile compile --isolated ...

A repacked wheel holds the distribution's files inside ``site-packages`` and its
``.dist-info`` (with a fresh ``RECORD``); compiled bytecode, installer markers
(``INSTALLER``, ``REQUESTED``, ``direct_url.json``) and files installed outside
``site-packages`` (console scripts, which pip regenerates from
``entry_points.txt``) are left out. Editable installs cannot be repacked.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from controllerbus.compiler.build import hatchling_version
from controllerbus.errors import CompileError

if TYPE_CHECKING:
    import importlib.metadata

__all__ = ["WheelhouseError", "export_wheelhouse"]

_SKIP_META = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})
_EPOCH_1980 = (1980, 1, 1, 0, 0, 0)


class WheelhouseError(CompileError):
    """A requirement is not installed (or not in a repackable form) on the host."""


def export_wheelhouse(dest: Path, requirements: Sequence[str] | None = None) -> list[Path]:
    """Write wheels of ``requirements`` and their installed dependencies into ``dest``.

    Args:
        dest: the wheelhouse directory (created if missing).
        requirements: PEP 508 strings; default the host's ``hatchling==<version>``,
            which is what every overlay's ``build-system.requires`` pins.

    Returns:
        The wheel paths, sorted.

    Raises:
        WheelhouseError: a requirement is not installed, its installed version does
            not satisfy it, or it cannot be repacked (editable, no ``RECORD``).
    """
    import importlib.metadata  # lazily, like everything only a build needs

    wanted = list(requirements or [f"hatchling=={hatchling_version()}"])
    closure: dict[NormalizedName, importlib.metadata.Distribution] = {}
    pending = [(Requirement(spec), frozenset[str]()) for spec in wanted]
    while pending:
        req, parent_extras = pending.pop()
        if req.marker is not None and not any(
            req.marker.evaluate({"extra": extra}) for extra in ("", *parent_extras)
        ):
            continue
        name = canonicalize_name(req.name)
        if name in closure:
            continue
        try:
            dist = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            raise WheelhouseError(f"{req.name} is not installed on the host ({req})") from None
        if not req.specifier.contains(dist.version, prereleases=True):
            raise WheelhouseError(f"installed {req.name} {dist.version} does not satisfy {req}")
        closure[name] = dist
        extras = frozenset(req.extras)
        pending.extend((Requirement(r), extras) for r in dist.requires or [])
    dest.mkdir(parents=True, exist_ok=True)
    return sorted(_repack(dist, dest) for dist in closure.values())


def _repack(dist: importlib.metadata.Distribution, dest: Path) -> Path:
    import zipfile
    from email.parser import HeaderParser

    name = dist.metadata["Name"]
    files = dist.files
    if files is None:
        raise WheelhouseError(f"{name}: no RECORD, cannot repack")
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    if direct_url.get("dir_info", {}).get("editable"):
        raise WheelhouseError(f"{name} is an editable install, cannot repack")
    wheel_meta = HeaderParser().parsestr(dist.read_text("WHEEL") or "")
    tags = wheel_meta.get_all("Tag") or ["py3-none-any"]
    tag = "-".join(
        ".".join(sorted({t.split("-")[i] for t in tags}, key=lambda p: (len(p), p)))
        for i in range(3)
    )
    entries: dict[str, bytes] = {}
    info_dir = ""
    for file in files:
        parts = file.parts
        if ".." in parts or file.is_absolute() or "__pycache__" in parts:
            continue
        if file.suffix in (".pyc", ".pyo"):
            continue
        if parts[0].endswith(".dist-info"):
            info_dir = parts[0]
            if len(parts) == 2 and parts[1] in _SKIP_META:
                continue
        entries[file.as_posix()] = Path(str(file.locate())).read_bytes()
    if not info_dir:
        raise WheelhouseError(f"{name}: no .dist-info in RECORD, cannot repack")
    record = "".join(
        f"{path},sha256={_b64(hashlib.sha256(data).digest())},{len(data)}\n"
        for path, data in sorted(entries.items())
    )
    entries[f"{info_dir}/RECORD"] = (record + f"{info_dir}/RECORD,,\n").encode()

    filename = f"{canonicalize_name(name).replace('-', '_')}-{dist.version}-{tag}.whl"
    target = dest / filename
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{filename}.")
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
            for path, data in sorted(
                entries.items(), key=lambda kv: (kv[0].endswith("/RECORD"), kv[0])
            ):
                info = zipfile.ZipInfo(path, _EPOCH_1980)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
