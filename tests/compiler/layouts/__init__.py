"""Real-world project layouts, one per case, written into a directory on demand.

Each :class:`Layout` is a small repository: a plugin target (whose factory imports
its local library, so an unvendored library fails the import) and the path
dependencies, in the shapes people have (uv workspaces, poetry, pdm, setuptools,
flit, hatchling; src and flat layouts; namespace packages; package data; dynamic
versions). ``projects`` lists every first-party project, which the tests build
with its own backend as the oracle for which modules the plugin must ship.
"""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LAYOUTS", "Layout"]


@dataclass(frozen=True)
class Layout:
    """One repository layout.

    Attributes:
        name: the case's id.
        files: ``{relative path: text}`` (dedented).
        target: the plugin project, relative to the layout root.
        projects: every first-party project (target first), relative.
        version: the base version the plugin wheel must carry.
        setup: run after writing the files (e.g. ``git init`` and a tag).
    """

    name: str
    files: Mapping[str, str]
    target: str
    projects: tuple[str, ...]
    version: str = "0.1.0"
    setup: Callable[[Path], None] | None = field(default=None, compare=False)

    def write(self, root: Path) -> Path:
        """Write the layout under ``root``; return the target's directory."""
        for rel, text in self.files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip("\n"))
        if self.setup is not None:
            self.setup(root)
        return root / self.target


HATCH = '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
SETUPTOOLS = (
    '[build-system]\nrequires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"\n'
)
SETUPTOOLS_SCM = (
    '[build-system]\nrequires = ["setuptools>=69", "setuptools-scm>=8"]\n'
    'build-backend = "setuptools.build_meta"\n'
)
FLIT = '[build-system]\nrequires = ["flit_core>=3.9"]\nbuild-backend = "flit_core.buildapi"\n'
PDM = '[build-system]\nrequires = ["pdm-backend"]\nbuild-backend = "pdm.backend"\n'
POETRY = (
    '[build-system]\nrequires = ["poetry-core>=1.9"]\nbuild-backend = "poetry.core.masonry.api"\n'
)
UV = '[build-system]\nrequires = ["uv_build>=0.5"]\nbuild-backend = "uv_build"\n'


def project(
    name: str,
    backend: str,
    *,
    deps: tuple[str, ...] = (),
    version: str | None = "0.1.0",
    extra: str = "",
) -> str:
    """A ``pyproject.toml``: ``[project]`` then ``extra`` then the backend table."""
    lines = [backend, "[project]", f'name = "{name}"']
    lines.append(f'version = "{version}"' if version else 'dynamic = ["version"]')
    if name != "lib" or deps:
        lines.append('requires-python = ">=3.11"')
    lines.append("dependencies = [" + ", ".join(f'"{d}"' for d in deps) + "]")
    return "\n".join(lines) + "\n" + textwrap.dedent(extra).lstrip("\n")


def factory(lib_module: str) -> str:
    """A real controller factory whose module needs ``lib_module`` at import time.

    Its config id is ``test/layouts/<module name>/1``, so each layout's is unique.
    """
    return f"""
from typing import ClassVar

from controllerbus.bus import Config, ControllerFactory, ControllerInfo

from {lib_module} import VALUE

CONFIG_ID = "test/layouts/" + __name__ + "/1"


class LayoutConfig(Config):
    CONFIG_ID: ClassVar[str] = CONFIG_ID


class LayoutController:
    def __init__(self, config, opts):
        self.config = config

    def get_controller_info(self):
        return ControllerInfo(CONFIG_ID, "0.0.1", VALUE)

    async def execute(self):
        return None

    def handle_directive(self, inst):
        return []

    def close(self):
        return None


def new_factory(bus):
    return ControllerFactory(LayoutConfig, LayoutController, version="0.0.1")
"""


LIB = 'VALUE = "lib"\n'


def _git_tag(tag: str, where: str = ".") -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        repo = root / where
        run = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
        subprocess.run([*run, "init", "-q"], cwd=repo, check=True)
        subprocess.run([*run, "add", "-A"], cwd=repo, check=True)
        subprocess.run([*run, "commit", "-qm", "init"], cwd=repo, check=True)
        subprocess.run([*run, "tag", tag], cwd=repo, check=True)

    return setup


def _layouts() -> list[Layout]:
    layouts = [
        Layout(
            "hatch-src",
            {
                "plugin/pyproject.toml": project(
                    "hatch-src",
                    HATCH,
                    deps=("lib",),
                    extra='[tool.uv.sources]\nlib = { path = "../lib" }\n',
                ),
                "plugin/src/hatch_src/__init__.py": "",
                "plugin/src/hatch_src/factory.py": factory("lib"),
                "lib/pyproject.toml": project("lib", HATCH),
                "lib/src/lib/__init__.py": LIB,
                "lib/src/lib/data/table.json": "{}",
            },
            "plugin",
            ("plugin", "lib"),
        ),
        Layout(
            "hatch-flat",
            {
                "plugin/pyproject.toml": project(
                    "hatch-flat",
                    HATCH,
                    deps=("flatlib @ file:../flatlib",),
                    extra="[tool.hatch.metadata]\nallow-direct-references = true\n",
                ),
                "plugin/hatch_flat/__init__.py": "",
                "plugin/hatch_flat/factory.py": factory("flatlib"),
                "plugin/tests/test_x.py": "",
                "flatlib/pyproject.toml": project("flatlib", HATCH),
                "flatlib/flatlib.py": LIB,
            },
            "plugin",
            ("plugin", "flatlib"),
        ),
        Layout(
            "hatch-import-name-differs",
            {
                "plugin/pyproject.toml": project(
                    "acme-widget",
                    HATCH,
                    deps=("lib",),
                    extra='[tool.hatch.build.targets.wheel]\npackages = ["src/widget"]\n'
                    '[tool.cbus.replace]\nlib = "../lib"\n',
                ),
                "plugin/src/widget/__init__.py": "",
                "plugin/src/widget/factory.py": factory("corelib"),
                "lib/pyproject.toml": project(
                    "lib", HATCH, extra='[tool.hatch.build.targets.wheel]\npackages = ["corelib"]\n'
                ),
                "lib/corelib/__init__.py": LIB,
            },
            "plugin",
            ("plugin", "lib"),
        ),
        Layout(
            "hatch-dynamic-version-gitignore",
            {
                "plugin/pyproject.toml": project(
                    "hatch-dyn",
                    HATCH,
                    deps=("lib>=2",),
                    version=None,
                    extra='[tool.hatch.version]\npath = "src/hatch_dyn/__about__.py"\n'
                    '[tool.uv.sources]\nlib = { path = "../lib" }\n',
                ),
                "plugin/.gitignore": "*.env\nscratch/\n",
                "plugin/src/hatch_dyn/__init__.py": "",
                "plugin/src/hatch_dyn/__about__.py": '__version__ = "3.4.5"\n',
                "plugin/src/hatch_dyn/factory.py": factory("lib"),
                "plugin/src/hatch_dyn/secret.env": "TOKEN=1\n",
                "plugin/src/hatch_dyn/scratch/notes.py": "",
                "lib/pyproject.toml": project(
                    "lib",
                    HATCH,
                    version=None,
                    extra='[tool.hatch.version]\npath = "src/lib/__init__.py"\n',
                ),
                "lib/src/lib/__init__.py": '__version__ = "2.1"\n' + LIB,
            },
            "plugin",
            ("plugin", "lib"),
            version="3.4.5",
        ),
        Layout(
            "hatch-namespace",
            {
                "plugin/pyproject.toml": project(
                    "acme-plugin",
                    HATCH,
                    deps=("acme-core",),
                    extra='[tool.hatch.build.targets.wheel]\npackages = ["src/acme"]\n'
                    '[tool.uv.sources]\nacme-core = { path = "../core" }\n',
                ),
                "plugin/src/acme/plugin/__init__.py": "",
                "plugin/src/acme/plugin/factory.py": factory("acme.core"),
                "core/pyproject.toml": project(
                    "acme-core",
                    HATCH,
                    extra='[tool.hatch.build.targets.wheel]\npackages = ["src/acme"]\n',
                ),
                "core/src/acme/core/__init__.py": LIB,
            },
            "plugin",
            ("plugin", "core"),
        ),
        Layout(
            "setuptools-src-auto",
            {
                "plugin/pyproject.toml": project(
                    "st-src",
                    SETUPTOOLS,
                    deps=("lib",),
                    extra='[tool.uv.sources]\nlib = { path = "../lib", editable = true }\n',
                ),
                "plugin/src/st_src/__init__.py": "",
                "plugin/src/st_src/factory.py": factory("lib"),
                "plugin/src/st_src/notes.txt": "not package data\n",
                "lib/pyproject.toml": project("lib", SETUPTOOLS),
                "lib/src/lib/__init__.py": LIB,
            },
            "plugin",
            ("plugin", "lib"),
        ),
        Layout(
            "setuptools-find-where",
            {
                "plugin/pyproject.toml": project(
                    "st-find",
                    SETUPTOOLS,
                    deps=("lib",),
                    extra='[tool.setuptools.packages.find]\nwhere = ["code"]\n'
                    'include = ["st_*"]\nexclude = ["st_find.tests*"]\n'
                    '[tool.cbus.replace]\nlib = "../lib"\n',
                ),
                "plugin/code/st_find/__init__.py": "",
                "plugin/code/st_find/factory.py": factory("lib"),
                "plugin/code/other/__init__.py": "",
                "lib/pyproject.toml": project("lib", SETUPTOOLS),
                "lib/lib/__init__.py": LIB,
                "lib/docs/conf.py": "",
            },
            "plugin",
            ("plugin", "lib"),
        ),
        Layout(
            "setuptools-package-dir-py-modules",
            {
                "plugin/pyproject.toml": project(
                    "st-pkgdir",
                    SETUPTOOLS,
                    deps=("lib",),
                    extra='[tool.setuptools]\npackage-dir = {"" = "python"}\n'
                    'packages = ["st_pkgdir"]\npy-modules = ["st_helper"]\n'
                    '[tool.uv.sources]\nlib = { path = "../lib" }\n',
                ),
                "plugin/python/st_pkgdir/__init__.py": "import st_helper\n",
                "plugin/python/st_pkgdir/factory.py": factory("lib"),
                "plugin/python/st_helper.py": "",
                "lib/pyproject.toml": project(
                    "lib", SETUPTOOLS, extra='[tool.setuptools]\npy-modules = ["lib"]\n'
                ),
                "lib/lib.py": LIB,
            },
            "plugin",
            ("plugin", "lib"),
        ),
        Layout(
            "setuptools-package-data-attr-version",
            {
                "plugin/pyproject.toml": project(
                    "st-data",
                    SETUPTOOLS,
                    deps=("lib",),
                    version=None,
                    extra='[tool.setuptools.dynamic]\nversion = { attr = "st_data.__version__" }\n'
                    '[tool.setuptools.package-data]\nst_data = ["*.json", "templates/*.txt"]\n'
                    '[tool.uv.sources]\nlib = { path = "../lib" }\n',
                ),
                "plugin/src/st_data/__init__.py": '__version__ = "1.7.0"\n',
                "plugin/src/st_data/factory.py": factory("lib"),
                "plugin/src/st_data/schema.json": "{}",
                "plugin/src/st_data/templates/a.txt": "a",
                "plugin/src/st_data/README.md": "not package data",
                "lib/pyproject.toml": project(
                    "lib",
                    SETUPTOOLS,
                    version=None,
                    extra='[tool.setuptools.dynamic]\nversion = { file = "VERSION" }\n',
                ),
                "lib/VERSION": "0.9\n",
                "lib/src/lib/__init__.py": LIB,
            },
            "plugin",
            ("plugin", "lib"),
            version="1.7.0",
        ),
        Layout(
            "setuptools-scm",
            {
                "plugin/pyproject.toml": project(
                    "st-scm",
                    SETUPTOOLS_SCM,
                    deps=("lib",),
                    version=None,
                    extra='[tool.setuptools_scm]\n[tool.uv.sources]\nlib = { path = "../lib" }\n',
                ),
                "plugin/src/st_scm/__init__.py": "",
                "plugin/src/st_scm/factory.py": factory("lib"),
                "lib/pyproject.toml": project("lib", SETUPTOOLS),
                "lib/src/lib/__init__.py": LIB,
            },
            "plugin",
            ("plugin", "lib"),
            version="2.3.4",
            setup=_git_tag("v2.3.4", "plugin"),
        ),
        Layout(
            "flit-module-name",
            {
                "plugin/pyproject.toml": project(
                    "flit-plugin",
                    FLIT,
                    deps=("lib",),
                    version=None,
                    extra='[tool.flit.module]\nname = "flitty"\n'
                    '[tool.uv.sources]\nlib = { path = "../lib" }\n',
                ).replace('name = "flit-plugin"', 'name = "flit-plugin"\ndescription = "x"'),
                "plugin/src/flitty/__init__.py": '"""Flitty."""\n__version__ = "0.4.0"\n',
                "plugin/src/flitty/factory.py": factory("lib"),
                "lib/pyproject.toml": project("lib", FLIT, version=None).replace(
                    'name = "lib"', 'name = "lib"\ndescription = "x"'
                ),
                "lib/lib.py": '"""Lib."""\n__version__ = "1.0"\n' + LIB,
            },
            "plugin",
            ("plugin", "lib"),
            version="0.4.0",
        ),
        Layout(
            "pdm-project-root",
            {
                "plugin/pyproject.toml": project(
                    "pdm-plugin", PDM, deps=("lib @ file:///${PROJECT_ROOT}/../lib",)
                ),
                "plugin/src/pdm_plugin/__init__.py": "",
                "plugin/src/pdm_plugin/factory.py": factory("lib"),
                "lib/pyproject.toml": project("lib", PDM),
                "lib/src/lib/__init__.py": LIB,
            },
            "plugin",
            ("plugin", "lib"),
        ),
        Layout(
            "pdm-includes",
            {
                "plugin/pyproject.toml": project(
                    "pdm-inc",
                    PDM,
                    deps=("lib",),
                    extra='[tool.pdm.build]\nincludes = ["pdm_inc"]\n'
                    '[tool.uv.sources]\nlib = { path = "../lib" }\n',
                ),
                "plugin/pdm_inc/__init__.py": "",
                "plugin/pdm_inc/factory.py": factory("lib"),
                "plugin/scripts/tool.py": "",
                "lib/pyproject.toml": project("lib", PDM),
                "lib/lib/__init__.py": LIB,
            },
            "plugin",
            ("plugin", "lib"),
        ),
        Layout(
            "poetry2-path-dependency",
            {
                "plugin/pyproject.toml": project(
                    "poetry-two",
                    POETRY,
                    deps=("lib",),
                    extra='[tool.poetry.dependencies]\nlib = { path = "../lib", develop = true }\n',
                ),
                "plugin/src/poetry_two/__init__.py": "",
                "plugin/src/poetry_two/factory.py": factory("lib"),
                "lib/pyproject.toml": project("lib", POETRY),
                "lib/src/lib/__init__.py": LIB,
            },
            "plugin",
            ("plugin", "lib"),
        ),
        Layout(
            "poetry1-tool-poetry",
            {
                "plugin/pyproject.toml": POETRY
                + """
                [tool.poetry]
                name = "poetry-one"
                version = "1.2.0"
                description = "x"
                authors = ["t <t@t>"]
                packages = [{ include = "p1", from = "src" }]

                [tool.poetry.dependencies]
                python = "^3.11"
                lib = { path = "../lib" }

                [tool.poetry.group.dev.dependencies]
                pytest = "^8"
                """.replace("\n                ", "\n"),
                "plugin/src/p1/__init__.py": "",
                "plugin/src/p1/factory.py": factory("lib"),
                "lib/pyproject.toml": POETRY
                + '[tool.poetry]\nname = "lib"\nversion = "0.3.0"\ndescription = "x"\n'
                'authors = ["t <t@t>"]\n',
                "lib/lib/__init__.py": LIB,
            },
            "plugin",
            ("plugin", "lib"),
            version="1.2.0",
        ),
        Layout(
            "uv-workspace-members",
            {
                "pyproject.toml": '[tool.uv.workspace]\nmembers = ["packages/*"]\n'
                'exclude = ["packages/broken"]\n',
                "packages/plugin/pyproject.toml": project(
                    "ws-plugin",
                    UV,
                    deps=("ws-lib",),
                    extra="[tool.uv.sources]\nws-lib = { workspace = true }\n",
                ),
                "packages/plugin/src/ws_plugin/__init__.py": "",
                "packages/plugin/src/ws_plugin/factory.py": factory("ws_lib"),
                "packages/lib/pyproject.toml": project("ws-lib", UV),
                "packages/lib/src/ws_lib/__init__.py": LIB,
                "packages/broken/README": "not a project",
            },
            "packages/plugin",
            ("packages/plugin", "packages/lib"),
        ),
        Layout(
            "uv-workspace-root-sources",
            {
                "pyproject.toml": project(
                    "ws-root",
                    HATCH,
                    deps=(),
                    extra='[tool.uv.workspace]\nmembers = ["libs/*", "plugins/*"]\n'
                    "[tool.uv.sources]\nws-core = { workspace = true }\n"
                    "ws-util = { workspace = true }\n",
                ),
                "src/ws_root/__init__.py": "",
                "plugins/p/pyproject.toml": project("ws-p", HATCH, deps=("ws-core>=0.1",)),
                "plugins/p/src/ws_p/__init__.py": "",
                "plugins/p/src/ws_p/factory.py": factory("ws_core"),
                "libs/core/pyproject.toml": project("ws-core", HATCH, deps=("ws-util",)),
                "libs/core/src/ws_core/__init__.py": "from ws_util import VALUE\n",
                "libs/util/pyproject.toml": project("ws-util", HATCH),
                "libs/util/src/ws_util/__init__.py": LIB,
            },
            "plugins/p",
            ("plugins/p", "libs/core", "libs/util"),
        ),
        Layout(
            "uv-build-module-name-flat",
            {
                "plugin/pyproject.toml": project(
                    "uvb-plugin",
                    UV,
                    deps=("lib",),
                    extra='[tool.uv.build-backend]\nmodule-name = "uvmod"\nmodule-root = ""\n'
                    '[tool.uv.sources]\nlib = { path = "../lib" }\n',
                ),
                "plugin/uvmod/__init__.py": "",
                "plugin/uvmod/factory.py": factory("lib"),
                "lib/pyproject.toml": project("lib", UV),
                "lib/src/lib/__init__.py": LIB,
            },
            "plugin",
            ("plugin", "lib"),
        ),
        Layout(
            "setuptools-flat-auto",
            {
                "plugin/pyproject.toml": project(
                    "stflat",
                    SETUPTOOLS,
                    deps=("lib",),
                    extra='[tool.cbus.replace]\nlib = "../lib"\n',
                ),
                "plugin/stflat/__init__.py": "",
                "plugin/stflat/factory.py": factory("lib"),
                "plugin/tests/__init__.py": "",
                "plugin/docs/conf.py": "",
                "lib/pyproject.toml": project("lib", SETUPTOOLS),
                "lib/lib/__init__.py": LIB,
            },
            "plugin",
            ("plugin", "lib"),
        ),
        Layout(
            "hatch-only-include-extras",
            {
                "plugin/pyproject.toml": project(
                    "hatch-oi",
                    HATCH,
                    deps=("lib",),
                    extra='[project.optional-dependencies]\nfast = ["packaging>=24"]\n'
                    'all = ["hatch-oi[fast]"]\n'
                    '[tool.hatch.build.targets.wheel]\nonly-include = ["src"]\nsources = ["src"]\n'
                    '[tool.uv.sources]\nlib = { path = "../lib" }\n',
                ),
                "plugin/src/hatch_oi/__init__.py": "",
                "plugin/src/hatch_oi/factory.py": factory("lib"),
                "plugin/src/extra_mod.py": "",
                "lib/pyproject.toml": project("lib", HATCH),
                "lib/src/lib/__init__.py": LIB,
            },
            "plugin",
            ("plugin", "lib"),
        ),
        Layout(
            "poetry-packages-glob",
            {
                "plugin/pyproject.toml": project(
                    "pglob",
                    POETRY,
                    deps=("lib",),
                    extra="[tool.poetry]\npackages = ["
                    '{ include = "pg_one", from = "lib" }, { include = "pg_two", from = "lib" }]\n'
                    '[tool.poetry.dependencies]\nlib = { path = "../lib" }\n',
                ),
                "plugin/lib/pg_one/__init__.py": "",
                "plugin/lib/pg_one/factory.py": factory("lib"),
                "plugin/lib/pg_two/__init__.py": "",
                "lib/pyproject.toml": project("lib", POETRY),
                "lib/src/lib/__init__.py": LIB,
            },
            "plugin",
            ("plugin", "lib"),
        ),
        Layout(
            "pdm-package-dir",
            {
                "plugin/pyproject.toml": project(
                    "pdm-pd",
                    PDM,
                    deps=("lib",),
                    extra='[tool.pdm.build]\npackage-dir = "python"\n'
                    '[tool.uv.sources]\nlib = { path = "../lib" }\n',
                ),
                "plugin/python/pdm_pd/__init__.py": "",
                "plugin/python/pdm_pd/factory.py": factory("lib"),
                "lib/pyproject.toml": project("lib", PDM),
                "lib/src/lib/__init__.py": LIB,
            },
            "plugin",
            ("plugin", "lib"),
        ),
        Layout(
            "hatch-root-uri-reference",
            {
                "plugin/pyproject.toml": project(
                    "hatch-uri",
                    HATCH,
                    deps=("lib @ {root:parent:uri}/lib",),
                    extra="[tool.hatch.metadata]\nallow-direct-references = true\n",
                ),
                "plugin/src/hatch_uri/__init__.py": "",
                "plugin/src/hatch_uri/factory.py": factory("lib"),
                "lib/pyproject.toml": project("lib", HATCH),
                "lib/src/lib/__init__.py": LIB,
            },
            "plugin",
            ("plugin", "lib"),
        ),
    ]
    return layouts


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in _layouts()}
