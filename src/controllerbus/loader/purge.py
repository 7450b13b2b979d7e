"""Unload a generation's code from this process, and prove it is gone.

:func:`purge_generation` removes every trace the import system keeps of a
generation directory:

* ``sys.modules`` entries whose ``__file__``, ``__spec__.origin`` or ``__path__``
  lie under it (a namespace package that also spans directories outside it is
  kept; its portion disappears when its path is recomputed), and the attribute a
  surviving parent package holds for a purged submodule;
* ``sys.path`` entries under it;
* ``sys.path_importer_cache`` entries for it **and for every directory under it**:
  the import system caches one ``FileFinder`` per package directory, and keeping
  them grows memory on every reload (docs/loader.md#unload);
* ``sys.meta_path`` / ``sys.path_hooks`` entries whose class was defined by a purged
  module (a plugin that installed an import hook);
* ``linecache`` and ``inspect`` caches of files under it, ``typing``'s
  parameterised-generic caches (``Optional[PluginClass]`` would otherwise keep the
  class alive), ``importlib.metadata``'s path cache; then
  ``importlib.invalidate_caches()``.

Paths are compared as given (``os.path.abspath``) and resolved
(``os.path.realpath``); a ``sys.path`` entry that resolves into the generation (a
symlink to it) becomes an alias whose modules and finders are purged too. Module
files themselves are not resolved one by one (that would ``lstat`` every module of
the process); a module reached only through a symlinked *file* is missed.

:class:`LeakTracker` takes weak references *before* the purge (module objects and
classes support them) and, after ``gc.collect()``, reports each object still alive
with a short description of who holds it (``gc.get_referrers``, two levels up).
Tracking classes also covers a module's globals: every method of a surviving class
references them. Locals of a running function are invisible to
``gc.get_referrers`` (Python 3.11 keeps them outside frame objects); such a
survivor is reported with no holder and a note saying so.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import itertools
import linecache
import logging
import os
import sys
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import CellType, FrameType, FunctionType, MethodType, ModuleType
from typing import Any

from controllerbus._fs import is_within

__all__ = [
    "LeakTracker",
    "PurgeReport",
    "Survivor",
    "modules_under",
    "purge_generation",
]

logger = logging.getLogger(__name__)

_MISSING = object()


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What :func:`purge_generation` removed (names and paths only, no objects).

    Attributes:
        path: the generation directory purged.
        modules: removed ``sys.modules`` names, sorted.
        shared_namespaces: namespace packages kept because they span other paths.
        sys_path: removed ``sys.path`` entries.
        importer_cache: removed ``sys.path_importer_cache`` keys.
        hooks: descriptions of removed ``sys.meta_path`` / ``sys.path_hooks`` entries.
        linecache: number of ``linecache`` entries dropped.
    """

    path: Path
    modules: tuple[str, ...]
    shared_namespaces: tuple[str, ...]
    sys_path: tuple[str, ...]
    importer_cache: tuple[str, ...]
    hooks: tuple[str, ...]
    linecache: int


class _Roots:
    """The generation's path in every spelling that may appear in the import system."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        absolute = os.path.abspath(path)
        real = os.path.realpath(path)
        roots = {absolute, real}
        # A sys.path entry may be a symlink into the generation: resolving those few
        # entries is cheap, and their spelling becomes an alias. (Importer-cache keys
        # of package directories lie under some sys.path entry, so they follow.)
        for entry in sys.path:
            if not isinstance(entry, str) or not entry:
                continue
            entry_abs = os.path.abspath(entry)
            if entry_abs not in roots and is_within(os.path.realpath(entry_abs), real):
                roots.add(entry_abs)
        self.exact = frozenset(roots)
        self.prefixes = tuple(root.rstrip(os.sep) + os.sep for root in roots)

    def contains(self, path: str) -> bool:
        # Module paths are nearly always absolute and normalised already: skip the
        # abspath call (the bulk of a purge's cost over hundreds of modules) then.
        if not path.startswith(os.sep) or _unnormalised(path):
            path = os.path.abspath(path)
        return path in self.exact or path.startswith(self.prefixes)


def _unnormalised(path: str) -> bool:
    # Plain substring tests: a regex here costs more than the whole remaining check.
    return "//" in path or "/./" in path or "/../" in path or path.endswith(("/.", "/..", "/"))


def _module_paths(module: ModuleType) -> tuple[list[str], list[str]]:
    """Return (file locations, package search locations) of ``module``."""
    files: list[str] = []
    file = getattr(module, "__file__", None)
    if isinstance(file, str):
        files.append(file)
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None)
    if isinstance(origin, str) and getattr(spec, "has_location", False):
        files.append(origin)
    search: list[str] = []
    raw = getattr(module, "__path__", None)
    if raw is not None:
        # Iterating a _NamespacePath may recompute it from sys.path; read its cache.
        entries = getattr(raw, "_path", raw)
        try:
            search = [p for p in entries if isinstance(p, str)]
        except TypeError:
            search = []
    return files, search


def _classify(roots: _Roots) -> tuple[list[str], list[str]]:
    """Return (modules to purge, shared namespace packages to keep)."""
    purge: list[str] = []
    shared: list[str] = []
    # sys.modules may hold any object (lazy proxies, shims), not only modules.
    entries: list[tuple[str, object]] = list(sys.modules.items())
    for name, module in entries:
        if not isinstance(module, ModuleType):
            continue
        files, search = _module_paths(module)
        if any(roots.contains(f) for f in files):
            purge.append(name)
        elif search and any(roots.contains(p) for p in search):
            if all(roots.contains(p) for p in search):
                purge.append(name)
            else:
                shared.append(name)
    return purge, shared


def modules_under(path: str | os.PathLike[str]) -> list[str]:
    """Names of the ``sys.modules`` entries that :func:`purge_generation` would remove."""
    return sorted(_classify(_Roots(path))[0])


def _defined_by(obj: object, purged: set[str]) -> bool:
    # Classes, functions and methods carry __module__; an instance finds its class's.
    module = getattr(obj, "__module__", None) or getattr(type(obj), "__module__", None)
    return module in purged


def _clear_typing_caches() -> None:
    typing = sys.modules.get("typing")
    # typing keeps lru caches of parameterised generics (Optional[C], Union[...]) that
    # hold classes strongly; _cleanups lists their cache_clear functions (private API,
    # used the same way by CPython's test suite to avoid reference leaks).
    for clear in getattr(typing, "_cleanups", ()):
        clear()


def purge_generation(path: str | os.PathLike[str]) -> PurgeReport:
    """Remove every module and import-system cache entry belonging to ``path``.

    Call it after the plugin's pre-unload hooks ran and its controllers stopped. It
    drops the import system's references only; objects the application still holds
    stay alive (use :class:`LeakTracker` to find them). Safe to call twice.

    Args:
        path: the generation directory (or any directory whose code should go).

    Returns:
        What was removed.
    """
    roots = _Roots(path)
    purge, shared = _classify(roots)
    purged = set(purge)
    # Deepest first. A parent that survives (a shared namespace package) still
    # holds the purged child as an attribute: cut that link, or the child leaks.
    for name in sorted(purge, key=lambda n: n.count("."), reverse=True):
        module = sys.modules.pop(name, None)
        parent_name, dot, child = name.rpartition(".")
        if dot and parent_name not in purged:
            parent = sys.modules.get(parent_name)
            if parent is not None and getattr(parent, child, None) is module:
                delattr(parent, child)

    removed_path = [
        entry for entry in sys.path if isinstance(entry, str) and roots.contains(entry or ".")
    ]
    sys.path[:] = [entry for entry in sys.path if entry not in removed_path]

    removed_cache = [
        key for key in list(sys.path_importer_cache) if isinstance(key, str) and roots.contains(key)
    ]
    for key in removed_cache:
        sys.path_importer_cache.pop(key, None)

    hooks: list[str] = []
    for finder in list(sys.meta_path):
        if _defined_by(finder, purged):
            sys.meta_path.remove(finder)
            hooks.append(f"sys.meta_path: {type(finder).__qualname__}")
    for hook in list(sys.path_hooks):
        if _defined_by(hook, purged):
            sys.path_hooks.remove(hook)
            hooks.append(f"sys.path_hooks: {getattr(hook, '__qualname__', repr(hook))}")

    stale_lines = [name for name in list(linecache.cache) if roots.contains(name)]
    for name in stale_lines:
        linecache.cache.pop(name, None)
    for cache in (
        getattr(inspect, "modulesbyfile", {}),
        getattr(inspect, "_filesbymodname", {}),
    ):
        for key in [k for k, v in cache.items() if roots.contains(k) or roots.contains(v)]:
            cache.pop(key, None)
    _clear_typing_caches()
    # importlib.metadata lru-caches one FastPath per sys.path entry it scanned. Its
    # MetadataPathFinder.invalidate_caches lacks @classmethod on 3.11, so clear the
    # cache directly (only if the module is loaded: importing it costs ~10 ms).
    fast_path = getattr(sys.modules.get("importlib.metadata"), "FastPath", None)
    clear_fast_paths = getattr(getattr(fast_path, "__new__", None), "cache_clear", None)
    if callable(clear_fast_paths):
        clear_fast_paths()
    importlib.invalidate_caches()
    for name in shared:
        # Make a kept namespace package recompute its portions now that the
        # generation left sys.path; its cached list would still name the generation.
        module = sys.modules.get(name)
        search = getattr(module, "__path__", None)
        if search is not None:
            list(search)

    report = PurgeReport(
        path=Path(os.path.abspath(path)),
        modules=tuple(sorted(purge)),
        shared_namespaces=tuple(sorted(shared)),
        sys_path=tuple(removed_path),
        importer_cache=tuple(sorted(removed_cache)),
        hooks=tuple(hooks),
        linecache=len(stale_lines),
    )
    logger.debug(
        "purged %d modules of %s",
        len(report.modules),
        report.path,
        extra={"generation": report.path.name},
    )
    return report


@dataclass(frozen=True, slots=True)
class Survivor:
    """An object that outlived the purge.

    Attributes:
        label: the label given to :meth:`LeakTracker.track`.
        kind: the object's type name.
        holders: readable descriptions of what references it (best effort).
    """

    label: str
    kind: str
    holders: tuple[str, ...]

    def __str__(self) -> str:
        held = "; ".join(self.holders) or (
            "no referrer found (a local variable of a running function, or a reference "
            "from C code, which the garbage collector cannot see)"
        )
        return f"{self.label} ({self.kind}) is still alive, held by: {held}"


@dataclass(slots=True)
class LeakTracker:
    """Weak references to a plugin's objects, to prove they died after unload.

    Usage::

        probe = LeakTracker()
        probe.track_generation(generation.path)    # modules and their classes
        probe.track(controller, "controller demo/1")
        ... stop controllers, drop factories ...
        purge_generation(generation.path)
        for survivor in probe.survivors():
            logger.warning("%s", survivor)

    The probe holds no strong references, so tracking never causes a leak itself.

    Attributes:
        max_holders: how many referrers to describe per survivor.
    """

    max_holders: int = 4
    _refs: list[tuple[str, str, weakref.ref[object]]] = field(
        default_factory=list, init=False, repr=False
    )

    def __len__(self) -> int:
        return len(self._refs)

    def track(self, obj: object, label: str | None = None) -> None:
        """Watch ``obj``; ``label`` names it in reports (default: its repr).

        Raises:
            TypeError: ``obj`` does not support weak references (e.g. an ``int``,
                a ``tuple``, or an instance of a class with ``__slots__`` but no
                ``__weakref__`` slot).
        """
        try:
            ref = weakref.ref(obj)
        except TypeError:
            raise TypeError(
                f"cannot track {type(obj).__qualname__} objects: they do not support weak "
                "references; track the object that owns them instead"
            ) from None
        self._refs.append((label or _short_repr(obj), type(obj).__qualname__, ref))

    def track_module(self, module: ModuleType) -> int:
        """Track ``module`` and every class defined in it; return how many objects."""
        count = 1
        self.track(module, f"module {module.__name__}")
        for value in list(vars(module).values()):
            if isinstance(value, type) and value.__module__ == module.__name__:
                self.track(value, f"class {module.__name__}.{value.__qualname__}")
                count += 1
        return count

    def track_generation(self, path: str | os.PathLike[str]) -> int:
        """Track every module under ``path`` now in ``sys.modules``, with its classes."""
        count = 0
        for name in modules_under(path):
            module = sys.modules.get(name)
            if module is not None:
                count += self.track_module(module)
        return count

    def alive(self) -> list[str]:
        """Labels of tracked objects still alive (after a ``gc.collect()``)."""
        gc.collect()
        return [label for label, _kind, ref in self._refs if ref() is not None]

    def survivors(self) -> list[Survivor]:
        """Collect garbage, then describe every tracked object still alive.

        Slow (``gc.get_referrers`` scans the heap): call it after an unload, not in
        a hot path.
        """
        gc.collect()
        result: list[Survivor] = []
        for label, kind, ref in self._refs:
            obj = ref()
            if obj is None:
                continue
            holders = _describe_holders(obj, self.max_holders)
            del obj
            result.append(Survivor(label, kind, tuple(holders)))
        return result


def _short_repr(obj: object) -> str:
    text = repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."


def _name_of(obj: object) -> str:
    if isinstance(obj, ModuleType):
        return f"module {obj.__name__}"
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    if isinstance(obj, FunctionType):
        return f"function {obj.__module__}.{obj.__qualname__}"
    return f"{type(obj).__qualname__} object"


def _referrers(obj: object, ignore: set[int]) -> list[object]:
    """``gc.get_referrers`` minus the probe's own frames, temporaries and ``obj``'s insides.

    Every list this returns is itself added to ``ignore``: it references the
    objects it contains and must not show up as their holder one level up. (The
    describing code uses plain loops, not comprehensions, for the same reason: a
    comprehension's closure cell would hold the object being described.)
    """
    found = gc.get_referrers(obj)
    ignore.add(id(found))
    frame: FrameType | None = inspect.currentframe()
    while frame is not None and frame.f_code.co_filename == __file__:
        ignore.add(id(frame))
        frame = frame.f_back
    del frame
    result: list[object] = []
    ignore.add(id(result))
    for ref in found:
        if id(ref) not in ignore and not _internal(obj, ref):
            result.append(ref)
    found.clear()
    return result


def _internal(target: object, ref: object) -> bool:
    """Whether ``ref`` is part of ``target`` itself (a class's MRO, its descriptors,
    the ``__class__`` cell of its methods): such self-references keep nothing alive."""
    if not isinstance(target, type):
        return False
    if ref is target.__mro__ or ref is target.__bases__:
        return True
    if getattr(ref, "__objclass__", None) is target:
        return True
    if isinstance(ref, CellType):
        for value in vars(target).values():
            closure = getattr(value, "__closure__", None)
            if closure is not None and any(cell is ref for cell in closure):
                return True
    return False


def _key_for(container: Mapping[Any, object], target: object) -> object:
    for key, value in container.items():
        if value is target or key is target:
            return key
    return _MISSING


def _dict_owner(d: dict[object, object], key: object, ignore: set[int]) -> object | None:
    for r in _referrers(d, ignore):
        if isinstance(r, ModuleType) and r.__dict__ is d:
            return r
        if isinstance(r, type):
            try:
                if isinstance(key, str) and r.__dict__.get(key) is d.get(key):
                    return r
            except TypeError:  # an unhashable key cannot be a class attribute name
                continue
        elif getattr(r, "__dict__", None) is d:
            return r
    return None


def _describe_dict(ref: dict[object, object], target: object, depth: int, ignore: set[int]) -> str:
    key = _key_for(ref, target)
    shown = "?" if key is _MISSING else repr(key)
    owner = _dict_owner(ref, key, ignore)
    if isinstance(owner, ModuleType):
        return f"global {shown} of module {owner.__name__}"
    if isinstance(owner, type):
        return f"attribute {shown} of {_name_of(owner)}"
    if owner is None and "__name__" in ref and "__spec__" in ref:
        # The globals of a module object that is gone, kept alive by its functions.
        return f"global {shown} of unloaded module {ref['__name__']}" + _held_by(ref, depth, ignore)
    if owner is not None:
        here = f"attribute {shown} of a {type(owner).__qualname__} object"
        return here + _held_by(owner, depth, ignore)
    return f"dict item {shown}" + _held_by(ref, depth, ignore)


def _describe(ref: object, target: object, depth: int, ignore: set[int]) -> str:
    """Describe how ``ref`` holds ``target``, following containers ``depth`` levels up."""
    if isinstance(ref, FrameType):
        code = ref.f_code
        return f"local variable of {code.co_name}() at {code.co_filename}:{ref.f_lineno}"
    if isinstance(ref, dict):
        return _describe_dict(ref, target, depth, ignore)
    if isinstance(ref, list | tuple | set | frozenset):
        return f"{type(ref).__name__} item" + _held_by(ref, depth, ignore)
    if isinstance(ref, CellType):
        for holder in _referrers(ref, ignore):
            if isinstance(holder, tuple):
                for fn in _referrers(holder, ignore):
                    if isinstance(fn, FunctionType):
                        return f"closure variable of {_name_of(fn)}"
        return "closure cell"
    if isinstance(ref, MethodType):
        return f"bound method {ref.__func__.__qualname__}" + _held_by(ref, depth, ignore)
    if isinstance(ref, type):
        if isinstance(target, type) and target in ref.__mro__:
            return f"subclass {ref.__module__}.{ref.__qualname__}"
        return _name_of(ref)
    if isinstance(ref, FunctionType):
        if ref.__globals__ is target:
            return f"globals of {_name_of(ref)}" + _held_by(ref, depth, ignore)
        return f"{_name_of(ref)} (default, annotation or attribute)"
    if isinstance(ref, ModuleType):
        return f"module {ref.__name__}"
    if type(ref) is target:
        return f"instance of {_name_of(target)}" + _held_by(ref, depth, ignore)
    try:
        attrs: Mapping[Any, object] = vars(ref)
    except TypeError:
        attrs = {}
    key = _key_for(attrs, target)
    where = "" if key is _MISSING else f"attribute {key!r} of "
    return f"{where}a {type(ref).__qualname__} object" + _held_by(ref, depth, ignore)


def _held_by(container: object, depth: int, ignore: set[int]) -> str:
    if depth <= 0:
        return ""
    ignore.add(id(container))
    outer: list[str] = []
    ignore.add(id(outer))
    for ref in itertools.islice(_referrers(container, ignore), 2):
        outer.append(_describe(ref, container, depth - 1, ignore))
    return f" (held by {'; '.join(outer)})" if outer else ""


def _describe_holders(obj: object, limit: int) -> list[str]:
    ignore: set[int] = set()
    holders: list[str] = []
    for ref in itertools.islice(_referrers(obj, ignore), limit):
        holders.append(_describe(ref, obj, 2, ignore))
    return holders
