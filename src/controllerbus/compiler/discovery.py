"""Which packages and files a project ships, decided the way its own build backend decides.

One function, :func:`find_packages`, reads the backend's configuration from the
parsed ``pyproject.toml`` and returns a :class:`Selection`: the top-level packages
and modules, and a file filter. The rules, per ``build-system.build-backend``:

* ``[tool.cbus] packages`` wins over everything (paths relative to the project).
* no ``[build-system]`` table: every package and module under ``src/``, else the
  flat ``<name>`` package or module.
* **hatchling**: ``[tool.hatch.build.
  targets.wheel] packages``, else ``only-include``, else ``src/<name>``, ``<name>/`` or
  ``<name>.py`` with ``<name>`` the project name with ``-``/``.`` as ``_`` (else
  hatchling fails, and so does the compile). ``exclude`` patterns are honoured.
* **setuptools**: ``[tool.setuptools] packages`` (a list, or ``find`` with
  ``where``/``include``/``exclude``/``namespaces``), ``package-dir``,
  ``py-modules``; otherwise its automatic discovery (src layout, or flat layout
  without the usual non-package directories). Files: ``.py`` modules, ``py.typed``,
  and ``[tool.setuptools.package-data]`` globs (all files when
  ``setuptools-scm`` is a build requirement: it lists every tracked file).
* **flit-core**: ``[tool.flit.module] name`` (default: the import name of the
  project), under ``src/`` or flat.
* **pdm-backend**: ``[tool.pdm.build] includes`` / ``excludes`` / ``package-dir``.
* **poetry-core**: ``[tool.poetry] packages`` (``include`` and ``from``), else the
  project's import name under ``src/`` or flat.
* **uv_build**: ``[tool.uv.build-backend] module-name`` / ``module-root`` (default
  ``src``).

Whatever the backend, files ignored by git and junk never ship
(:mod:`~controllerbus.compiler.files`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from controllerbus.compiler.errors import InvalidProject, Issue

__all__ = ["PackageSource", "Selection", "backend_of", "find_packages", "import_name", "package_at"]

PYPROJECT = "pyproject.toml"

# Directory names that are never packages.
_NOT_PACKAGES = re.compile(r"(__pycache__|.*\.(egg-info|dist-info|data))")
# setuptools' FlatLayoutPackageFinder.DEFAULT_EXCLUDE (top-level names only).
_FLAT_EXCLUDE = frozenset(
    {
        "ci",
        "bin",
        "debian",
        "doc",
        "docs",
        "documentation",
        "manpages",
        "news",
        "newsfragments",
        "changelog",
        "test",
        "tests",
        "unit_test",
        "unit_tests",
        "example",
        "examples",
        "scripts",
        "tools",
        "util",
        "utils",
        "python",
        "build",
        "dist",
        "venv",
        "env",
        "requirements",
        "tasks",
        "fabfile",
        "site_scons",
        "benchmark",
        "benchmarks",
        "exercise",
        "exercises",
        "htmlcov",
        "_build",
        "_static",
        "_templates",
        "_sources",
    }
)

Backend = Literal["hatchling", "setuptools", "flit", "pdm", "poetry", "uv", "other", "none"]

_BACKENDS: Mapping[str, Backend] = {
    "hatchling.build": "hatchling",
    "setuptools.build_meta": "setuptools",
    "setuptools.build_meta:__legacy__": "setuptools",
    "flit_core.buildapi": "flit",
    "pdm.backend": "pdm",
    "poetry.core.masonry.api": "poetry",
    "uv_build": "uv",
}


@dataclass(frozen=True, slots=True)
class PackageSource:
    """One top-level importable name a project ships.

    Attributes:
        name: the import name (``foo`` for ``src/foo/`` or ``foo.py``).
        path: absolute path of the package directory or module file.
        kind: ``package`` (has ``__init__.py``), ``namespace`` (PEP 420) or ``module``.
    """

    name: str
    path: Path
    kind: Literal["package", "namespace", "module"]


@dataclass(frozen=True, slots=True)
class Selection:
    """What a project ships.

    Attributes:
        packages: the top-level packages and modules.
        data: which non-``.py`` files under a package ship: ``None`` all of them, or
            a predicate on the path relative to the project root (POSIX).
        exclude: glob patterns (relative to the project root) of files that never ship.
        backend: the backend whose rules decided.
    """

    packages: tuple[PackageSource, ...]
    data: Callable[[str], bool] | None = None
    exclude: tuple[str, ...] = ()
    backend: Backend = "hatchling"


def backend_of(data: Mapping[str, Any]) -> Backend:
    """The build backend ``build-system.build-backend`` names (``hatchling`` if none)."""
    system = data.get("build-system", {})
    name = system.get("build-backend") if isinstance(system, dict) else None
    if name is None:
        return "setuptools" if isinstance(system, dict) and system.get("requires") else "none"
    return _BACKENDS.get(str(name), "other")


def import_name(name: str) -> str:
    """The import name backends derive from a distribution name (``a-b.c`` -> ``a_b_c``)."""
    return re.sub(r"[-.]+", "_", name).lower()


def find_packages(root: Path, name: str, data: Mapping[str, Any]) -> Selection:
    """The packages and file rules of the project at ``root`` (see the module docstring).

    Raises:
        InvalidProject: configured packages do not exist, or none can be found.
    """
    tool = _table(data, "tool")
    backend = backend_of(data)
    explicit = _table(tool, "cbus").get("packages")
    if explicit is not None:
        return Selection(_explicit(root, explicit, "[tool.cbus] packages"), backend=backend)
    finder = {
        "setuptools": _setuptools,
        "flit": _flit,
        "pdm": _pdm,
        "poetry": _poetry,
        "uv": _uv,
        "none": _default,
    }.get(backend, _hatch)
    _refuse_placed_files(root, data)
    selection = finder(root, name, data)
    if not selection.packages:
        flat = import_name(name)
        raise InvalidProject(
            [
                Issue(
                    root / PYPROJECT,
                    None,
                    f"cannot find the packages to vendor ({backend} rules; looked for"
                    f" src/{flat}, {flat}/__init__.py and {flat}.py); list them in"
                    f' [tool.cbus] packages = ["src/{flat}"]',
                )
            ]
        )
    return selection


_PLACED = (
    (("tool", "hatch", "build", "targets", "wheel"), "force-include"),
    (("tool", "hatch", "build", "targets", "wheel"), "shared-data"),
    (("tool", "hatch", "build"), "force-include"),
    (("tool", "setuptools"), "data-files"),
    (("tool", "flit"), "external-data"),
)


def _refuse_placed_files(root: Path, data: Mapping[str, Any]) -> None:
    """Refuse files the backend places outside the packages (the plugin ships packages only)."""
    issues = [
        Issue(
            root / PYPROJECT,
            None,
            f"[{'.'.join(keys)}] {key} places files outside the packages, which a plugin"
            " wheel cannot do (it is one sys.path entry per generation): move the files"
            " into a package and read them with importlib.resources",
        )
        for keys, key in _PLACED
        if _path(data, *keys).get(key)
    ]
    if issues:
        raise InvalidProject(issues)


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    return value if isinstance(value, dict) else {}


def _path(data: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    for key in keys:
        data = _table(data, key)
    return data


def _strings(value: object, where: str, root: Path) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidProject([Issue(root / PYPROJECT, None, f"{where} must be a list of strings")])
    return list(value)


def _explicit(root: Path, raw: object, where: str) -> tuple[PackageSource, ...]:
    found: list[PackageSource] = []
    issues: list[Issue] = []
    for entry in _strings(raw, where, root):
        path = root / entry
        source = package_at(path)
        if source is None:
            reason = "does not exist" if not path.exists() else "is not a package or .py module"
            issues.append(Issue(root / PYPROJECT, None, f"{where}: {entry!r} {reason}"))
        else:
            found.append(source)
    if issues:
        raise InvalidProject(issues)
    return tuple(found)


def package_at(path: Path) -> PackageSource | None:
    """The package, namespace package or module at ``path``, or ``None``."""
    name = path.name
    if name.startswith(".") or _NOT_PACKAGES.fullmatch(name):
        return None
    if path.is_dir():
        if not name.isidentifier():
            return None
        if (path / "__init__.py").is_file():
            return PackageSource(name, path, "package")
        # A PEP 420 namespace package: a directory holding Python code somewhere.
        if any(True for _ in path.rglob("*.py")):
            return PackageSource(name, path, "namespace")
        return None
    if path.suffix == ".py" and path.is_file() and path.stem.isidentifier():
        return PackageSource(path.stem, path, "module")
    return None


def _under(base: Path) -> list[PackageSource]:
    if not base.is_dir():
        return []
    return [
        source
        for child in sorted(base.iterdir(), key=lambda p: p.name)
        if child.name != "setup.py" and (source := package_at(child)) is not None
    ]


def _named(root: Path, module: str, bases: Sequence[str] = ("src", "")) -> list[PackageSource]:
    for base in bases:
        directory = root / base if base else root
        for candidate in (directory / module, directory / f"{module}.py"):
            source = package_at(candidate)
            if source is not None:
                return [source]
    return []


def _default(root: Path, name: str, data: Mapping[str, Any]) -> Selection:
    """No ``[build-system]``: every package under ``src/``, else ``<name>`` (flat)."""
    if "packages" in _path(data, "tool", "hatch", "build", "targets", "wheel"):
        return _hatch(root, name, data)
    found = _under(root / "src") or _named(root, import_name(name), ("",))
    return Selection(tuple(found), backend="none")


# --- hatchling ---------------------------------------------------------------------


def _hatch(root: Path, name: str, data: Mapping[str, Any]) -> Selection:
    wheel = _path(data, "tool", "hatch", "build", "targets", "wheel")
    build = _path(data, "tool", "hatch", "build")
    exclude = [
        *(
            _strings(build["exclude"], "[tool.hatch.build] exclude", root)
            if "exclude" in build
            else []
        ),
        *(
            _strings(wheel["exclude"], "[tool.hatch.build.targets.wheel] exclude", root)
            if "exclude" in wheel
            else []
        ),
    ]
    if "packages" in wheel:
        packages = _explicit(root, wheel["packages"], "[tool.hatch.build.targets.wheel] packages")
    elif "only-include" in wheel:
        where = "[tool.hatch.build.targets.wheel] only-include"
        raw_sources = wheel.get("sources", [])
        prefixes = {str(p).rstrip("/") for p in raw_sources} if raw_sources else set()
        collected: list[PackageSource] = []
        for entry in _strings(wheel["only-include"], where, root):
            # An entry that is a rewritten source prefix (src -> "") holds the packages.
            single = None if entry.rstrip("/") in prefixes else package_at(root / entry)
            collected.extend([single] if single is not None else _under(root / entry))
        packages = tuple(collected)
    else:
        flat = import_name(name)
        # hatchling's heuristic: <name>/, src/<name>/ or <name>.py; else it fails.
        packages = tuple(_named(root, flat))
    return Selection(packages, exclude=tuple(exclude), backend="hatchling")


# --- setuptools --------------------------------------------------------------------


def _setuptools(root: Path, name: str, data: Mapping[str, Any]) -> Selection:
    config = _path(data, "tool", "setuptools")
    package_dir = _table(config, "package-dir")
    base = str(package_dir.get("", "")) if isinstance(package_dir.get(""), str) else ""
    raw = config.get("packages")
    found: list[PackageSource] = []
    if isinstance(raw, list):
        for dotted in _strings(raw, "[tool.setuptools] packages", root):
            if "." in dotted:
                continue  # subpackages ship with their top-level package
            where = package_dir.get(dotted)
            path = root / where if isinstance(where, str) else root / base / dotted
            source = package_at(path)
            if source is None:
                raise InvalidProject(
                    [
                        Issue(
                            root / PYPROJECT,
                            None,
                            f"[tool.setuptools] packages: {dotted!r} not found at {path}",
                        )
                    ]
                )
            found.append(PackageSource(dotted, source.path, source.kind))
    elif isinstance(raw, dict) and "find" in raw:
        find = _table(raw, "find")
        wheres = _strings(find.get("where", ["."]), "packages.find where", root)
        include = _strings(find.get("include", ["*"]), "packages.find include", root)
        exclude = _strings(find.get("exclude", []), "packages.find exclude", root)
        namespaces = find.get("namespaces", True) is not False
        for where in wheres:
            for source in _under(root / where):
                if source.kind == "namespace" and not namespaces:
                    continue
                if any(fnmatch.fnmatchcase(source.name, p) for p in include) and not any(
                    fnmatch.fnmatchcase(source.name, p) for p in exclude
                ):
                    found.append(source)
    else:
        # Automatic discovery: src layout, else flat layout without the usual
        # non-package directories (setuptools refuses several there; so do we).
        src = root / (base or "src")
        if src.is_dir():
            found = [s for s in _under(src) if s.kind != "namespace"] or _under(src)
        else:
            found = [s for s in _under(root) if s.kind == "package" and s.name not in _FLAT_EXCLUDE]
    modules = config.get("py-modules")
    if isinstance(modules, list):
        for module in _strings(modules, "[tool.setuptools] py-modules", root):
            path = root / base / f"{module}.py"
            if not path.is_file():
                raise InvalidProject(
                    [
                        Issue(
                            root / PYPROJECT,
                            None,
                            f"[tool.setuptools] py-modules: {path} does not exist",
                        )
                    ]
                )
            found.append(PackageSource(module, path, "module"))
    requires = _table(data, "build-system").get("requires", [])
    scm = any(str(r).lower().startswith(("setuptools-scm", "setuptools_scm")) for r in requires)
    if scm or (config.get("include-package-data") is True and (root / "MANIFEST.in").is_file()):
        return Selection(tuple(found), backend="setuptools")
    globs: dict[str, list[str]] = {}
    for package, patterns in _table(config, "package-data").items():
        if isinstance(patterns, list):
            globs[str(package)] = [str(p) for p in patterns]
    roots = {s.name: s.path for s in found}
    return Selection(
        tuple(found),
        data=_setuptools_data(root, roots, globs),
        backend="setuptools",
    )


def _setuptools_data(
    root: Path, roots: Mapping[str, Path], globs: Mapping[str, Sequence[str]]
) -> Callable[[str], bool]:
    everywhere = [*globs.get("*", []), *globs.get("", []), "py.typed"]
    by_dir: dict[str, list[str]] = {}
    for package, patterns in globs.items():
        if package in ("*", ""):
            continue
        top, _, rest = package.partition(".")
        if top in roots:
            base = roots[top].relative_to(root).as_posix()
            key = f"{base}/{rest.replace('.', '/')}" if rest else base
            by_dir[key] = list(patterns)

    def ships(rel: str) -> bool:
        filename = rel.rpartition("/")[2]
        if any(fnmatch.fnmatchcase(filename, p) for p in everywhere):
            return True
        for base, patterns in by_dir.items():
            if rel.startswith(base + "/"):
                inner = rel[len(base) + 1 :]
                if any(fnmatch.fnmatchcase(inner, p) for p in patterns):
                    return True
        return False

    return ships


# --- flit, pdm, poetry, uv ---------------------------------------------------------


def _flit(root: Path, name: str, data: Mapping[str, Any]) -> Selection:
    module = _path(data, "tool", "flit", "module").get("name", import_name(name))
    return Selection(tuple(_named(root, str(module))), backend="flit")


def _pdm(root: Path, name: str, data: Mapping[str, Any]) -> Selection:
    build = _path(data, "tool", "pdm", "build")
    package_dir = str(build.get("package-dir", "src" if (root / "src").is_dir() else ""))
    excludes = _strings(build.get("excludes", []), "[tool.pdm.build] excludes", root)
    if "includes" in build:
        packages: list[PackageSource] = []
        for entry in _strings(build["includes"], "[tool.pdm.build] includes", root):
            source = package_at(root / entry)
            if source is not None:
                packages.append(source)
        return Selection(tuple(packages), exclude=tuple(excludes), backend="pdm")
    base = root / package_dir if package_dir else root
    found = _under(base) if package_dir else _named(root, import_name(name), ("",))
    if not package_dir and not found:
        found = [s for s in _under(root) if s.kind == "package" and s.name not in _FLAT_EXCLUDE]
    return Selection(tuple(found), exclude=tuple(excludes), backend="pdm")


def _poetry(root: Path, name: str, data: Mapping[str, Any]) -> Selection:
    poetry = _path(data, "tool", "poetry")
    raw = poetry.get("packages")
    excludes = _strings(poetry.get("exclude", []), "[tool.poetry] exclude", root)
    if raw is None:
        module = import_name(str(poetry.get("name", name)))
        return Selection(tuple(_named(root, module)), exclude=tuple(excludes), backend="poetry")
    if not isinstance(raw, list):
        raise InvalidProject(
            [Issue(root / PYPROJECT, None, "[tool.poetry] packages must be a list")]
        )
    packages: list[PackageSource] = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("include"), str):
            raise InvalidProject(
                [
                    Issue(
                        root / PYPROJECT,
                        None,
                        '[tool.poetry] packages entries need include = "pkg"',
                    )
                ]
            )
        formats = entry.get("format")
        if formats is not None and "wheel" not in (
            [formats] if isinstance(formats, str) else formats
        ):
            continue
        base = root / str(entry.get("from", ""))
        include = entry["include"]
        matches = [p for p in sorted(base.glob(include)) if package_at(p)] or [base / include]
        for path in matches:
            source = package_at(path)
            if source is None:
                raise InvalidProject(
                    [
                        Issue(
                            root / PYPROJECT,
                            None,
                            f"[tool.poetry] packages: {path} is not a package",
                        )
                    ]
                )
            packages.append(source)
    return Selection(tuple(packages), exclude=tuple(excludes), backend="poetry")


def _uv(root: Path, name: str, data: Mapping[str, Any]) -> Selection:
    config = _path(data, "tool", "uv", "build-backend")
    module_root = str(config.get("module-root", "src"))
    module = config.get("module-name", import_name(name))
    modules = module if isinstance(module, list) else [module]
    found: list[PackageSource] = []
    for entry in modules:
        top = str(entry).split(".")[0]
        found.extend(_named(root, top, (module_root,)))
    return Selection(tuple(found), backend="uv")
