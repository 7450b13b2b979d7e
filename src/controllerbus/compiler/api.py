"""The compiler's entry points: analyse -> plan -> codegen -> build -> publish -> cleanup.

:func:`compile_plugin` is what the CLI, nox sessions and the loader's hot mode call.
A compile whose build hash names a wheel already in the output directory does no
codegen and no build (``rebuilt=False``): analysis reads and hashes the sources,
and that is all.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from controllerbus.compiler.build import (
    BUILD_DIR_PREFIX,
    build_wheel,
    cleanup_wheels,
    file_sha256,
    hatchling_version,
    publish_wheel,
)
from controllerbus.compiler.errors import BuildFailed
from controllerbus.compiler.graph import Graph, analyse
from controllerbus.compiler.options import CompileOptions
from controllerbus.compiler.overlay import WriteStats, load_templates, lock_overlay, write_overlay
from controllerbus.compiler.plan import Plan, plan_plugin

__all__ = [
    "CODEGEN_ROOT",
    "CodegenResult",
    "CompileResult",
    "codegen",
    "compile_plugin",
    "default_codegen_dir",
    "plan_targets",
]

logger = logging.getLogger(__name__)

#: Default parent of codegen directories, relative to the working directory.
CODEGEN_ROOT = Path(".cbus-codegen")


@dataclass(frozen=True, slots=True)
class CodegenResult:
    """An up-to-date overlay project.

    Attributes:
        codegen_dir: the overlay directory (absolute).
        plan: names, version, hash and files of the plugin.
        graph: the analysis it came from (``graph.watched_paths`` for watchers).
        stats: files written, unchanged and removed.
    """

    codegen_dir: Path
    plan: Plan
    graph: Graph
    stats: WriteStats

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict, as printed by ``cbus-compile codegen --json``."""
        return {
            "codegen_dir": str(self.codegen_dir),
            **self.plan.to_json(),
            **self.graph.to_json(),
            "written": self.stats.written,
            "removed": self.stats.removed,
        }


@dataclass(frozen=True, slots=True)
class CompileResult:
    """The outcome of :func:`compile_plugin`.

    Attributes:
        wheel: absolute path of the plugin wheel in the output directory.
        sha256: sha256 hex of the wheel file.
        version: the wheel version, ``<base>+cbus.<hash16>``.
        build_hash: sha256 hex of the normalised inputs (see :mod:`~.plan`).
        binary_id: ``BINARY_ID`` and entry point name.
        binary_version: ``BINARY_VERSION`` (``{buildHash}`` substituted).
        distribution: the wheel's distribution name.
        module: the generated plugin module's import name.
        factories: ``module:function`` of every factory constructor, sorted.
        requires: the wheel's ``Requires-Dist`` lines.
        rebuilt: ``False`` when the wheel already existed and nothing was built.
        removed: older wheels of this plugin removed by cleanup.
        codegen_dir: the overlay directory used (absolute).
        elapsed_ms: wall time of the whole compile.
        graph: the analysis the wheel was compiled from.
        plan: the plan the wheel was built from.
    """

    wheel: Path
    sha256: str
    version: str
    build_hash: str
    binary_id: str
    binary_version: str
    distribution: str
    module: str
    factories: tuple[str, ...]
    requires: tuple[str, ...]
    rebuilt: bool
    removed: tuple[Path, ...]
    codegen_dir: Path
    elapsed_ms: float
    graph: Graph = field(repr=False, compare=False)
    plan: Plan = field(repr=False, compare=False)

    @property
    def watched_paths(self) -> tuple[Path, ...]:
        """Every file the plugin is made of (:attr:`Graph.watched_paths`)."""
        return self.graph.watched_paths

    @property
    def watch_roots(self) -> tuple[Path, ...]:
        """The minimal set to watch recursively (:attr:`Graph.watch_roots`)."""
        return self.graph.watch_roots

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (paths as strings), as printed by ``cbus-compile --json``."""
        return {
            "wheel": str(self.wheel),
            "sha256": self.sha256,
            **self.plan.to_json(),
            **self.graph.to_json(),
            "rebuilt": self.rebuilt,
            "removed": [str(p) for p in self.removed],
            "codegen_dir": str(self.codegen_dir),
            "elapsed_ms": round(self.elapsed_ms, 3),
        }


def default_codegen_dir(plan: Plan) -> Path:
    """``./.cbus-codegen/<distribution>`` under the current working directory."""
    return (CODEGEN_ROOT / plan.distribution).absolute()


def plan_targets(
    targets: Sequence[Path], options: CompileOptions | None = None
) -> tuple[Graph, Plan]:
    """Analyse ``targets`` and plan the plugin, touching nothing on disk.

    Only the naming options (``binary_id``, ``binary_version``, ``build_prefix``)
    of ``options`` matter here.

    Raises:
        CompileError: an analysis error or an invalid option (see :func:`analyse`
            and :func:`~controllerbus.compiler.plan.plan_plugin`).
    """
    options = options or CompileOptions()
    graph = analyse(targets)
    return graph, plan_plugin(
        graph,
        hatchling_version=hatchling_version(),
        templates=load_templates(),
        binary_id=options.binary_id,
        binary_version=options.binary_version,
        build_prefix=options.build_prefix,
    )


def codegen(targets: Sequence[Path], options: CompileOptions | None = None) -> CodegenResult:
    """Analyse ``targets`` and write the overlay project, without building.

    Args:
        targets: project directories.
        options: naming options and ``codegen_dir`` (default
            :func:`default_codegen_dir`); the build options are not used.

    Raises:
        CompileError: analysis failed, an option is invalid, or a source changed
            while being copied.
    """
    options = options or CompileOptions()
    graph, the_plan = plan_targets(targets, options)
    directory = (options.codegen_dir or default_codegen_dir(the_plan)).absolute()
    with lock_overlay(directory):
        stats = write_overlay(the_plan, directory)
    return CodegenResult(directory, the_plan, graph, stats)


def compile_plugin(targets: Sequence[Path], options: CompileOptions) -> CompileResult:
    """Compile ``targets`` into one reproducible plugin wheel in ``options.output_dir``.

    Args:
        targets: project directories (each with a ``pyproject.toml``).
        options: where to write, how to name and how to build (see
            :class:`~controllerbus.compiler.options.CompileOptions`).

    Raises:
        CompileError: analysis failed (the subclasses of
            :class:`~controllerbus.compiler.errors.AnalysisError` name file and
            line), an option is invalid, or the build failed.
    """
    start = time.perf_counter()
    graph, the_plan = plan_targets(targets, options)
    output_dir = options.output_dir.absolute()
    output_dir.mkdir(parents=True, exist_ok=True)
    wheel = output_dir / the_plan.wheel_name
    directory = (options.codegen_dir or default_codegen_dir(the_plan)).absolute()
    rebuilt = False
    if wheel.is_file():
        sha256 = file_sha256(wheel)
        logger.info("%s is up to date (build hash %s); nothing built", wheel, the_plan.build_hash)
    else:
        with lock_overlay(directory):
            write_overlay(the_plan, directory)
            with tempfile.TemporaryDirectory(dir=output_dir, prefix=BUILD_DIR_PREFIX) as tmp:
                built = build_wheel(directory, Path(tmp), isolated=options.isolated)
                if built.name != the_plan.wheel_name:
                    raise BuildFailed(
                        directory, f"built {built.name}, expected {the_plan.wheel_name}"
                    )
                sha256 = publish_wheel(built, wheel)
        rebuilt = True
        logger.info("built %s (sha256 %s)", wheel, sha256)
    removed = cleanup_wheels(output_dir, the_plan.module, wheel.name) if options.cleanup else []
    return CompileResult(
        wheel=wheel,
        sha256=sha256,
        version=the_plan.version,
        build_hash=the_plan.build_hash,
        binary_id=the_plan.binary_id,
        binary_version=the_plan.binary_version,
        distribution=the_plan.distribution,
        module=the_plan.module,
        factories=tuple(str(ref) for ref in the_plan.factories),
        requires=the_plan.requires,
        rebuilt=rebuilt,
        removed=tuple(removed),
        codegen_dir=directory,
        elapsed_ms=(time.perf_counter() - start) * 1000,
        graph=graph,
        plan=the_plan,
    )
