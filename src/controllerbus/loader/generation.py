"""Install a verified wheel as a *generation*: a real venv, published atomically.

A generation lives in ``<state-dir>/generations/<wheel-sha256>/`` and is a venv made
by the stdlib :class:`venv.EnvBuilder` (``with_pip=False``, symlinks); measured about
four times faster than ``virtualenv`` for this, without its ~100 ms import (see
``benchmarks/bench_unload.py``). Life cycle:

1. :func:`plan_install` (pure) decides every path: the final directory, the temp
   root, the scheme paths *relative to the venv root* (so they hold both in the
   temp directory and after the rename), the interpreter that script shebangs name
   (the *final* ``bin/python``), and the host site directories.
2. :func:`apply_install` re-hashes a private copy of the wheel (the bytes installed
   are the bytes verified), builds the venv in ``<state-dir>/tmp/<id>.<random>/venv``,
   runs ``installer`` into it, byte-compiles with the final paths embedded, writes
   ``cbus-generation.json``, fsyncs the tree, and ``os.replace``-s it to the final
   directory. Any failure removes the temp directory and raises
   :class:`~controllerbus.loader.errors.InstallError`; a half-installed generation is
   never visible.
3. Fast path (``plan_install(..., defer_finish=True)``, what the plugin host uses):
   byte-compiling and the fsync of the tree are not needed to *serve*, so
   :func:`apply_install` publishes without them and :func:`finish_install` does
   them after the switch (on a thread). The generation is complete when it is
   renamed into place (a ``kill -9`` cannot tear it: the page cache survives the
   process); ``cbus-durable`` is written only after the fsync, and a generation
   without it (a power loss before the fsync) is never reused: it is replaced.
   The fast path also copies the venv from a skeleton built once per interpreter
   in ``<state-dir>/cache/`` (a copy of a few symlinks and ``pyvenv.cfg``, instead
   of running the venv builder each time).

Location independence: the venv's ``bin/python`` symlinks name the base interpreter
by absolute path and everything else is relative, so the rename is safe. The stdlib
builder's activation scripts embed the venv path (they would name the temp dir), so
they are not created; run ``<generation>/bin/python`` directly. ``pyvenv.cfg`` is
written without the informational ``command`` line for the same reason.

Host packages: a generation's interpreter must import the host's third-party
distributions (they serve the plugin's ``Requires-Dist``) and ``controllerbus``
itself. ``include-system-site-packages`` would expose the *base* interpreter's
site-packages, not the host venv's, so instead the generation's site-packages holds
``_cbus_host.pth`` with one ``import site; site.addsitedir(...)`` line per host site
directory. ``addsitedir`` (unlike a plain path line) also processes the host's own
``.pth`` files, so editable installs keep working. Host directories come *after*
the generation's own site-packages: the plugin's vendored packages win. In-process
activation only puts the site-packages directory on ``sys.path`` (no ``.pth``
processing), so this file matters only to subprocesses.

A generation records the interpreter and host site directories it was made for;
:func:`apply_install` reuses an existing generation only if they match, and
otherwise replaces it (the old one cannot work for this host anyway).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import site
import sys
import sysconfig
import tempfile
import time
import venv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NewType

from controllerbus import _fs
from controllerbus._fs import is_within
from controllerbus.loader.errors import InstallError, LoaderError, WheelChanged
from controllerbus.loader.verify import VerifiedWheel, verify_wheel

__all__ = [
    "DURABLE_MARKER",
    "GENERATION_MARKER",
    "HOST_PTH",
    "Generation",
    "GenerationId",
    "InstallPlan",
    "apply_install",
    "finish_install",
    "generation_id_of",
    "host_site_dirs",
    "install_wheel",
    "plan_install",
]

logger = logging.getLogger(__name__)

GenerationId = NewType("GenerationId", str)
"""A generation's id: the hex sha256 of its wheel file, or with dependency wheels
the sha256 of the plugin's and the dependencies' sha256s (:func:`generation_id`)."""

GENERATION_MARKER = "cbus-generation.json"
"""File at a generation's root describing it; written last before publishing."""

DURABLE_MARKER = "cbus-durable"
"""Written (and synced) once the generation's whole tree is on disk."""

HOST_PTH = "_cbus_host.pth"
"""The ``.pth`` file that makes the host's site directories visible to a generation."""

_MARKER_FORMAT = 1
_SCHEME_VARS = ("base", "platbase", "installed_base", "installed_platbase")


@dataclass(frozen=True, slots=True)
class InstallPlan:
    """Everything :func:`apply_install` will do, decided up front.

    Attributes:
        wheel: the verified wheel to install.
        generation_id: the generation's id (the wheel's sha256).
        final_dir: ``<state-dir>/generations/<id>``; appears only when complete.
        tmp_root: ``<state-dir>/tmp``; the work directory is created inside it.
        schemes: installer scheme name → path relative to the venv root.
        python_rel: the venv's interpreter, relative to the venv root.
        base_executable: the interpreter the venv is created from.
        python_version: ``major.minor.micro`` of that interpreter.
        host_site_dirs: host site directories written into ``_cbus_host.pth``.
        compile_bytecode: byte-compile installed modules before publishing.
        dependencies: dependency wheels installed into the same venv, after the plugin.
        defer_finish: publish first; bytecode and fsync in :func:`finish_install`.
    """

    wheel: VerifiedWheel
    generation_id: GenerationId
    final_dir: Path
    tmp_root: Path
    schemes: Mapping[str, str]
    python_rel: str
    base_executable: str
    python_version: str
    host_site_dirs: tuple[str, ...]
    compile_bytecode: bool = True
    dependencies: tuple[VerifiedWheel, ...] = ()
    defer_finish: bool = False

    @property
    def final_python(self) -> Path:
        """The generation's interpreter at its final location (what shebangs name)."""
        return self.final_dir / self.python_rel

    @property
    def final_site_packages(self) -> Path:
        """The generation's site-packages at its final location."""
        return self.final_dir / self.schemes["purelib"]


@dataclass(frozen=True, slots=True)
class Generation:
    """A published, immutable generation.

    Attributes:
        id: the wheel's sha256.
        path: the generation (venv) directory.
        site_packages: what to put on ``sys.path`` to import the plugin in-process.
        python: the venv's interpreter, to run the plugin in a subprocess.
        wheel: the verified wheel it was installed from.
        reused: ``True`` if an existing generation was reused instead of installed.
    """

    id: GenerationId
    path: Path
    site_packages: Path
    python: Path
    wheel: VerifiedWheel
    reused: bool = False


def host_site_dirs(exclude: Sequence[Path] = ()) -> tuple[str, ...]:
    """Return the running interpreter's site directories, in ``sys.path`` order.

    Only real site directories (``site.getsitepackages()``, the user site when
    enabled, and the sysconfig purelib/platlib) count: they hold the installed
    distributions that serve a plugin's requirements. Ad-hoc ``sys.path`` entries
    (``PYTHONPATH``, a test runner's rootdir) are not propagated.

    Args:
        exclude: directories whose contents never count (e.g. ``<state-dir>``,
            so an active generation is never treated as part of the host).
    """
    candidates: set[str] = {os.path.abspath(p) for p in site.getsitepackages()}
    paths = sysconfig.get_paths()
    candidates.update(os.path.abspath(paths[key]) for key in ("purelib", "platlib"))
    if site.ENABLE_USER_SITE:
        user = site.getusersitepackages()
        candidates.add(os.path.abspath(user))
    excluded = [os.path.abspath(p) for p in exclude]
    result: list[str] = []
    for entry in sys.path:
        absolute = os.path.abspath(entry) if entry else ""
        if absolute in candidates and absolute not in result and os.path.isdir(absolute):
            if any(is_within(absolute, root) for root in excluded):
                continue
            result.append(absolute)
    return tuple(result)


def plan_install(
    state_dir: Path,
    wheel: VerifiedWheel,
    *,
    site_dirs: Sequence[str] | None = None,
    compile_bytecode: bool = True,
    dependencies: Sequence[VerifiedWheel] = (),
    defer_finish: bool = False,
) -> InstallPlan:
    """Decide where and how ``wheel`` becomes a generation. Pure: touches no files.

    Args:
        state_dir: the (locked) state directory.
        wheel: a wheel returned by :func:`~controllerbus.loader.verify.verify_wheel`.
        site_dirs: host site directories the generation should see; default
            :func:`host_site_dirs` of the running interpreter, minus ``state_dir``.
        compile_bytecode: byte-compile the installed modules (the published
            generation is then never written to by later imports).
        dependencies: verified dependency wheels to install with the plugin.
        defer_finish: leave bytecode and the fsync to :func:`finish_install`, after
            the generation serves (see the module docstring, fast path).
    """
    state_dir = Path(os.path.abspath(state_dir))
    deps = tuple(sorted(dependencies, key=lambda w: w.name))
    generation_id = generation_id_of(wheel.sha256, [d.sha256 for d in deps])
    marker = "/__cbus_root__"
    # sysconfig's "venv" scheme (3.11+) is what venv.EnvBuilder itself uses; expand it
    # with a marker base and strip it again to get paths relative to the venv root.
    raw = sysconfig.get_paths("venv", vars=dict.fromkeys(_SCHEME_VARS, marker))
    schemes = {
        key: str(PurePosixPath(raw[key]).relative_to(marker))
        for key in ("purelib", "platlib", "scripts", "data")
    }
    schemes["data"] = "."
    schemes["headers"] = str(
        PurePosixPath(raw["include"]).relative_to(marker) / "site" / wheel.name
    )
    return InstallPlan(
        wheel=wheel,
        generation_id=generation_id,
        final_dir=state_dir / "generations" / generation_id,
        tmp_root=state_dir / "tmp",
        schemes=schemes,
        python_rel=f"{schemes['scripts']}/python",
        base_executable=getattr(sys, "_base_executable", sys.executable),
        python_version="{}.{}.{}".format(*sys.version_info[:3]),
        host_site_dirs=tuple(site_dirs)
        if site_dirs is not None
        else host_site_dirs(exclude=[state_dir]),
        compile_bytecode=compile_bytecode,
        dependencies=deps,
        defer_finish=defer_finish,
    )


def generation_id_of(wheel_sha256: str, dependency_sha256s: Sequence[str] = ()) -> GenerationId:
    """The id of a generation: the plugin wheel's sha256 alone, or with dependency wheels
    the sha256 of ``"<plugin sha>\n<dep sha>\n..."`` (dependency shas sorted), so a
    changed dependency makes a new generation."""
    if not dependency_sha256s:
        return GenerationId(wheel_sha256)
    text = "\n".join([wheel_sha256, *sorted(dependency_sha256s)]) + "\n"
    return GenerationId(hashlib.sha256(text.encode("ascii")).hexdigest())


def _marker(plan: InstallPlan) -> dict[str, Any]:
    return {
        "format": _MARKER_FORMAT,
        "id": plan.generation_id,
        "wheel": plan.wheel.path.name,
        "distribution": plan.wheel.name,
        "version": str(plan.wheel.version),
        "dependencies": [f"{d.path.name} sha256:{d.sha256}" for d in plan.dependencies],
        "python_version": plan.python_version,
        "base_executable": plan.base_executable,
        "host_site_dirs": list(plan.host_site_dirs),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _reuse_mismatch(plan: InstallPlan) -> str | None:
    """Why the existing generation at ``plan.final_dir`` cannot be reused, or ``None``."""
    try:
        found = json.loads((plan.final_dir / GENERATION_MARKER).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        return f"its {GENERATION_MARKER} is unreadable ({exc})"
    if not (plan.final_dir / DURABLE_MARKER).is_file():
        return f"it has no {DURABLE_MARKER} (the process stopped before it was synced to disk)"
    expected = _marker(plan)
    for key in ("format", "id", "python_version", "base_executable", "host_site_dirs"):
        if found.get(key) != expected[key]:
            return f"it was made for {key}={found.get(key)!r}, this host has {expected[key]!r}"
    if not (plan.final_dir / plan.python_rel).exists():
        return f"{plan.python_rel} is missing"
    return None


def _generation(plan: InstallPlan, *, reused: bool) -> Generation:
    return Generation(
        id=plan.generation_id,
        path=plan.final_dir,
        site_packages=plan.final_site_packages,
        python=plan.final_python,
        wheel=plan.wheel,
        reused=reused,
    )


class _GenerationBuilder(venv.EnvBuilder):
    """A stdlib venv builder that writes nothing that names the (temporary) location."""

    def create_configuration(self, context: Any) -> None:
        # The stdlib writes an informational "command = ... -m venv <temp dir>" line;
        # drop it so pyvenv.cfg is location-independent.
        super().create_configuration(context)
        cfg = Path(context.cfg_path)
        lines = cfg.read_text("utf-8").splitlines(keepends=True)
        cfg.write_text("".join(ln for ln in lines if not ln.startswith("command =")), "utf-8")

    def setup_scripts(self, context: Any) -> None:
        # Activation scripts embed VIRTUAL_ENV=<temp dir>; generations are run as
        # <gen>/bin/python and never activated, so skip them.
        return


def _create_venv(root: Path) -> None:
    """Seam: create the venv at ``root`` (tests replace it to inject failures)."""
    _GenerationBuilder(with_pip=False, symlinks=True, system_site_packages=False).create(root)


def _skeleton_venv(plan: InstallPlan, root: Path) -> None:
    """Create the venv at ``root`` as a copy of a skeleton venv built once per interpreter.

    The stdlib builder's output is location-independent here (see the module
    docstring), so a copy of it is as good as a fresh one, and much cheaper.
    """
    key = hashlib.sha256(f"{plan.base_executable}\0{plan.python_version}".encode()).hexdigest()
    cache = plan.tmp_root.parent / "cache"
    skeleton = cache / f"venv-{plan.python_version}-{key[:12]}"
    if not (skeleton / "pyvenv.cfg").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=cache, prefix=".skeleton."))
        try:
            _create_venv(work / "venv")
            try:
                os.replace(work / "venv", skeleton)
            except OSError:
                if not (skeleton / "pyvenv.cfg").is_file():
                    raise  # not just another install publishing it first
        finally:
            _fs.remove_tree(work)
    shutil.copytree(skeleton, root, symlinks=True)


def _write_host_pth(site_packages: Path, site_dirs: Sequence[str]) -> None:
    lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in site_dirs)
    (site_packages / HOST_PTH).write_text(lines, "utf-8")


def _run_installer(plan: InstallPlan, venv_root: Path, wheel_copy: Path) -> None:
    """Seam: run ``installer`` for ``wheel_copy`` into the venv at ``venv_root``."""
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile

    destination = SchemeDictionaryDestination(
        scheme_dict={k: os.path.normpath(venv_root / v) for k, v in plan.schemes.items()},
        # Scripts are rewritten to this shebang: it must be the *final* interpreter.
        interpreter=str(plan.final_python),
        script_kind="posix",
    )
    with WheelFile.open(wheel_copy) as source:
        install(source, destination, {"INSTALLER": b"controllerbus\n"})


def _compile_bytecode(plan: InstallPlan, venv_root: Path) -> None:
    """Seam: byte-compile site-packages, embedding the final paths in tracebacks."""
    import compileall

    ok = compileall.compile_dir(
        venv_root / plan.schemes["purelib"],
        ddir=str(plan.final_site_packages),
        quiet=2,
        workers=1,
    )
    if not ok:
        raise InstallError(
            plan.wheel.path, plan.final_dir, "a module failed to byte-compile (syntax error?)"
        )


def _copy_verified(plan: InstallPlan, work: Path, wheel: VerifiedWheel | None = None) -> Path:
    """Copy the wheel into ``work`` and prove the copy has the verified sha256."""
    wheel = wheel or plan.wheel
    wheel_dir = work / "wheel"
    wheel_dir.mkdir(exist_ok=True)
    copy = wheel_dir / wheel.path.name
    digest = hashlib.sha256()
    with wheel.path.open("rb") as src, copy.open("wb") as dst:
        while chunk := src.read(1024 * 1024):
            digest.update(chunk)
            dst.write(chunk)
    if digest.hexdigest() != wheel.sha256:
        raise WheelChanged(wheel.path, wheel.sha256, digest.hexdigest())
    return copy


def _retire(plan: InstallPlan, reason: str) -> None:
    """Move an unusable generation aside (atomically) and delete it."""
    logger.warning(
        "replacing generation %s: %s",
        plan.final_dir,
        reason,
        extra={"generation": plan.generation_id},
    )
    plan.tmp_root.mkdir(parents=True, exist_ok=True)
    graveyard = Path(tempfile.mkdtemp(dir=plan.tmp_root, prefix=f"{plan.generation_id[:16]}.old."))
    os.replace(plan.final_dir, graveyard / "venv")
    _fs.remove_tree(graveyard)


def apply_install(plan: InstallPlan) -> Generation:
    """Carry out ``plan``: install the wheel as a generation, or reuse an existing one.

    Blocking (venv creation, file writes, fsync): call it via ``asyncio.to_thread``.

    Args:
        plan: from :func:`plan_install`.

    Returns:
        The published generation; ``reused`` tells whether it already existed.

    Raises:
        WheelChanged: the wheel's bytes differ from what was verified.
        InstallError: anything else failed (with the cause chained); the temp
            directory was removed and nothing was published.
    """
    final = plan.final_dir
    if final.is_dir():
        mismatch = _reuse_mismatch(plan)
        if mismatch is None:
            logger.debug("reusing generation %s", final, extra={"generation": plan.generation_id})
            return _generation(plan, reused=True)
        if str(plan.final_site_packages) in sys.path:
            raise InstallError(
                plan.wheel.path,
                final,
                f"the existing generation cannot be reused ({mismatch}) and cannot be "
                "replaced either: it is active in this process; unload it first",
            )
        try:
            _retire(plan, mismatch)
        except OSError as exc:
            raise InstallError(
                plan.wheel.path, final, f"cannot replace the stale generation: {exc}"
            ) from exc
    work: Path | None = None
    try:
        plan.tmp_root.mkdir(parents=True, exist_ok=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=plan.tmp_root, prefix=f"{plan.generation_id[:16]}."))
        venv_root = work / "venv"
        wheel_copy = _copy_verified(plan, work)
        dep_copies = [_copy_verified(plan, work, dep) for dep in plan.dependencies]
        if plan.defer_finish:
            _skeleton_venv(plan, venv_root)
        else:
            _create_venv(venv_root)
        site_packages = venv_root / plan.schemes["purelib"]
        _run_installer(plan, venv_root, wheel_copy)
        for dep_copy in dep_copies:
            _run_installer(plan, venv_root, dep_copy)
        _write_host_pth(site_packages, plan.host_site_dirs)
        if plan.compile_bytecode and not plan.defer_finish:
            _compile_bytecode(plan, venv_root)
        (venv_root / GENERATION_MARKER).write_text(
            json.dumps(_marker(plan), indent=2) + "\n", "utf-8"
        )
        if not plan.defer_finish:
            _fs.fsync_tree(venv_root)
            _write_durable(venv_root)
        try:
            os.replace(venv_root, final)
        except OSError:
            # Another installer published the same id between our check and now.
            if final.is_dir() and _reuse_mismatch(plan) is None:
                return _generation(plan, reused=True)
            raise
        if not plan.defer_finish:
            _fs.fsync_dir(final.parent)
    except LoaderError:
        raise
    except Exception as exc:
        raise InstallError(plan.wheel.path, final, _describe(exc)) from exc
    finally:
        if work is not None:
            _fs.remove_tree(work)
    logger.info(
        "installed generation %s from %s",
        final,
        plan.wheel.path.name,
        extra={"generation": plan.generation_id},
    )
    return _generation(plan, reused=False)


def _write_durable(root: Path) -> None:
    (root / DURABLE_MARKER).write_text("synced\n", "utf-8")
    _fs.fsync_dir(root)


def finish_install(plan: InstallPlan) -> bool:
    """Byte-compile and fsync a generation published with ``defer_finish``; mark it durable.

    Blocking; run it on a thread after the switch. A generation removed meanwhile
    (replaced, garbage-collected) is skipped. Returns ``True`` if it is now durable.
    """
    final = plan.final_dir
    if (final / DURABLE_MARKER).is_file():
        return True
    try:
        if plan.compile_bytecode:
            import compileall

            compileall.compile_dir(plan.final_site_packages, quiet=2, workers=1)
        _fs.fsync_tree(final)
        _write_durable(final)
        _fs.fsync_dir(final.parent)
    except OSError as exc:
        if final.is_dir():
            logger.warning("generation %s: finishing the install failed: %s", final, exc)
        return False
    return True


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    described = f"{type(exc).__name__}: {text}" if str(exc) else text
    hint = _STATE_FS_HINTS.get(getattr(exc, "errno", None) or 0)
    return f"{described} ({hint})" if hint else described


_STATE_FS_HINTS = {
    errno.ENOSPC: "the state directory's file system is full: free space or use another "
    "--state-dir; the running generations keep serving",
    errno.EDQUOT: "the disk quota of the state directory is used up",
    errno.EROFS: "the state directory is on a read-only file system: remount it "
    "read-write or use another --state-dir; the running generations keep serving",
    errno.EFBIG: "a file exceeds the file-size limit of the daemon's process",
}


def install_wheel(
    state_dir: Path, wheel_path: Path, *, site_dirs: Sequence[str] | None = None
) -> Generation:
    """Verify ``wheel_path`` and install it as a generation under ``state_dir``.

    Convenience for :func:`verify_wheel` → :func:`plan_install` → :func:`apply_install`.

    Raises:
        InvalidWheel: verification failed (nothing written).
        WheelChanged: the file changed between verification and installation.
        InstallError: installation failed (nothing left behind).
    """
    return apply_install(plan_install(state_dir, verify_wheel(wheel_path), site_dirs=site_dirs))
