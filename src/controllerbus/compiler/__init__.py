"""The module compiler: plugin projects in, one reproducible plugin wheel out.

Analysis (:func:`analyse`) walks the targets' path dependencies and finds factories
statically; codegen (:func:`codegen`) writes an overlay hatchling project; the build
(:func:`compile_plugin`) hashes the normalised inputs, skips the build when that
wheel already exists, and otherwise builds in-process (or isolated) and publishes
the wheel atomically. See ``docs/compiler.md``.

Importing this package is cheap: hatchling and build are imported only to build.
"""

from controllerbus.compiler.api import (
    CODEGEN_ROOT,
    CodegenResult,
    CompileResult,
    codegen,
    compile_plugin,
    default_codegen_dir,
    plan_targets,
)
from controllerbus.compiler.discovery import PackageSource
from controllerbus.compiler.errors import (
    AnalysisError,
    BinaryContent,
    BuildFailed,
    ConflictingPaths,
    ConflictingRequirements,
    DependencyCycle,
    DuplicatePackage,
    InvalidOption,
    InvalidProject,
    Issue,
    MissingPath,
    NoFactories,
    SourceChanged,
    SourceSyntaxError,
    VerifyFailed,
)
from controllerbus.compiler.factories import FactoryRef
from controllerbus.compiler.graph import Graph, SourceFile, analyse
from controllerbus.compiler.options import DEFAULT_OUTPUT_DIR, CompileOptions
from controllerbus.compiler.plan import (
    DEFAULT_BINARY_VERSION,
    DEFAULT_BUILD_PREFIX,
    Plan,
)
from controllerbus.compiler.project import Project
from controllerbus.compiler.verify import verify_wheel
from controllerbus.compiler.watch import watch_compile
from controllerbus.compiler.wheelhouse import export_wheelhouse

__all__ = [
    "CODEGEN_ROOT",
    "DEFAULT_BINARY_VERSION",
    "DEFAULT_BUILD_PREFIX",
    "DEFAULT_OUTPUT_DIR",
    "AnalysisError",
    "BinaryContent",
    "BuildFailed",
    "CodegenResult",
    "CompileOptions",
    "CompileResult",
    "ConflictingPaths",
    "ConflictingRequirements",
    "DependencyCycle",
    "DuplicatePackage",
    "FactoryRef",
    "Graph",
    "InvalidOption",
    "InvalidProject",
    "Issue",
    "MissingPath",
    "NoFactories",
    "PackageSource",
    "Plan",
    "Project",
    "SourceChanged",
    "SourceFile",
    "SourceSyntaxError",
    "VerifyFailed",
    "analyse",
    "codegen",
    "compile_plugin",
    "default_codegen_dir",
    "export_wheelhouse",
    "plan_targets",
    "verify_wheel",
    "watch_compile",
]
