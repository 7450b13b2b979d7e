"""Checks of a load before anything is installed, and how a refusal is classed.

Pure decisions for :class:`~controllerbus.loader.host.PluginHost`: whether a
quarantined generation is refused, whether an in-process plugin's requirements fit
the host, and which manifest status a failure gets. Nothing here writes anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from controllerbus.loader.errors import InsecurePath, InvalidWheel, PluginQuarantined
from controllerbus.loader.hostdeps import check_host_requirements
from controllerbus.loader.trust import UntrustedWheel

if TYPE_CHECKING:
    from controllerbus.loader.crashguard import Crash
    from controllerbus.loader.errors import LoaderError
    from controllerbus.loader.generation import Generation
    from controllerbus.loader.manifest import PluginStatus
    from controllerbus.loader.production import LoadPolicy
    from controllerbus.loader.verify import VerifiedWheel
    from controllerbus.loader.wheelsource import Resolution

__all__ = ["check_host", "failure_status", "refuse_quarantined"]


def refuse_quarantined(
    crash: Crash | None, key: str, wheel: Path, verified: VerifiedWheel, state_path: Path
) -> None:
    """Raise :class:`PluginQuarantined` if the daemon died too often activating it."""
    if crash is not None and crash.status == "quarantined":
        raise PluginQuarantined(
            key,
            wheel,
            f"the daemon died {crash.count} times while activating generation "
            f"{verified.sha256[:12]} (last at {crash.last})",
            state_path,
        )


def check_host(
    policy: LoadPolicy,
    verified: VerifiedWheel,
    binary_id: str,
    old: Generation | None,
    deps: Resolution,
) -> None:
    """Refuse an in-process plugin whose requirements or packages clash with the host."""
    # The generation being replaced is excluded: its modules do not "shadow"
    # the new one, and its site-packages is not the host's. Requirements served
    # by dependency wheels are not the host's business; their packages are checked
    # for shadowing like the plugin's own.
    check_host_requirements(
        deps.host_lines,
        plugin=binary_id,
        first_party_packages=(*verified.top_level, *deps.top_level),
        installed=policy.host_distributions(),
        generation_path=old.path if old is not None else None,
        importable_shadows=True,
    )


def failure_status(exc: LoaderError) -> PluginStatus:
    """The manifest status of a failed load: quarantined, rejected (the input) or failed."""
    if isinstance(exc, PluginQuarantined):
        return "quarantined"
    if isinstance(exc, (InvalidWheel, InsecurePath, UntrustedWheel)):
        return "rejected"
    return "failed"
