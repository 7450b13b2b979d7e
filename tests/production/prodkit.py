"""Real wheels for the production tests and benchmark: plugins with a dependency.

:func:`plugin_project` writes a plugin project whose greeter controller answers the
host-owned ``Hello`` directive and logs ``<prefix> ready: <word>`` when it starts,
where the word comes from a *third-party* dependency (``<prefix>-dep``, a separate
distribution the host does not have) unless ``dependency=False``.
:func:`build` builds a project into a wheel with hatchling, in-process. Every
package name starts with the caller's prefix (a plugin's packages are imported into
the test process, and must not collide with another test's).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.loader.wheelkit import build_wheel

__all__ = ["build", "dependency_project", "pin", "plugin_project", "sha256"]

_PLUGIN = '''\
"""The $prefix plugin: a greeter on the Hello directive."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

$dep_import
from controllerbus.bus import (
    Bus,
    Config,
    ConstructOpts,
    ControllerFactory,
    ControllerInfo,
    DirectiveInstance,
    Resolver,
    ResolverHandler,
)
from controllerbus.api.hello import Hello, HelloReply
from controllerbus.plugin import StaticPlugin

CONTROLLER_ID = "test/$prefix/greeter/1"
logger = logging.getLogger("$prefix")


class GreeterConfig(Config):
    CONFIG_ID: ClassVar[str] = CONTROLLER_ID
    punctuation: str = ""


class _Resolver:
    def __init__(self, name: str, punctuation: str) -> None:
        self._text = f"{WORD}, {name}{punctuation}"

    async def resolve(self, handler: ResolverHandler) -> None:
        handler.add_value(HelloReply(text=self._text, responder=CONTROLLER_ID))


class GreeterController:
    def __init__(self, config: GreeterConfig, opts: ConstructOpts) -> None:
        self._config = config

    def get_controller_info(self) -> ControllerInfo:
        return ControllerInfo(CONTROLLER_ID, "0.0.1", "$prefix greeter")

    async def execute(self) -> None:
        logger.info("$prefix ready: %s", WORD)

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        directive = inst.get_directive()
        if isinstance(directive, Hello):
            return [_Resolver(directive.name, self._config.punctuation)]
        return []

    def close(self) -> None:
        return None


def _factories(bus: Bus) -> list[ControllerFactory[GreeterConfig]]:
    return [ControllerFactory(GreeterConfig, GreeterController, version="0.0.1")]


PLUGIN = StaticPlugin(binary_id="test/$prefix", binary_version="$version", factories_fn=_factories)
'''

_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "{version}"
requires-python = ">=3.11"
dependencies = [{deps}]
{entry}
[tool.hatch.build.targets.wheel]
packages = ["src/{package}"]
"""


def plugin_project(
    root: Path,
    prefix: str,
    *,
    version: str = "1.0.0",
    dependency: str | None = ">=1",
    word: str = "hello",
) -> Path:
    """Write the ``<prefix>-plugin`` project under ``root``; return its directory.

    Args:
        dependency: the specifier on ``<prefix>-dep`` (``None``: no dependency, the
            plugin's own ``WORD`` is ``word``).
    """
    project = root / f"{prefix}-plugin-{version}"
    package = project / "src" / f"{prefix}_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    dep_import = f"from {prefix}_dep import WORD" if dependency is not None else f"WORD = {word!r}"
    text = (
        _PLUGIN.replace("$dep_import", dep_import)
        .replace("$prefix", prefix)
        .replace("$version", version)
    )
    (package / "plugin.py").write_text(text)
    deps = f'"{prefix}-dep{dependency}"' if dependency is not None else ""
    entry = (
        f'\n[project.entry-points."controllerbus.plugins"]\n'
        f'"test/{prefix}" = "{prefix}_plugin.plugin:PLUGIN"\n'
    )
    (project / "pyproject.toml").write_text(
        _PYPROJECT.format(
            name=f"{prefix}-plugin",
            version=version,
            deps=deps,
            entry=entry,
            package=f"{prefix}_plugin",
        )
    )
    return project


def dependency_project(
    root: Path, prefix: str, *, version: str = "1.0.0", word: str = "hello"
) -> Path:
    """Write the ``<prefix>-dep`` project (module ``<prefix>_dep`` with ``WORD``)."""
    project = root / f"{prefix}-dep-{version}"
    package = project / "src" / f"{prefix}_dep"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f'"""A third-party library."""\n\nWORD = {word!r}\n')
    (project / "pyproject.toml").write_text(
        _PYPROJECT.format(
            name=f"{prefix}-dep", version=version, deps="", entry="", package=f"{prefix}_dep"
        )
    )
    return project


def build(project: Path, out_dir: Path) -> Path:
    """Build ``project`` into ``out_dir``; return the wheel."""
    return build_wheel(project, out_dir)


def sha256(path: Path) -> str:
    """The file's hex sha256."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pin(*wheels: Path) -> str:
    """Trust-file text pinning ``wheels`` by file name."""
    return "".join(f"{w.name} --hash=sha256:{sha256(w)}\n" for w in wheels)
