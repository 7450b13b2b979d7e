"""Decide names, version and build hash: pure functions of the analysed graph.

Naming (binary id ``hello-plugin`` with the default build prefix):

===================  ==========================================  =========================
what                 rule                                        example
===================  ==========================================  =========================
binary id            ``--plugin-binary-id``; default: the target  ``hello-plugin``
                     project's name (several targets: their
                     names sorted and joined with ``+``)
slug                 binary id lower-cased, runs of other than    ``hello_plugin``
                     ``[a-z0-9]`` -> ``_``
plugin module        build prefix + slug                          ``cbus_plugin_hello_plugin``
distribution         plugin module with ``_`` -> ``-``            ``cbus-plugin-hello-plugin``
entry point          ``<binary id> = "<module>:PLUGIN"`` in       ``hello-plugin = ...``
                     group ``controllerbus.plugins``
version              ``<base>+cbus.<hash16>``; base = the single  ``0.1.0+cbus.1f2e...``
                     target's public version, else ``0.0.0``
binary version       ``--plugin-binary-version`` with every       ``cbus-hot-1f2e...``
                     ``{buildHash}`` -> hash16
===================  ==========================================  =========================

The build hash is sha256 over a canonical JSON document of the normalised inputs:
compiler format version, ``SOURCE_DATE_EPOCH``, the pinned hatchling version, binary
id, binary-version *template*, base version, module and distribution names,
requirements, ``Requires-Python``, factories, every vendored file as
``(path in wheel, sha256 of bytes)`` and the sha256 of both templates. Absolute
paths, mtimes, owners and modes are not inputs (the overlay writes every file
0644), so the hash is the same wherever and whenever the sources are compiled.
It is not a hash of the wheel: it is known before building, which is what makes a
no-op compile a file-existence check.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from packaging.version import Version

from controllerbus.compiler.errors import DuplicatePackage, InvalidOption, Issue
from controllerbus.compiler.factories import FactoryRef
from controllerbus.compiler.graph import Graph, SourceFile

__all__ = [
    "BUILD_HASH_PLACEHOLDER",
    "DEFAULT_BINARY_VERSION",
    "DEFAULT_BUILD_PREFIX",
    "FORMAT_VERSION",
    "SOURCE_DATE_EPOCH",
    "Plan",
    "Templates",
    "default_binary_id",
    "plan_plugin",
    "slugify",
]

#: Bump when the overlay layout or generated code changes in a way the template
#: digests do not capture (e.g. how files are laid out), to force new hashes.
FORMAT_VERSION = 1
#: Fixed archive timestamp (hatchling's own default, 2020-02-02), set explicitly so a
#: host that exports another SOURCE_DATE_EPOCH still gets the canonical bytes.
SOURCE_DATE_EPOCH = 1580601600
DEFAULT_BUILD_PREFIX = "cbus_plugin_"
DEFAULT_BINARY_VERSION = "cbus-hot-{buildHash}"
BUILD_HASH_PLACEHOLDER = "{buildHash}"
HASH_SHORT = 16

_BINARY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/@+-]{0,199}")
_BUILD_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")


@dataclass(frozen=True, slots=True)
class Templates:
    """The text of the two overlay templates (inputs of the build hash)."""

    pyproject: str
    module: str


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the overlay and the build need, decided up front.

    Attributes:
        binary_id: the plugin's stable identity (entry point name, ``BINARY_ID``).
        binary_version: ``BINARY_VERSION`` with ``{buildHash}`` substituted.
        build_hash: sha256 hex (64) of the normalised inputs.
        module: import name of the generated plugin module.
        distribution: the wheel's distribution name.
        version: the wheel version, ``<base>+cbus.<hash16>``.
        requires: ``Requires-Dist`` lines.
        requires_python: ``Requires-Python``.
        factories: factory constructors, sorted.
        files: vendored files, sorted by path in the wheel.
        targets: canonical names of the target projects (for the generated docstring).
        hatchling_version: pinned in the overlay's ``build-system.requires``.
        templates: the template texts to render.
        extras: optional dependencies by extra name (``Provides-Extra``).
    """

    binary_id: str
    binary_version: str
    build_hash: str
    module: str
    distribution: str
    version: str
    requires: tuple[str, ...]
    requires_python: str
    factories: tuple[FactoryRef, ...]
    files: tuple[SourceFile, ...]
    targets: tuple[str, ...]
    hatchling_version: str
    templates: Templates
    extras: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def build_hash_short(self) -> str:
        """The first 16 hex digits of the build hash (the ``{buildHash}`` value)."""
        return self.build_hash[:HASH_SHORT]

    @property
    def wheel_name(self) -> str:
        """The wheel file name hatchling produces for this plan."""
        return f"{self.module}-{self.version}-py3-none-any.whl"

    def to_json(self) -> dict[str, object]:
        """The plan's part of ``cbus-compile --json`` (``compile`` and ``codegen`` alike)."""
        return {
            "build_hash": self.build_hash,
            "version": self.version,
            "binary_id": self.binary_id,
            "binary_version": self.binary_version,
            "distribution": self.distribution,
            "module": self.module,
            "wheel_name": self.wheel_name,
            "factories": [str(ref) for ref in self.factories],
            "requires": list(self.requires),
            "extras": {name: list(reqs) for name, reqs in self.extras.items()},
        }


def slugify(binary_id: str) -> str:
    """Lower-case ``binary_id`` with every run of characters outside ``[a-z0-9]`` as ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", binary_id.lower()).strip("_")


def default_binary_id(graph: Graph) -> str:
    """The target's project name, or the sorted target names joined by ``+``."""
    return "+".join(sorted(target.name for target in graph.targets))


def plan_plugin(
    graph: Graph,
    *,
    hatchling_version: str,
    templates: Templates,
    binary_id: str | None = None,
    binary_version: str | None = None,
    build_prefix: str | None = None,
) -> Plan:
    """Name the plugin and compute its build hash.

    Args:
        graph: the analysed targets.
        hatchling_version: the hatchling version that will build (and is pinned).
        templates: the overlay templates.
        binary_id: ``BINARY_ID``; default :func:`default_binary_id`.
        binary_version: ``BINARY_VERSION`` template; ``{buildHash}`` is replaced by
            the first 16 hex digits of the build hash. Default ``cbus-hot-{buildHash}``.
        build_prefix: import-name prefix of the generated module; default ``cbus_plugin_``.

    Raises:
        InvalidOption: an option does not fit the rules in the module docstring.
        DuplicatePackage: the generated module name is also a vendored package.
    """
    binary_id = default_binary_id(graph) if binary_id is None else binary_id
    if not _BINARY_ID.fullmatch(binary_id):
        raise InvalidOption(
            "plugin binary id",
            f"{binary_id!r}: use letters, digits and ._/@+- (starting with a letter or"
            " digit, at most 200 characters)",
        )
    template = DEFAULT_BINARY_VERSION if binary_version is None else binary_version
    if not template or not template.isprintable() or len(template) > 200:
        raise InvalidOption(
            "plugin binary version", f"{template!r}: must be 1-200 printable characters"
        )
    prefix = DEFAULT_BUILD_PREFIX if build_prefix is None else build_prefix
    if not _BUILD_PREFIX.fullmatch(prefix):
        raise InvalidOption(
            "build prefix", f"{prefix!r}: must be the start of a Python identifier (cbus_plugin_)"
        )
    slug = slugify(binary_id)
    module = f"{prefix}{slug}" if slug else prefix.rstrip("_") or "plugin"
    if not module.isidentifier():
        raise InvalidOption("build prefix", f"{prefix!r} + {slug!r} is not an identifier")
    distribution = module.replace("_", "-")
    clash = next((f for f in graph.files if f.dest.split("/")[0] in (module, f"{module}.py")), None)
    if clash is not None:
        raise DuplicatePackage(
            [
                Issue(
                    clash.path,
                    None,
                    f"{clash.dest.split('/')[0]} clashes with the generated plugin module {module};"
                    " choose another --build-prefix or --plugin-binary-id",
                )
            ]
        )

    base = "0.0.0"
    if len(graph.targets) == 1 and graph.targets[0].version is not None:
        base = Version(graph.targets[0].version).public
    inputs = {
        "format": FORMAT_VERSION,
        "source_date_epoch": SOURCE_DATE_EPOCH,
        "hatchling": hatchling_version,
        "binary_id": binary_id,
        "binary_version": template,
        "base_version": base,
        "module": module,
        "distribution": distribution,
        "requires": list(graph.requires),
        "extras": {name: list(reqs) for name, reqs in graph.extras.items()},
        "requires_python": graph.requires_python,
        "factories": [str(ref) for ref in graph.factories],
        "files": [[f.dest, f.digest] for f in graph.files],
        "templates": {
            "pyproject": hashlib.sha256(templates.pyproject.encode()).hexdigest(),
            "module": hashlib.sha256(templates.module.encode()).hexdigest(),
        },
    }
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    build_hash = hashlib.sha256(canonical.encode()).hexdigest()
    short = build_hash[:HASH_SHORT]
    return Plan(
        binary_id=binary_id,
        binary_version=template.replace(BUILD_HASH_PLACEHOLDER, short),
        build_hash=build_hash,
        module=module,
        distribution=distribution,
        version=str(Version(f"{base}+cbus.{short}")),
        requires=graph.requires,
        extras=graph.extras,
        requires_python=graph.requires_python,
        factories=graph.factories,
        files=graph.files,
        targets=tuple(target.name for target in graph.targets),
        hatchling_version=hatchling_version,
        templates=templates,
    )
