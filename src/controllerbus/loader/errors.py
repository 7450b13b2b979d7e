"""Errors of the loader: one class per kind of failure, all under :class:`LoaderError`.

Each message says what failed, where (wheel, generation, state directory) and what
to do next. Errors that gather several problems (:class:`InvalidWheel`,
:class:`HostDependencyError`, :class:`CorruptManifest`) carry them in ``issues`` and
list every one, so a user fixes everything in one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from controllerbus.errors import LoaderError

__all__ = [
    "CorruptManifest",
    "HostDependencyError",
    "InsecurePath",
    "InstallError",
    "InvalidPlugin",
    "InvalidWheel",
    "LoaderError",
    "PluginActivationError",
    "PluginFactoryError",
    "PluginImportError",
    "PluginPrepareError",
    "PluginQuarantined",
    "StateDirError",
    "StateDirLocked",
    "WheelChanged",
]


def _bullets(issues: Sequence[str]) -> str:
    return "\n".join(f"  - {issue}" for issue in issues)


class InvalidWheel(LoaderError, ValueError):
    """A plugin wheel failed verification; nothing was written anywhere.

    Attributes:
        path: the wheel file.
        issues: every problem found, in archive order.
    """

    def __init__(self, path: Path, issues: Sequence[str]) -> None:
        super().__init__(path, tuple(issues))
        self.path = path
        self.issues = tuple(issues)

    def __str__(self) -> str:
        return (
            f"{self.path}: not a loadable controllerbus plugin wheel; nothing was installed. "
            f"Rebuild it (cbus-compile) or fix:\n{_bullets(self.issues)}"
        )


class InsecurePath(LoaderError):
    """A plugins directory, state directory or wheel others could write (StrictModes).

    Attributes:
        path: the path that is not trusted (the checked path or one of its parents).
        what: what was being checked (``"plugins directory /srv/plugins"``, ...).
        problem: why it is not trusted ("it is writable by others (mode 0777)", "its
            parent directory /srv is owned by ...").
        fix: the shell command that fixes it (``chmod go-w PATH`` or ``chown``).
    """

    def __init__(self, path: Path, what: str, problem: str, fix: str) -> None:
        super().__init__(path, what, problem, fix)
        self.path = path
        self.what = what
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return (
            f"refusing to trust the {self.what}: {self.problem}, so someone else could make "
            f"the daemon run their code. Fix: {self.fix} (or start the daemon with "
            "--insecure-permissions to trust it anyway)"
        )


class WheelChanged(LoaderError):
    """The wheel file's bytes changed between verification and installation."""

    def __init__(self, path: Path, expected_sha256: str, actual_sha256: str) -> None:
        super().__init__(path, expected_sha256, actual_sha256)
        self.path = path
        self.expected_sha256 = expected_sha256
        self.actual_sha256 = actual_sha256

    def __str__(self) -> str:
        return (
            f"{self.path}: the wheel changed after it was verified (sha256 "
            f"{self.expected_sha256[:16]}… became {self.actual_sha256[:16]}…); nothing was "
            "installed. Wait until the file is completely written, then verify it again."
        )


class InstallError(LoaderError):
    """Installing a verified wheel into a new generation failed; nothing was left behind.

    Attributes:
        wheel: the wheel being installed.
        generation: the generation directory that was to be created.
        reason: what went wrong, in words.
    """

    def __init__(self, wheel: Path, generation: Path, reason: str) -> None:
        super().__init__(wheel, generation, reason)
        self.wheel = wheel
        self.generation = generation
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"installing {self.wheel.name} into generation {self.generation} failed: "
            f"{self.reason}. The temporary files were removed and no generation was "
            "published; fix the cause (disk space, permissions, the wheel's contents) "
            "and load the plugin again."
        )


class HostDependencyError(LoaderError):
    """The host environment cannot serve a plugin's requirements.

    Attributes:
        plugin: the wheel or distribution the requirements belong to.
        missing: requirements of which no distribution is installed on the host.
        conflicting: requirements the installed version does not satisfy.
        shadowed: vendored top-level packages the host already imported elsewhere.
        issues: all of the above as sentences, in that order.
    """

    def __init__(
        self,
        plugin: str,
        *,
        missing: Sequence[str] = (),
        conflicting: Sequence[str] = (),
        shadowed: Sequence[str] = (),
    ) -> None:
        self.plugin = plugin
        self.missing = tuple(missing)
        self.conflicting = tuple(conflicting)
        self.shadowed = tuple(shadowed)
        self.issues = self.missing + self.conflicting + self.shadowed
        super().__init__(plugin, self.issues)

    def __str__(self) -> str:
        return (
            f"{f'plugin {self.plugin}' if self.plugin else 'the plugin'} cannot run on this "
            f"host; the previous generation (if any) keeps running:\n{_bullets(self.issues)}"
        )


class CorruptManifest(LoaderError, ValueError):
    """The manifest file exists but cannot be read as a manifest."""

    def __init__(self, path: Path, issues: Sequence[str]) -> None:
        super().__init__(path, tuple(issues))
        self.path = path
        self.issues = tuple(issues)

    def __str__(self) -> str:
        return (
            f"{self.path}: the loader manifest is unreadable:\n{_bullets(self.issues)}\n"
            f"Move it aside (mv {self.path} {self.path}.bad) and start again; the loader "
            "writes a fresh manifest from the plugins it loads."
        )


class StateDirError(LoaderError):
    """The state directory cannot be used (not writable, not entered, wrong layout)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"state directory {self.path}: {self.reason}"


class StateDirLocked(StateDirError):
    """Another process holds the state directory's lock.

    Attributes:
        pid: the holder's process id as it recorded it, or ``None`` if unknown.
    """

    def __init__(self, path: Path, pid: int | None) -> None:
        self.pid = pid
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(
            path,
            f"in use by another process ({holder}); stop it or pass a different --state-dir",
        )

    def __str__(self) -> str:
        return f"state directory {self.path} is {self.reason}"


class PluginActivationError(LoaderError):
    """A verified, installed plugin could not be put on the bus.

    Attributes:
        binary_id: the plugin's binary id (its entry point name).
        wheel: the wheel file.
        reason: what went wrong, with the plugin's file and line where known.
    """

    what = "could not be activated"

    def __init__(self, binary_id: str, wheel: Path, reason: str) -> None:
        super().__init__(binary_id, wheel, reason)
        self.binary_id = binary_id
        self.wheel = wheel
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"plugin {self.binary_id} ({self.wheel.name}) {self.what}: {self.reason}. "
            "The previous generation (if any) keeps serving; fix the plugin and build it again."
        )


class PluginImportError(PluginActivationError):
    """Importing the plugin's entry point raised."""

    what = "failed to import"


class InvalidPlugin(PluginActivationError):
    """The entry point is not a plugin object (wrong type, ``None``, id mismatch)."""

    what = "is not a valid plugin"


class PluginFactoryError(PluginActivationError):
    """The plugin's ``factories(bus)`` raised or returned something that is not a factory."""

    what = "could not construct its factories"


class PluginPrepareError(PluginActivationError):
    """Importing the new generation in a subprocess (before the switch) failed."""

    what = "failed its trial import in a subprocess"


class PluginRestoreError(PluginActivationError):
    """A controller of the new generation raised in ``restore(state)``; rolled back."""

    what = "failed to restore the previous generation's state"


class PluginQuarantined(PluginActivationError):
    """The daemon died activating this generation repeatedly; it is not loaded again.

    Attributes:
        state_dir: the state directory whose ``crashes.json`` holds the count.
    """

    what = "is quarantined"

    def __init__(self, binary_id: str, wheel: Path, reason: str, state_dir: Path) -> None:
        super().__init__(binary_id, wheel, reason)
        self.state_dir = state_dir

    def __str__(self) -> str:
        return (
            f"plugin {self.binary_id} ({self.wheel.name}) {self.what}: {self.reason}. "
            "The previous generation (if any) keeps serving. Fix the plugin and build it "
            f"again, or retry this wheel with: cbus plugins retry {self.binary_id} "
            f"--state-dir {self.state_dir} (then restart the daemon or touch the wheel)"
        )
