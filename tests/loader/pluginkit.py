"""Real plugin projects for the host, filesystem-loader and benchmark code.

:func:`write_projects` writes two small projects into a directory: a plugin whose
greeter controller answers the host-owned ``Hello`` directive, and the greeting
library it depends on by path (``[tool.uv.sources]``), as ``plugins/hot-demo`` does.
Every top-level package name starts with a caller-chosen prefix: loading a plugin
imports its packages into the *test process*, and the host refuses a vendored
package that the process can already import from elsewhere, so each test module
(or benchmark) uses its own prefix.

The ``break_*`` helpers rewrite a compiled wheel into a variant that is wrong in
exactly one way (RECORD regenerated unless the RECORD is the point).
"""

from __future__ import annotations

import string
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .wheelkit import corrupt_member, dist_info_of, repack

if TYPE_CHECKING:
    from controllerbus.compiler import CompileResult

__all__ = [
    "BROKEN_VARIANTS",
    "Broken",
    "PluginProjects",
    "Variant",
    "Wheels",
    "compile_wheels",
    "rewrite_member",
    "write_projects",
]

_LIBRARY = '''\
"""The greeting the $prefix plugin uses; tests edit GREETING and recompile."""

GREETING = "$greeting"


def greet(name: str) -> str:
    """The greeting for ``name``."""
    return f"{GREETING}, {name}"
'''

_GREETER = '''\
"""A controller answering the host-owned ``Hello`` directive with $library."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import $library

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

CONTROLLER_ID = "$config_id"


class GreeterConfig(Config):
    """``punctuation`` is appended to every greeting."""

    CONFIG_ID: ClassVar[str] = CONTROLLER_ID

    punctuation: str = ""


class _HelloResolver:
    def __init__(self, name: str, punctuation: str) -> None:
        self._name = name
        self._punctuation = punctuation

    async def resolve(self, handler: ResolverHandler) -> None:
        text = $library.greet(self._name) + self._punctuation
        handler.add_value(HelloReply(text=text, responder=CONTROLLER_ID))


class GreeterController:
    """Answers ``Hello(name)``."""

    def __init__(self, config: GreeterConfig, opts: ConstructOpts) -> None:
        self._config = config

    def get_controller_info(self) -> ControllerInfo:
        return ControllerInfo(CONTROLLER_ID, "0.0.1", "test greeter")

    async def execute(self) -> None:
        return None

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        directive = inst.get_directive()
        if isinstance(directive, Hello):
            return [_HelloResolver(directive.name, self._config.punctuation)]
        return []

    def close(self) -> None:
        return None


def new_factory(bus: Bus) -> ControllerFactory[GreeterConfig]:
    """The greeter's factory."""
    return ControllerFactory(GreeterConfig, GreeterController, version="0.0.1")
'''

_NEW_FACTORY = "def new_factory(bus: Bus) -> ControllerFactory[GreeterConfig]:\n"
_PLUGIN_LINE = "PLUGIN = StaticPlugin(BINARY_ID, BINARY_VERSION, binary_factories)"


@dataclass(frozen=True, slots=True)
class PluginProjects:
    """A generated plugin project and its path-dependency library under ``root``."""

    root: Path
    prefix: str
    binary_id: str

    @property
    def config_id(self) -> str:
        """The greeter's config id (and controller id)."""
        return f"test/{self.prefix}/greeter/1"

    @property
    def target(self) -> Path:
        """The plugin project (what ``compile_plugin`` gets)."""
        return self.root / f"{self.prefix}-plugin"

    @property
    def library(self) -> Path:
        """The greeting library project the plugin depends on by path."""
        return self.root / f"{self.prefix}-greeting"

    @property
    def package(self) -> str:
        """The plugin project's top-level package."""
        return f"{self.prefix}_plugin"

    @property
    def library_package(self) -> str:
        """The library's top-level package."""
        return f"{self.prefix}_greeting"

    @property
    def greeter_member(self) -> str:
        """The wheel member holding the greeter controller."""
        return f"{self.package}/greeter.py"

    def set_greeting(self, greeting: str) -> None:
        """Rewrite the library's ``GREETING`` (what a developer edits between compiles)."""
        path = self.library / "src" / self.library_package / "__init__.py"
        path.write_text(string.Template(_LIBRARY).substitute(prefix=self.prefix, greeting=greeting))

    def compile(self, output_dir: Path) -> CompileResult:
        """Compile the plugin into ``output_dir`` (codegen next to the projects)."""
        from controllerbus.compiler import CompileOptions, compile_plugin

        return compile_plugin(
            [self.target],
            CompileOptions(
                output_dir=output_dir, codegen_dir=self.root / ".codegen", binary_id=self.binary_id
            ),
        )

    def top_levels(self, generated_module: str) -> tuple[str, ...]:
        """Every top-level module a compiled wheel of these projects ships."""
        return tuple(sorted((generated_module, self.package, self.library_package)))


@dataclass(frozen=True, slots=True)
class Wheels:
    """A test module's plugin: v1 says "hello", v2 (library edited) says "howdy"."""

    projects: PluginProjects
    v1: CompileResult
    v2: CompileResult

    @property
    def binary_id(self) -> str:
        return self.projects.binary_id

    @property
    def top_levels(self) -> tuple[str, ...]:
        return self.projects.top_levels(self.v1.module)

    @property
    def greeter_module(self) -> str:
        return f"{self.projects.package}.greeter"


def compile_wheels(root: Path, prefix: str) -> Wheels:
    """Write the projects under ``root/projects`` and compile v1 and v2 of the plugin."""
    projects = write_projects(root / "projects", prefix)
    v1 = projects.compile(root / "v1")
    projects.set_greeting("howdy")
    v2 = projects.compile(root / "v2")
    return Wheels(projects, v1, v2)


def write_projects(root: Path, prefix: str, *, greeting: str = "hello") -> PluginProjects:
    """Write the plugin and library projects under ``root``; see the module docstring.

    Args:
        root: parent directory (created).
        prefix: lowercase identifier that starts every package name (unique per user).
        greeting: the library's initial ``GREETING``.
    """
    if not prefix.isidentifier() or prefix != prefix.lower():
        raise ValueError(f"prefix must be a lowercase identifier, got {prefix!r}")
    projects = PluginProjects(root, prefix, f"test/{prefix}")
    library = projects.library
    (library / "src" / projects.library_package).mkdir(parents=True)
    (library / "pyproject.toml").write_text(
        f'[project]\nname = "{prefix}-greeting"\nversion = "0.1.0"\ndependencies = []\n'
    )
    projects.set_greeting(greeting)
    target = projects.target
    (target / "src" / projects.package).mkdir(parents=True)
    (target / "pyproject.toml").write_text(
        f'[project]\nname = "{prefix}-plugin"\nversion = "0.1.0"\n'
        f'dependencies = ["controllerbus", "{prefix}-greeting"]\n\n'
        f'[tool.uv.sources]\n{prefix}-greeting = {{ path = "../{prefix}-greeting" }}\n'
    )
    (target / "src" / projects.package / "__init__.py").write_text(f'"""{prefix} plugin."""\n')
    (target / "src" / projects.package / "greeter.py").write_text(
        string.Template(_GREETER).substitute(
            library=projects.library_package, config_id=projects.config_id
        )
    )
    return projects


def _member_text(wheel: Path, member: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(member).decode()


def rewrite_member(wheel: Path, dst: Path, member: str, old: str, new: str) -> Path:
    """Copy ``wheel`` to ``dst`` with the first ``old`` in ``member`` replaced by ``new``."""
    text = _member_text(wheel, member)
    if old not in text:
        raise AssertionError(f"{old!r} not found in {member} of {wheel.name}")
    return repack(wheel, dst, replace={member: text.replace(old, new, 1).encode()})


# A variant turns (compiled good wheel, projects, destination) into a broken wheel.
Variant = Callable[["CompileResult", PluginProjects, Path], Path]


def _corrupt_zip(result: CompileResult, projects: PluginProjects, dst: Path) -> Path:
    return corrupt_member(result.wheel, dst, projects.greeter_member)


def _record_mismatch(result: CompileResult, projects: PluginProjects, dst: Path) -> Path:
    text = _member_text(result.wheel, projects.greeter_member)
    changed = {projects.greeter_member: (text + "\n# tampered\n").encode()}
    return repack(result.wheel, dst, replace=changed, fix_record=False)


def _unrecorded_member(result: CompileResult, projects: PluginProjects, dst: Path) -> Path:
    extra = {f"{projects.package}/smuggled.py": b"SMUGGLED = True\n"}
    return repack(result.wheel, dst, add=extra, fix_record=False)


def _path_traversal(result: CompileResult, projects: PluginProjects, dst: Path) -> Path:
    return repack(result.wheel, dst, add={"../escaped.py": b"ESCAPED = True\n"})


def _no_entry_point(result: CompileResult, projects: PluginProjects, dst: Path) -> Path:
    member = f"{dist_info_of(result.wheel)}/entry_points.txt"
    return repack(result.wheel, dst, remove={member})


def _import_error(result: CompileResult, projects: PluginProjects, dst: Path) -> Path:
    return rewrite_member(
        result.wheel,
        dst,
        projects.greeter_member,
        "CONTROLLER_ID = ",
        'raise RuntimeError("greeter is broken at import")\nCONTROLLER_ID = ',
    )


def _factory_raises(result: CompileResult, projects: PluginProjects, dst: Path) -> Path:
    return rewrite_member(
        result.wheel,
        dst,
        projects.greeter_member,
        _NEW_FACTORY,
        _NEW_FACTORY + '    raise ValueError("no greeter factory today")\n',
    )


def _conflicting_requirement(result: CompileResult, projects: PluginProjects, dst: Path) -> Path:
    member = f"{dist_info_of(result.wheel)}/METADATA"
    return rewrite_member(
        result.wheel,
        dst,
        member,
        "Requires-Dist: controllerbus",
        "Requires-Dist: click<1\nRequires-Dist: controllerbus",
    )


def _plugin_none(result: CompileResult, projects: PluginProjects, dst: Path) -> Path:
    return rewrite_member(result.wheel, dst, f"{result.module}.py", _PLUGIN_LINE, "PLUGIN = None")


def _plugin_wrong_type(result: CompileResult, projects: PluginProjects, dst: Path) -> Path:
    return rewrite_member(
        result.wheel, dst, f"{result.module}.py", _PLUGIN_LINE, "PLUGIN = binary_factories"
    )


def _binary_id_mismatch(result: CompileResult, projects: PluginProjects, dst: Path) -> Path:
    return rewrite_member(
        result.wheel,
        dst,
        f"{result.module}.py",
        f"BINARY_ID = {result.binary_id!r}",
        "BINARY_ID = 'test/somebody-else'",
    )


@dataclass(frozen=True, slots=True)
class Broken:
    """A broken-wheel variant and what the loader must say about it.

    Attributes:
        make: builds the variant.
        error: the ``LoaderError`` subclass name raised on a first load.
        reload_error: the subclass name raised on a reload (subprocess trial).
        says: text the message must contain (on both paths).
        verified: the wheel passes verification (so its binary id is known).
    """

    make: Variant
    error: str
    reload_error: str
    says: str
    verified: bool


BROKEN_VARIANTS: dict[str, Broken] = {
    "corrupt-zip": Broken(_corrupt_zip, "InvalidWheel", "InvalidWheel", "CRC", verified=False),
    "record-mismatch": Broken(
        _record_mismatch,
        "InvalidWheel",
        "InvalidWheel",
        "does not match its RECORD hash",
        verified=False,
    ),
    "unrecorded-member": Broken(
        _unrecorded_member, "InvalidWheel", "InvalidWheel", "smuggled.py", verified=False
    ),
    "path-traversal": Broken(
        _path_traversal, "InvalidWheel", "InvalidWheel", "path traversal", verified=False
    ),
    "no-entry-point": Broken(
        _no_entry_point, "InvalidWheel", "InvalidWheel", "no entry_points.txt", verified=False
    ),
    "import-error": Broken(
        _import_error,
        "PluginImportError",
        "PluginPrepareError",
        "RuntimeError: greeter is broken at import",
        verified=True,
    ),
    "factory-raises": Broken(
        _factory_raises,
        "PluginFactoryError",
        "PluginPrepareError",
        "ValueError: no greeter factory today",
        verified=True,
    ),
    "conflicting-requirement": Broken(
        _conflicting_requirement,
        "HostDependencyError",
        "HostDependencyError",
        "requires 'click<1' but the host has click",
        verified=True,
    ),
    "plugin-none": Broken(
        _plugin_none, "InvalidPlugin", "PluginPrepareError", "resolves to None", verified=True
    ),
    "plugin-wrong-type": Broken(
        _plugin_wrong_type,
        "InvalidPlugin",
        "PluginPrepareError",
        "invalid type builtins.function: missing binary_id, binary_version, factories",
        verified=True,
    ),
    "binary-id-mismatch": Broken(
        _binary_id_mismatch,
        "InvalidPlugin",
        "PluginPrepareError",
        "but the plugin's binary_id is 'test/somebody-else'",
        verified=True,
    ),
}
