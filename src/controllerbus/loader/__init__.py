"""controllerbus.loader: verify, install, check, purge and record plugin generations.

Library code. Verifying, installing, checking, purging and recording need no bus;
the pieces that put plugins on one (``host``, ``activation``, ``filesystem``,
``plugin_resolver``, ``trial_child``) import :mod:`controllerbus.bus`, never the other
way round. The pieces, in pipeline order:

* :func:`verify_wheel` checks a wheel completely before anything is written.
* :func:`plan_install` / :func:`apply_install` turn it into a *generation*: a venv
  under ``<state-dir>/generations/<sha256>/``, published by an atomic rename.
* :func:`check_host_requirements` proves the host serves the plugin's requirements.
* :func:`purge_generation` unloads a generation's modules and import caches;
  :class:`LeakTracker` proves, with weak references, that nothing survived.
* :func:`read_manifest` / :func:`write_manifest` keep ``manifest.json``;
  :class:`ManifestBook` records each outcome in it.
* :class:`StateDir` locks the state directory and garbage-collects generations.

Importing this package is cheap: sub-modules (and ``installer``, ``pydantic``,
``filelock``) load on first use of a name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from controllerbus.loader.errors import (
    CorruptManifest,
    HostDependencyError,
    InstallError,
    InvalidWheel,
    LoaderError,
    StateDirError,
    StateDirLocked,
    WheelChanged,
)

if TYPE_CHECKING:
    from controllerbus.loader.generation import (
        Generation,
        GenerationId,
        InstallPlan,
        apply_install,
        host_site_dirs,
        install_wheel,
        plan_install,
    )
    from controllerbus.loader.hostdeps import (
        HostDepsReport,
        HostDistribution,
        check_host_requirements,
        host_distributions,
    )
    from controllerbus.loader.manifest import (
        Manifest,
        ManifestBook,
        ManifestRecord,
        read_manifest,
        utc_now,
        wheel_key,
        write_manifest,
    )
    from controllerbus.loader.purge import (
        LeakTracker,
        PurgeReport,
        Survivor,
        modules_under,
        purge_generation,
    )
    from controllerbus.loader.state import StateDir
    from controllerbus.loader.verify import (
        PluginEntryPoint,
        VerifiedWheel,
        build_hash_of,
        verify_wheel,
    )

__all__ = [
    "CorruptManifest",
    "Generation",
    "GenerationId",
    "HostDependencyError",
    "HostDepsReport",
    "HostDistribution",
    "InstallError",
    "InstallPlan",
    "InvalidWheel",
    "LeakTracker",
    "LoaderError",
    "Manifest",
    "ManifestBook",
    "ManifestRecord",
    "PluginEntryPoint",
    "PurgeReport",
    "StateDir",
    "StateDirError",
    "StateDirLocked",
    "Survivor",
    "VerifiedWheel",
    "WheelChanged",
    "apply_install",
    "build_hash_of",
    "check_host_requirements",
    "host_distributions",
    "host_site_dirs",
    "install_wheel",
    "modules_under",
    "plan_install",
    "purge_generation",
    "read_manifest",
    "utc_now",
    "verify_wheel",
    "wheel_key",
    "write_manifest",
]

_LAZY = {
    "generation": (
        "Generation",
        "GenerationId",
        "InstallPlan",
        "apply_install",
        "host_site_dirs",
        "install_wheel",
        "plan_install",
    ),
    "hostdeps": (
        "HostDepsReport",
        "HostDistribution",
        "check_host_requirements",
        "host_distributions",
    ),
    "manifest": (
        "Manifest",
        "ManifestBook",
        "ManifestRecord",
        "read_manifest",
        "utc_now",
        "wheel_key",
        "write_manifest",
    ),
    "purge": ("LeakTracker", "PurgeReport", "Survivor", "modules_under", "purge_generation"),
    "state": ("StateDir",),
    "verify": ("PluginEntryPoint", "VerifiedWheel", "build_hash_of", "verify_wheel"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    # PEP 562 lazy attributes: `import controllerbus.loader` stays cheap for the bus
    # and the CLI; the sub-module is imported when one of its names is first used.
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
