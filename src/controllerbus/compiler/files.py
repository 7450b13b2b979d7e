"""Which files of a project's packages are vendored, read once with their digests.

Every regular file under each package directory (or the module file) is a
candidate; a candidate ships unless it is junk (hidden files and directories,
``__pycache__``, ``*.pyc``/``*.pyo``), git ignores it (every ``.gitignore`` from
the repository root down, also inside the packages, each for the paths below its
own directory, as in git), the backend excludes it (its ``exclude`` globs, or a
setuptools data-file rule: :class:`~controllerbus.compiler.discovery.Selection`).
A compiled file (``.so``, ``.pyd``, ...) is refused. Files are addressed by their
path inside the wheel (``pkg/mod.py``), never by their absolute location, so moving
the checkout does not change the plugin.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import NormalizedName

from controllerbus.compiler.compiled import BINARY_FILE
from controllerbus.compiler.discovery import PackageSource
from controllerbus.compiler.errors import BinaryContent, DuplicatePackage, Issue, SourceSyntaxError
from controllerbus.compiler.factories import ParsedModule, parse_module

if TYPE_CHECKING:
    from pathspec import GitIgnoreSpec

    from controllerbus.compiler.project import Project

__all__ = ["SourceFile", "file_filter", "list_files", "vcs_ignored", "walk"]

_SKIP_SUFFIXES = frozenset({".pyc", ".pyo"})


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file to vendor into the plugin.

    Attributes:
        dest: path inside the wheel (POSIX, relative), e.g. ``pkg/mod.py``. A string,
            not a ``PurePosixPath``: analysis builds one per file on every compile,
            and a no-op compile of a large plugin is mostly this loop.
        source: the absolute source path as a string (read at codegen time; never
            hashed); :attr:`path` is the same as a ``Path``.
        digest: sha256 hex of the file's bytes.
        project: the canonical name of the project that ships it.
    """

    dest: str
    source: str
    digest: str
    project: NormalizedName

    @property
    def path(self) -> Path:
        """The absolute source path."""
        return Path(self.source)


def list_files(
    packages: Sequence[tuple[PackageSource, Project]],
) -> tuple[tuple[SourceFile, ...], dict[str, ParsedModule]]:
    """Read every file to vendor once: digest it and, for ``.py`` files, parse it.

    Raises:
        DuplicatePackage: two namespace portions ship the same file.
        SourceSyntaxError: one issue per ``.py`` file that does not parse.
    """
    owners: dict[str, SourceFile] = {}
    parsed: dict[str, ParsedModule] = {}
    clashes: list[Issue] = []
    errors: list[Issue] = []
    binaries: list[Issue] = []
    filters: dict[Path, Callable[[str], bool] | None] = {}
    for package, project in packages:
        root = str(package.path)
        if package.kind == "module":
            found: Iterable[tuple[str, str]] = [(root, package.path.name)]
        else:
            found = walk(root, package.name)
        if project.root not in filters:
            filters[project.root] = file_filter(project)
        keep = filters[project.root]
        for path_str, dest in found:
            if keep is not None and not keep(path_str):
                continue
            if BINARY_FILE.search(dest):
                binaries.append(
                    Issue(
                        Path(path_str),
                        None,
                        f"binary file {dest} cannot go into a py3-none-any plugin wheel: ship"
                        " compiled code as its own platform wheel and depend on it by name,"
                        " or list the file in .gitignore if it is a build leftover",
                    )
                )
                continue
            with open(path_str, "rb") as f:
                data = f.read()
            digest = hashlib.sha256(data).hexdigest()
            other = owners.get(dest)
            if other is not None:
                clashes.append(
                    Issue(
                        Path(path_str),
                        None,
                        f"{dest} is also provided by {other.project} ({other.source})",
                    )
                )
                continue
            owners[dest] = SourceFile(dest, path_str, digest, project.name)
            if dest.endswith(".py"):
                result = parse_module(data, digest, path_str)
                parsed[dest] = result
                if result.error is not None:
                    line, message = result.error
                    errors.append(Issue(Path(path_str), line, f"syntax error: {message}"))
    if binaries:
        raise BinaryContent(binaries)
    if clashes:
        raise DuplicatePackage(clashes)
    if errors:
        raise SourceSyntaxError(errors)
    files = tuple(sorted(owners.values(), key=lambda f: f.dest))
    return files, parsed


def file_filter(project: Project) -> Callable[[str], bool] | None:
    """``True`` for absolute paths the project's backend ships (``None``: every file).

    Combines git's ignore rules, the backend's ``exclude`` globs, and its rule for
    data files (setuptools ships only ``.py`` files and ``package-data``).
    """
    ignored = project.ignored
    data = project.selection.data
    exclude = None
    if project.selection.exclude:
        import pathspec

        exclude = pathspec.GitIgnoreSpec.from_lines(project.selection.exclude)
    if ignored is None and data is None and exclude is None:
        return None
    prefix = str(project.root) + "/"

    def keep(path: str) -> bool:
        if ignored is not None and ignored(path):
            return False
        rel = path[len(prefix) :] if path.startswith(prefix) else path
        if exclude is not None and exclude.match_file(rel):
            return False
        return data is None or path.endswith(".py") or data(rel)

    return keep


def walk(root: str, prefix: str) -> Iterator[tuple[str, str]]:
    """Yield ``(absolute path, path in the wheel)`` of every file to vendor under ``root``.

    Plain strings and ``os.scandir`` (no ``pathlib``, no extra ``stat`` where the
    directory entry's type suffices): this runs over every file on every compile.
    Directory symlinks are not followed (no loops); file symlinks are, by content.
    """
    pending = [(root, prefix)]
    while pending:
        directory, dest_dir = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if name != "__pycache__":
                        pending.append((entry.path, f"{dest_dir}/{name}"))
                elif entry.is_file() and os.path.splitext(name)[1] not in _SKIP_SUFFIXES:
                    yield entry.path, f"{dest_dir}/{name}"


def vcs_ignored(root: Path, packages: Sequence[PackageSource]) -> Callable[[str], bool] | None:
    """A predicate on absolute paths: ``True`` for files git ignores, or ``None`` if no rules.

    Reads every ``.gitignore`` from the repository root (the nearest parent with
    ``.git``, else ``root``) down to ``root``, and those inside the package
    directories; each applies to paths below its own directory, as in git.
    """
    # Plain os.path: this runs for every project on every compile (the no-op path).
    start = str(root)
    chain = [start]
    while (parent := os.path.dirname(chain[-1])) != chain[-1]:
        chain.append(parent)
    top = next((d for d in chain if os.path.exists(os.path.join(d, ".git"))), start)
    files = [os.path.join(d, ".gitignore") for d in reversed(chain[: chain.index(top) + 1])]
    for package in packages:
        if package.kind != "module":
            for directory, _dirs, names in os.walk(package.path):
                if ".gitignore" in names:
                    files.append(os.path.join(directory, ".gitignore"))
    specs: list[tuple[str, GitIgnoreSpec]] = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        import pathspec  # only when there is a .gitignore to read

        specs.append((os.path.dirname(path) + "/", pathspec.GitIgnoreSpec.from_lines(lines)))
    if not specs:
        return None

    def ignored(path: str) -> bool:
        verdict = False
        for base, spec in specs:
            if path.startswith(base):
                result = spec.check_file(path[len(base) :])
                if result.include is not None:
                    verdict = result.include
        return verdict

    return ignored
