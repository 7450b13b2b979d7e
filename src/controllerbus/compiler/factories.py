"""Find factory constructors statically: parse sources with :mod:`ast`, never import them.

A *factory* (Go: a package's top-level ``NewFactory``) is a callable the generated
plugin module calls as ``module.function(bus)``. Two ways to declare them:

* automatically: every module of a target project that **defines** a module-level
  ``def new_factory(...)`` (a re-export such as ``from .impl import new_factory`` is
  not counted, so a package ``__init__`` re-exporting its submodule's factory does
  not register it twice);
* explicitly: ``[tool.cbus] factories = ["pkg.mod:make_factory"]``; each entry must
  name a module the project ships and a name bound at its top level.

Only target projects are scanned (Go: the packages named on the command line);
path dependencies are vendored libraries. Every vendored ``.py`` file is still
parsed, so a syntax error anywhere fails the compile with ``file:line`` instead of at
load time. Parse results are cached by content digest, so a warm or no-op compile
of an unchanged tree does not parse again.
"""

from __future__ import annotations

import ast
import logging
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from controllerbus.compiler.errors import InvalidProject, Issue, NoFactories

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from controllerbus.compiler.files import SourceFile
    from controllerbus.compiler.project import Project

__all__ = [
    "FACTORY_FUNCTION",
    "FactoryRef",
    "ParsedModule",
    "find_factories",
    "module_name",
    "parse_module",
]

FACTORY_FUNCTION = "new_factory"

logger = logging.getLogger(__name__)

_CACHE_SIZE = 8192
_cache: OrderedDict[str, ParsedModule] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass(frozen=True, slots=True, order=True)
class FactoryRef:
    """A factory constructor: ``module:function``, with its location for messages.

    Ordering (and equality) is by ``module`` then ``function`` only, so a sorted
    list of refs is the deterministic order of the generated imports.
    """

    module: str
    function: str
    path: Path = field(compare=False)
    line: int | None = field(compare=False, default=None)

    def __str__(self) -> str:
        return f"{self.module}:{self.function}"


@dataclass(frozen=True, slots=True)
class ParsedModule:
    """What the compiler needs from one source file.

    Attributes:
        functions: module-level ``def`` names (not ``async def``) and their lines.
        names: every module-level binding (def, class, assignment, import) and its line.
        error: ``(line, message)`` if the file does not parse.
    """

    functions: dict[str, int]
    names: dict[str, int]
    error: tuple[int | None, str] | None = None


def parse_module(data: bytes, digest: str, path: str | Path) -> ParsedModule:
    """Parse ``data`` (the bytes of ``path``), reusing a cached result for ``digest``.

    Never raises for bad source: the error is returned, so the caller can collect
    every syntax error of the tree before raising once.
    """
    with _cache_lock:
        cached = _cache.get(digest)
        if cached is not None:
            _cache.move_to_end(digest)
            return cached
    parsed = _parse(data, path)
    with _cache_lock:
        _cache[digest] = parsed
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return parsed


def _parse(data: bytes, path: str | Path) -> ParsedModule:
    try:
        # Invalid escape sequences warn while parsing; a host running with warnings
        # as errors would otherwise turn a style nit into a compile failure.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(data, filename=str(path))
    except SyntaxError as exc:
        return ParsedModule({}, {}, (exc.lineno, exc.msg))
    except ValueError as exc:  # e.g. null bytes on Python 3.11
        return ParsedModule({}, {}, (None, str(exc)))
    functions: dict[str, int] = {}
    names: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            functions[node.name] = node.lineno
            names[node.name] = node.lineno
        elif isinstance(node, ast.AsyncFunctionDef | ast.ClassDef):
            names[node.name] = node.lineno
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node.lineno
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node.lineno
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                names[bound] = node.lineno
    return ParsedModule(functions, names)


def module_name(dest: str) -> str | None:
    """The import name of a vendored file (``pkg/sub/mod.py`` -> ``pkg.sub.mod``).

    ``pkg/__init__.py`` is ``pkg``. Returns ``None`` for files that are not
    importable modules (not ``.py``, or a path part that is not an identifier).
    """
    if not dest.endswith(".py"):
        return None
    parts = dest[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(part.isidentifier() for part in parts):
        return None
    return ".".join(parts)


def find_factories(
    targets: Sequence[Project],
    files: Sequence[SourceFile],
    parsed: Mapping[str, ParsedModule],
) -> tuple[FactoryRef, ...]:
    modules: dict[str, SourceFile] = {}
    for source in files:
        name = module_name(source.dest)
        if name is not None:
            modules[name] = source
    found: set[FactoryRef] = set()
    issues: list[Issue] = []
    empty: list[Project] = []
    for target in targets:
        refs: list[FactoryRef] = []
        if target.factories is not None:
            for entry in target.factories:
                ref, reason = _explicit_factory(entry, modules, parsed)
                if ref is None:
                    issues.append(
                        Issue(target.pyproject, target.line_of(entry), f"[tool.cbus] {reason}")
                    )
                else:
                    refs.append(ref)
        else:
            for name, source in modules.items():
                if source.project != target.name:
                    continue
                line = parsed[source.dest].functions.get(FACTORY_FUNCTION)
                if line is not None:
                    refs.append(FactoryRef(name, FACTORY_FUNCTION, source.path, line))
        if not refs:
            empty.append(target)
        found.update(refs)
    if issues:
        raise InvalidProject(issues)
    if not found:
        raise NoFactories(
            Issue(
                target.pyproject,
                None,
                f"no factories in {', '.join(p.name for p in target.packages) or 'any package'}:"
                f" define a module-level def {FACTORY_FUNCTION}(bus) or list them in"
                ' [tool.cbus] factories = ["pkg.module:function"]',
            )
            for target in targets
        )
    for target in empty:
        logger.warning("%s: target %s has no factories", target.pyproject, target.name)
    return tuple(sorted(found))


def _explicit_factory(
    entry: str,
    modules: Mapping[str, SourceFile],
    parsed: Mapping[str, ParsedModule],
) -> tuple[FactoryRef | None, str]:
    module, sep, function = entry.partition(":")
    if (
        not sep
        or not function.isidentifier()
        or not all(part.isidentifier() for part in module.split("."))
    ):
        return None, f'factory {entry!r} is not of the form "package.module:function"'
    source = modules.get(module)
    if source is None:
        return None, f"factory {entry!r}: module {module} is not in any vendored package"
    line = parsed[source.dest].names.get(function)
    if line is None:
        return None, f"factory {entry!r}: {source.path} defines no top-level {function}"
    return FactoryRef(module, function, source.path, line), ""
