"""Hot targets: what one ``--hot`` names, and the readable names derived from it."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from controllerbus.errors import ConfigError

__all__ = ["HotTarget"]


@dataclass(frozen=True, slots=True)
class HotTarget:
    """One plugin compiled from one or more project directories (one wheel).

    Attributes:
        paths: the project directories (absolute), as ``cbus-compile compile A B``.
    """

    paths: tuple[Path, ...]

    @classmethod
    def parse(cls, spec: str) -> HotTarget:
        """``"A"`` or ``"A,B"`` (one wheel from both).

        Raises:
            ConfigError: empty, or a path that is not a directory with a ``pyproject.toml``.
        """
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        if not parts:
            raise ConfigError(f"--hot {spec!r}: name a plugin project directory")
        paths = []
        for part in parts:
            path = Path(part).absolute()
            if not (path / "pyproject.toml").is_file():
                raise ConfigError(
                    f"--hot {part}: no pyproject.toml in {path}; pass a plugin project "
                    "directory (one with a pyproject.toml)"
                )
            paths.append(path)
        return cls(tuple(paths))

    @property
    def name(self) -> str:
        """The plugin's default binary id: the project names, sorted and joined with ``+``
        (what the compiler names it), falling back to the directory names."""
        return "+".join(sorted(_project_name(p) for p in self.paths))

    @property
    def slug(self) -> str:
        """:attr:`name` as a file-name-safe word (for its wheel and codegen directories)."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "plugin"

    @property
    def own_config(self) -> Path | None:
        """The first target's ``controllerbus_daemon.yaml``, if it has one."""
        candidate = self.paths[0] / "controllerbus_daemon.yaml"
        return candidate if candidate.is_file() else None


def _project_name(path: Path) -> str:
    try:
        with (path / "pyproject.toml").open("rb") as f:
            name = tomllib.load(f).get("project", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        name = None
    return name if isinstance(name, str) and name else path.name
