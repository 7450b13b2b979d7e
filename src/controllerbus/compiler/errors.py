"""The compiler's branch of the error tree: one class per kind of failure.

Every error here derives from :class:`controllerbus.errors.CompileError`, so the CLI
maps the whole family to exit code 1 with one ``except``. Analysis errors carry one
or more :class:`Issue` values (file, line, reason): analysis collects every issue of
a kind before raising, so a user fixes all missing paths (or all syntax errors) in
one round instead of one per run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from controllerbus.errors import CompileError

__all__ = [
    "AnalysisError",
    "BinaryContent",
    "BuildFailed",
    "ConflictingPaths",
    "ConflictingRequirements",
    "DependencyCycle",
    "DuplicatePackage",
    "InvalidOption",
    "InvalidProject",
    "Issue",
    "MissingPath",
    "NoFactories",
    "SourceChanged",
    "SourceSyntaxError",
    "VerifyFailed",
]


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found during analysis, located as precisely as we can.

    Attributes:
        path: the file at fault (a ``pyproject.toml`` or a source file), if any.
        line: 1-based line in ``path``, if known.
        reason: what is wrong and, where useful, what to do about it.
    """

    path: Path | None
    line: int | None
    reason: str

    def __str__(self) -> str:
        if self.path is None:
            return self.reason
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.reason}"


class AnalysisError(CompileError):
    """The target projects cannot be turned into a plugin; see :attr:`issues`."""

    #: Headline used when several issues are reported together.
    title = "analysis failed"

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues = tuple(issues)
        if not self.issues:
            raise ValueError("an AnalysisError needs at least one issue")
        super().__init__(*self.issues)

    @property
    def path(self) -> Path | None:
        """The file of the first issue (the CLI's ``file:line`` anchor)."""
        return self.issues[0].path

    @property
    def line(self) -> int | None:
        """The line of the first issue, if known."""
        return self.issues[0].line

    def __str__(self) -> str:
        if len(self.issues) == 1:
            return str(self.issues[0])
        found = "\n".join(f"  - {issue}" for issue in self.issues)
        return f"{self.title} ({len(self.issues)} issues):\n{found}"


class InvalidProject(AnalysisError, ValueError):
    """A ``pyproject.toml`` is unreadable or lacks what the compiler needs."""

    title = "invalid project"


class MissingPath(AnalysisError):
    """A target or a path dependency does not exist or is not a project directory."""

    title = "missing path"


class DependencyCycle(AnalysisError):
    """Path dependencies form a cycle (``a -> b -> a``)."""

    title = "dependency cycle"


class ConflictingPaths(AnalysisError):
    """One distribution name is bound to two different first-party directories."""

    title = "conflicting path dependencies"


class DuplicatePackage(AnalysisError):
    """Two first-party projects provide the same top-level package or module."""

    title = "duplicate top-level package"


class ConflictingRequirements(AnalysisError, ValueError):
    """Requirement specifiers of one distribution cannot all be satisfied."""

    title = "conflicting requirements"


class NoFactories(AnalysisError):
    """No target defines a factory (module-level ``new_factory`` or ``[tool.cbus] factories``)."""

    title = "no factories"


class SourceSyntaxError(AnalysisError):
    """A vendored Python source file does not parse; issues name ``file:line``.

    Not a subclass of the built-in :class:`SyntaxError`: that class gives its
    positional arguments a fixed meaning, which several issues would break.
    """

    title = "syntax errors"


class SourceChanged(CompileError):
    """A source file changed between analysis and codegen; compiling again fixes it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: changed while compiling; run the compile again"


class InvalidOption(CompileError, ValueError):
    """A compile option (binary id, build prefix, version template) is invalid.

    The CLI reports it as a usage error (exit code 2).
    """

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(option, reason)
        self.option, self.reason = option, reason

    def __str__(self) -> str:
        return f"invalid {self.option}: {self.reason}"


class BuildFailed(CompileError):
    """The wheel build itself failed (hatchling raised, or ``python -m build`` exited non-zero)."""

    def __init__(self, overlay: Path, reason: str, output: str = "") -> None:
        super().__init__(overlay, reason)
        self.overlay, self.reason, self.output = overlay, reason, output

    def __str__(self) -> str:
        tail = f"\n{self.output.rstrip()}" if self.output.strip() else ""
        return f"{self.overlay / 'pyproject.toml'}: build failed: {self.reason}{tail}"


class BinaryContent(AnalysisError):
    """A first-party project has compiled or binary content; a pure wheel cannot carry it."""

    title = "binary content"


class VerifyFailed(CompileError):
    """A wheel is not what its sources compile to (``cbus-compile verify``).

    Attributes:
        wheel: the wheel that was checked.
        rebuilt: the wheel rebuilt from the sources (in a temporary directory, gone).
        differences: what differs, one line each (names, members, bytes).
    """

    def __init__(self, wheel: Path, differences: Iterable[str]) -> None:
        self.wheel = wheel
        self.differences = tuple(differences)
        lines = "".join(f"\n  {line}" for line in self.differences)
        super().__init__(f"{wheel}: not reproducible from the given sources:{lines}")
