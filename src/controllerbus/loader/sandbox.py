"""Limits and process groups for trial imports: nothing a trial does outlives its deadline.

A trial child runs in a session (and process group) of its own, so one
``killpg(SIGKILL)`` ends it *and* every process it started that did not leave the
group. Inside the child, :func:`apply_limits` sets ``RLIMIT_AS`` (address space),
``RLIMIT_CPU`` (CPU seconds) and ``RLIMIT_NOFILE`` (open files); :func:`limit_note`
and :func:`describe_status` turn a hit limit into a sentence that says which one.

Only the standard library is imported: the probe imports this before plugin code.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_LIMITS",
    "TRIAL_MARKER_ENV",
    "TrialLimits",
    "apply_limits",
    "describe_status",
    "group_members",
    "kill_group",
    "kill_trial",
    "limit_note",
    "marked_processes",
    "trial_leftovers",
]

TRIAL_MARKER_ENV = "CBUS_TRIAL_ID"
"""Set in a trial's environment (unique per trial): finds processes that left its group."""

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TrialLimits:
    """What a trial import may use.

    Attributes:
        deadline: wall-clock seconds for import + factories; then the trial's whole
            process group is killed.
        memory_mib: address-space limit (``RLIMIT_AS``) in MiB; ``0``: none.
        cpu_seconds: CPU-time limit (``RLIMIT_CPU``); ``0``: the deadline, rounded up.
        open_files: open-file limit (``RLIMIT_NOFILE``); ``0``: none.
    """

    deadline: float = 30.0
    memory_mib: int = 4096
    cpu_seconds: int = 0
    open_files: int = 256

    def __post_init__(self) -> None:
        if not self.deadline > 0:
            raise ValueError(f"the trial deadline must be positive, got {self.deadline}")
        for name in ("memory_mib", "cpu_seconds", "open_files"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def cpu(self) -> int:
        """The effective CPU-time limit in seconds."""
        return self.cpu_seconds or max(1, math.ceil(self.deadline))

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (what the probe gets)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> TrialLimits:
        """The inverse of :meth:`to_json`; ``None`` gives the defaults."""
        if data is None:
            return DEFAULT_LIMITS
        if not isinstance(data, dict):
            raise ValueError(f"limits must be an object, got {type(data).__name__}")
        return cls(**data)


DEFAULT_LIMITS = TrialLimits()


def apply_limits(limits: TrialLimits) -> None:
    """Set the resource limits in the calling (trial) process; never raises.

    A limit above the current hard limit is lowered to it (an unprivileged process
    cannot raise its hard limit).
    """
    import resource

    wanted = [
        (resource.RLIMIT_AS, limits.memory_mib * _MIB if limits.memory_mib else 0),
        (resource.RLIMIT_CPU, limits.cpu),
        (resource.RLIMIT_NOFILE, limits.open_files),
    ]
    for which, value in wanted:
        if not value:
            continue
        with contextlib.suppress(OSError, ValueError):
            _soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            # CPU: the soft limit sends SIGXCPU (reported); the hard one a second later
            # sends SIGKILL, in case the plugin ignores SIGXCPU.
            new_hard = value + 1 if which == resource.RLIMIT_CPU else value
            if hard != resource.RLIM_INFINITY:
                new_hard = min(new_hard, hard)
            resource.setrlimit(which, (value, new_hard))


def limit_note(exc: BaseException, limits: TrialLimits) -> str:
    """`` (the trial's ... limit ... was hit)`` if ``exc`` is how a limit shows; else ``""``."""
    if isinstance(exc, MemoryError) and limits.memory_mib:
        return f" (the trial's address-space limit of {limits.memory_mib} MiB was hit)"
    if isinstance(exc, OSError) and exc.errno == errno.EMFILE and limits.open_files:
        return f" (the trial's open-files limit of {limits.open_files} was hit)"
    return ""


def describe_status(status: int, limits: TrialLimits | None = None) -> str:
    """Why a trial child with wait status ``status`` ended, naming a hit CPU limit."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = _signal_name(sig)
        if sig == signal.SIGXCPU and limits is not None:
            return f"killed by {name}: the trial's CPU-time limit of {limits.cpu} s was hit"
        if sig == signal.SIGKILL and limits is not None:
            return (
                f"killed by {name} (the trial's CPU-time limit of {limits.cpu} s, "
                "or the out-of-memory killer)"
            )
        return f"killed by {name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def group_members(pgid: int) -> list[tuple[int, str]]:
    """Processes in process group ``pgid`` as ``(pid, command line)`` (Linux ``/proc``).

    Elsewhere: ``[(pgid, "?")]`` if the group still exists, else ``[]``.
    """
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [(pgid, "?")]
    members: list[tuple[int, str]] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid pgrp ...: comm may contain spaces and parentheses.
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").strip()
        except (OSError, ValueError, IndexError):
            continue
        members.append((int(entry.name), cmdline.decode(errors="replace")[:200] or "?"))
    return sorted(members)


def marked_processes(marker: str) -> list[tuple[int, str]]:
    """Live processes whose environment has ``CBUS_TRIAL_ID=<marker>`` (Linux ``/proc``).

    This finds what a trial started that left its process group (``setsid``), unless
    it also cleared its environment.
    """
    needle = f"{TRIAL_MARKER_ENV}={marker}".encode()
    found: list[tuple[int, str]] = []
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if needle not in (entry / "environ").read_bytes().split(b"\0"):
                    continue
                stat = (entry / "stat").read_text()
                if stat[stat.rindex(")") + 2 :].split()[0] == "Z":
                    continue
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").strip()
            except (OSError, ValueError):
                continue
            found.append((int(entry.name), cmdline.decode(errors="replace")[:200] or "?"))
    return sorted(found)


def trial_leftovers(pgid: int, marker: str | None) -> list[tuple[int, str]]:
    """What of a trial (group ``pgid``, environment ``marker``) is still running."""
    found = dict(group_members(pgid))
    if marker:
        found.update(marked_processes(marker))
    return sorted(found.items())


def kill_trial(pgid: int, marker: str | None) -> list[tuple[int, str]]:
    """Kill a trial's process group and its marked processes; what was killed."""
    left = trial_leftovers(pgid, marker)
    kill_group(pgid)
    for pid, _cmd in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return left


def kill_group(pgid: int) -> None:
    """``SIGKILL`` every process in group ``pgid`` (gone already: fine)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
