"""The residue half of an unload's confirmation: what the generation left running.

:func:`~controllerbus.loader.activation.confirm_unload` proves the plugin's objects
died; :func:`with_residue` adds the threads, open files and child processes the
generation left (:func:`~controllerbus.loader.residue.find_residue`) to the report's
survivors, and logs them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from controllerbus.loader.residue import find_residue

if TYPE_CHECKING:
    from controllerbus.loader.activation import UnloadReport
    from controllerbus.loader.residue import Baseline

__all__ = ["with_residue"]

logger = logging.getLogger(__name__)


def with_residue(
    report: UnloadReport,
    baseline: Baseline | None,
    generation_dir: Path,
    *,
    own_children: Collection[int],
    kill_children: bool,
) -> UnloadReport:
    """``report`` with what the unloaded generation left running first among its survivors.

    No ``baseline`` (the generation was never activated here): nothing is checked.
    """
    if baseline is None:
        return report
    residue = find_residue(
        generation_dir, baseline, own_children=own_children, kill_children=kill_children
    )
    if not residue:
        return report
    logger.warning(
        "plugin %s: generation %s left running after its unload:\n  %s",
        report.binary_id,
        report.generation[:12],
        "\n  ".join(residue),
    )
    return dataclasses.replace(report, survivors=(*residue, *report.survivors))
