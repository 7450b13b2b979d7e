"""Analysis: the dependency walk, package discovery, factories, and every analysis error.

Each error case builds a real project tree in ``tmp_path`` and checks the file, the
line where we can know it, and the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controllerbus.compiler import (
    AnalysisError,
    ConflictingPaths,
    ConflictingRequirements,
    DependencyCycle,
    DuplicatePackage,
    InvalidProject,
    Issue,
    MissingPath,
    NoFactories,
    SourceSyntaxError,
    analyse,
)
from controllerbus.errors import CompileError

from .conftest import make_project, pyproject, write_tree


def dests(root: Path) -> list[str]:
    return [str(f.dest) for f in analyse([root]).files]


# --- the sample graph --------------------------------------------------------------


def test_sample_graph_vendors_path_dependencies_and_declares_the_rest(samples: Path) -> None:
    graph = analyse([samples])
    assert [p.name for p in graph.projects] == [
        "compiler-hello",
        "compiler-greeting",
        "compiler-util",
    ]
    assert [str(f.dest) for f in graph.files] == [
        "compiler_greeting/__init__.py",
        "compiler_hello/__init__.py",
        "compiler_hello/data/greeting.txt",
        "compiler_hello/echo.py",
        "compiler_hello/hello.py",
        "compiler_util.py",
    ]
    # Third-party requirements merged (specifiers intersected, marker kept on its own
    # line); the path dependencies are not requirements; controllerbus stays one.
    assert graph.requires == (
        'cbus-test-extra>=0.5; python_version >= "3.11"',
        "cbus-test-thirdparty<3,>=1.0",
        "controllerbus",
    )
    assert graph.requires_python == ">=3.11"
    assert [str(f) for f in graph.factories] == [
        "compiler_hello.echo:new_factory",
        "compiler_hello.hello:new_factory",
    ]
    assert graph.edges == {
        "compiler-hello": ("compiler-greeting",),
        "compiler-greeting": ("compiler-util",),
        "compiler-util": (),
    }


def test_watched_paths_are_exactly_the_graphs_files(samples: Path) -> None:
    graph = analyse([samples])
    root = samples.parent
    assert sorted(p.relative_to(root).as_posix() for p in graph.watched_paths) == [
        "compiler-greeting/pyproject.toml",
        "compiler-greeting/src/compiler_greeting/__init__.py",
        "compiler-hello/pyproject.toml",
        "compiler-hello/src/compiler_hello/__init__.py",
        "compiler-hello/src/compiler_hello/data/greeting.txt",
        "compiler-hello/src/compiler_hello/echo.py",
        "compiler-hello/src/compiler_hello/hello.py",
        "compiler-util/compiler_util.py",
        "compiler-util/pyproject.toml",
    ]
    assert sorted(p.relative_to(root).as_posix() for p in graph.watch_roots) == [
        "compiler-greeting/pyproject.toml",
        "compiler-greeting/src/compiler_greeting",
        "compiler-hello/pyproject.toml",
        "compiler-hello/src/compiler_hello",
        "compiler-util/compiler_util.py",
        "compiler-util/pyproject.toml",
    ]


# --- path sources ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dependency", "extra"),
    [
        pytest.param("lib", '[tool.uv.sources]\nlib = { path = "../lib" }\n', id="uv-sources"),
        pytest.param("lib @ file:../lib", "", id="file-url-relative"),
        pytest.param("lib @ {root:parent:uri}/lib", "", id="hatch-root-uri"),
        pytest.param("lib", '[tool.cbus.replace]\nlib = "../lib"\n', id="cbus-replace"),
    ],
)
def test_each_kind_of_path_source_is_vendored(tmp_path: Path, dependency: str, extra: str) -> None:
    make_project(tmp_path / "lib", "lib", factory=False)
    target = make_project(tmp_path / "app", "app", dependencies=[dependency], extra=extra)
    graph = analyse([target])
    assert [p.name for p in graph.projects] == ["app", "lib"]
    assert "lib/__init__.py" in [str(f.dest) for f in graph.files]
    assert graph.requires == ("controllerbus",)


def test_absolute_file_url(tmp_path: Path) -> None:
    lib = make_project(tmp_path / "lib", "lib", factory=False)
    target = make_project(tmp_path / "app", "app", dependencies=[f"lib @ {lib.as_uri()}"])
    assert [p.name for p in analyse([target]).projects] == ["app", "lib"]


def test_target_replace_applies_graph_wide(tmp_path: Path) -> None:
    # mid requires "leaf" by name only; the target's replace makes it first-party.
    make_project(tmp_path / "leaf", "leaf", factory=False)
    make_project(tmp_path / "mid", "mid", factory=False, dependencies=["leaf>=0.1"])
    target = make_project(
        tmp_path / "app",
        "app",
        dependencies=["mid"],
        extra='[tool.cbus.replace]\nmid = "../mid"\nleaf = "../leaf"\n',
    )
    graph = analyse([target])
    assert [p.name for p in graph.projects] == ["app", "mid", "leaf"]
    assert graph.requires == ("controllerbus",)


def test_non_target_replace_applies_to_its_own_project_only(tmp_path: Path) -> None:
    make_project(tmp_path / "leaf", "leaf", factory=False)
    make_project(
        tmp_path / "mid",
        "mid",
        factory=False,
        dependencies=["leaf"],
        extra='[tool.cbus.replace]\nleaf = "../leaf"\n',
    )
    target = make_project(tmp_path / "app", "app", dependencies=["mid @ file:../mid", "leaf>=0.1"])
    graph = analyse([target])
    # app's own "leaf>=0.1" is served by the vendored copy mid brought in.
    assert [p.name for p in graph.projects] == ["app", "mid", "leaf"]
    assert graph.requires == ("controllerbus",)


def test_controllerbus_is_never_vendored(tmp_path: Path) -> None:
    make_project(tmp_path / "controllerbus", "controllerbus", factory=False)
    target = make_project(
        tmp_path / "app",
        "app",
        dependencies=["controllerbus>=0.1"],
        extra='[tool.uv.sources]\ncontrollerbus = { path = "../controllerbus" }\n',
    )
    graph = analyse([target])
    assert [p.name for p in graph.projects] == ["app"]
    assert graph.requires == ("controllerbus>=0.1",)


def test_controllerbus_by_file_url_becomes_a_plain_requirement(tmp_path: Path) -> None:
    target = make_project(
        tmp_path / "app", "app", dependencies=["controllerbus @ file:../controllerbus"]
    )
    assert analyse([target]).requires == ("controllerbus",)


def test_extras_of_a_path_dependency_are_followed(tmp_path: Path) -> None:
    make_project(tmp_path / "fast", "fast", factory=False)
    make_project(
        tmp_path / "lib",
        "lib",
        factory=False,
        extra="""
        [project.optional-dependencies]
        speed = ["fast @ file:../fast", "numpyish>=1"]
        all = ["lib[speed]"]
        """,
    )
    target = make_project(tmp_path / "app", "app", dependencies=["lib[all] @ file:../lib"])
    graph = analyse([target])
    assert [p.name for p in graph.projects] == ["app", "lib", "fast"]
    assert graph.requires == ("controllerbus", "numpyish>=1")


def test_two_targets_share_dependencies(tmp_path: Path) -> None:
    make_project(tmp_path / "lib", "lib", factory=False)
    one = make_project(tmp_path / "one", "one", dependencies=["lib @ file:../lib"])
    two = make_project(tmp_path / "two", "two", dependencies=["lib @ file:../lib"])
    graph = analyse([one, two, one])
    assert [p.name for p in graph.targets] == ["one", "two"]
    assert [p.name for p in graph.projects] == ["one", "lib", "two"]
    assert [str(f) for f in graph.factories] == [
        "one.factory:new_factory",
        "two.factory:new_factory",
    ]


# --- package discovery -------------------------------------------------------------


def test_flat_layout_package(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "p",
        {
            "pyproject.toml": pyproject("flat-pkg"),
            "flat_pkg/__init__.py": "def new_factory(bus):\n    return bus\n",
            "tests/test_x.py": "",
            "setup.py": "",
        },
    )
    assert dests(root) == ["flat_pkg/__init__.py"]


def test_explicit_cbus_packages(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "p",
        {
            "pyproject.toml": pyproject(
                "p", extra='[tool.cbus]\npackages = ["lib/one", "two.py"]\n'
            ),
            "lib/one/__init__.py": "def new_factory(bus):\n    return bus\n",
            "two.py": "",
            "three.py": "",
        },
    )
    assert dests(root) == ["one/__init__.py", "two.py"]


def test_hatch_wheel_packages(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "p",
        {
            "pyproject.toml": pyproject(
                "p", extra='[tool.hatch.build.targets.wheel]\npackages = ["code/pkg"]\n'
            ),
            "code/pkg/__init__.py": "def new_factory(bus):\n    return bus\n",
        },
    )
    assert dests(root) == ["pkg/__init__.py"]


def test_vendored_file_selection_skips_caches_and_hidden_files(tmp_path: Path) -> None:
    root = make_project(
        tmp_path / "p",
        "p",
        files={
            "src/p/__pycache__/x.cpython-311.pyc": "",
            "src/p/stale.pyc": "",
            "src/p/.hidden": "",
            "src/p/.cache/x.py": "",
            "src/p/sub/mod.py": "",
            "src/p/sub/data.json": "{}",
            "src/ns/portion/mod.py": "",  # PEP 420 namespace package in src/
            "src/p.egg-info/PKG-INFO": "",
        },
    )
    assert dests(root) == [
        "ns/portion/mod.py",
        "p/__init__.py",
        "p/factory.py",
        "p/sub/data.json",
        "p/sub/mod.py",
    ]


def test_namespace_portions_of_two_projects_merge(tmp_path: Path) -> None:
    make_project(tmp_path / "lib", "lib", factory=False, files={"src/acme/lib/__init__.py": ""})
    target = make_project(
        tmp_path / "app",
        "app",
        dependencies=["lib @ file:../lib"],
        files={"src/acme/app/__init__.py": ""},
    )
    assert [d for d in dests(target) if d.startswith("acme/")] == [
        "acme/app/__init__.py",
        "acme/lib/__init__.py",
    ]


# --- factories ---------------------------------------------------------------------


def test_only_module_level_definitions_count(tmp_path: Path) -> None:
    root = make_project(
        tmp_path / "p",
        "p",
        factory=False,
        files={
            "src/p/__init__.py": "from p.real import new_factory\n",  # re-export: no
            "src/p/real.py": "def new_factory(bus):\n    return bus\n",
            "src/p/nested.py": "class C:\n    def new_factory(self, bus):\n        pass\n",
            "src/p/aio.py": "async def new_factory(bus):\n    pass\n",
            "src/p/assigned.py": "new_factory = print\n",
        },
    )
    assert [str(f) for f in analyse([root]).factories] == ["p.real:new_factory"]


def test_explicit_factories_replace_the_scan(tmp_path: Path) -> None:
    root = make_project(
        tmp_path / "p",
        "p",
        extra='[tool.cbus]\nfactories = ["p.custom:make", "p:FACTORY"]\n',
        files={
            "src/p/__init__.py": "FACTORY = print\n",
            "src/p/custom.py": "def make(bus):\n    return bus\n",
        },
    )
    graph = analyse([root])
    assert [str(f) for f in graph.factories] == ["p:FACTORY", "p.custom:make"]  # sorted
    assert graph.factories[0].line == 1


def test_dependencies_are_not_scanned_for_factories(tmp_path: Path) -> None:
    make_project(tmp_path / "lib", "lib")  # has a new_factory, but is a library here
    target = make_project(tmp_path / "app", "app", dependencies=["lib @ file:../lib"])
    assert [str(f) for f in analyse([target]).factories] == ["app.factory:new_factory"]


# --- every analysis error ----------------------------------------------------------


def test_error_missing_path_dependency(tmp_path: Path) -> None:
    target = make_project(
        tmp_path / "app",
        "app",
        dependencies=["lib", "other @ file:../nowhere"],
        extra='[tool.uv.sources]\nlib = { path = "../lib" }\n',
    )
    with pytest.raises(MissingPath) as info:
        analyse([target])
    issues = info.value.issues
    assert len(issues) == 2  # both reported at once
    assert {i.path for i in issues} == {target / "pyproject.toml"}
    text = (target / "pyproject.toml").read_text().splitlines()
    for issue in issues:
        assert issue.line is not None
        assert ("../lib" in text[issue.line - 1]) or ("nowhere" in text[issue.line - 1])
    assert "does not exist" in str(info.value)
    assert str(tmp_path / "lib") in str(info.value)


def test_error_path_dependency_without_pyproject(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    target = make_project(tmp_path / "app", "app", dependencies=["lib @ file:../lib"])
    with pytest.raises(MissingPath, match=r"has no pyproject\.toml"):
        analyse([target])


def test_error_missing_target(tmp_path: Path) -> None:
    with pytest.raises(MissingPath) as info:
        analyse([tmp_path / "absent"])
    assert info.value.path == tmp_path / "absent"
    assert isinstance(info.value, CompileError)


def test_error_dependency_cycle(tmp_path: Path) -> None:
    make_project(tmp_path / "b", "b", factory=False, dependencies=["c @ file:../c"])
    make_project(tmp_path / "c", "c", factory=False, dependencies=["b @ file:../b"])
    target = make_project(tmp_path / "a", "a", dependencies=["b @ file:../b"])
    with pytest.raises(DependencyCycle) as info:
        analyse([target])
    message = str(info.value)
    assert "cycle" in message
    assert "b (" in message
    assert "c (" in message
    assert info.value.path == tmp_path / "c" / "pyproject.toml"
    assert info.value.line == 5  # the requirement line naming b


def test_error_two_projects_ship_the_same_top_level_package(tmp_path: Path) -> None:
    make_project(tmp_path / "lib", "lib", factory=False, files={"src/common/__init__.py": ""})
    target = make_project(
        tmp_path / "app",
        "app",
        dependencies=["lib @ file:../lib"],
        files={"src/common/__init__.py": ""},
    )
    with pytest.raises(DuplicatePackage) as info:
        analyse([target])
    assert info.value.path == tmp_path / "lib" / "pyproject.toml"
    assert "'common'" in str(info.value)
    assert str(tmp_path / "app" / "src" / "common") in str(info.value)


def test_error_namespace_portions_with_the_same_file(tmp_path: Path) -> None:
    make_project(tmp_path / "lib", "lib", factory=False, files={"src/acme/x.py": ""})
    target = make_project(
        tmp_path / "app", "app", dependencies=["lib @ file:../lib"], files={"src/acme/x.py": ""}
    )
    with pytest.raises(DuplicatePackage, match=r"acme/x\.py is also provided by app"):
        analyse([target])


def test_error_conflicting_requirement_specifiers(tmp_path: Path) -> None:
    make_project(tmp_path / "lib", "lib", factory=False, dependencies=["requests<2"])
    target = make_project(
        tmp_path / "app", "app", dependencies=["lib @ file:../lib", "Requests>=2.30"]
    )
    with pytest.raises(ConflictingRequirements) as info:
        analyse([target])
    message = str(info.value)
    assert "no version of requests satisfies" in message
    assert str(tmp_path / "app" / "pyproject.toml") in message
    assert str(tmp_path / "lib" / "pyproject.toml") in message


def test_error_conflict_between_marked_and_unmarked_requirements(tmp_path: Path) -> None:
    target = make_project(
        tmp_path / "app", "app", dependencies=["foo>=2", "foo<1; sys_platform == 'linux'"]
    )
    with pytest.raises(ConflictingRequirements, match="no version of foo"):
        analyse([target])


def test_error_requirement_not_met_by_the_vendored_project(tmp_path: Path) -> None:
    make_project(tmp_path / "lib", "lib", factory=False)  # version 0.1.0
    target = make_project(
        tmp_path / "app",
        "app",
        dependencies=["lib>=2"],
        extra='[tool.uv.sources]\nlib = { path = "../lib" }\n',
    )
    with pytest.raises(ConflictingRequirements, match=r"lib>=2 is not satisfied by the vendored"):
        analyse([target])


def test_error_requires_python_leaves_nothing(tmp_path: Path) -> None:
    target = make_project(tmp_path / "app", "app", extra="")
    path = target / "pyproject.toml"
    path.write_text(
        path.read_text().replace("[project]\n", '[project]\nrequires-python = "<3.9"\n')
    )
    with pytest.raises(ConflictingRequirements, match="requires-python"):
        analyse([target])


def test_error_same_name_at_two_paths(tmp_path: Path) -> None:
    make_project(tmp_path / "lib1", "lib", factory=False)
    make_project(tmp_path / "lib2", "lib", factory=False)
    make_project(tmp_path / "mid", "mid", factory=False, dependencies=["lib @ file:../lib2"])
    target = make_project(
        tmp_path / "app", "app", dependencies=["lib @ file:../lib1", "mid @ file:../mid"]
    )
    with pytest.raises(ConflictingPaths) as info:
        analyse([target])
    assert info.value.path == tmp_path / "mid" / "pyproject.toml"
    assert str(tmp_path / "lib1") in str(info.value)


def test_error_no_factories(tmp_path: Path) -> None:
    target = make_project(tmp_path / "app", "app", factory=False)
    with pytest.raises(NoFactories) as info:
        analyse([target])
    assert info.value.path == target / "pyproject.toml"
    assert "def new_factory(bus)" in str(info.value)
    assert "[tool.cbus] factories" in str(info.value)


def test_error_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    target = make_project(
        tmp_path / "app",
        "app",
        files={
            "src/app/bad.py": "x = 1\n\ndef broken(:\n    pass\n",
            "src/app/worse.py": "x = 1\ny = 2\nz = 3\nclass\n",
        },
    )
    with pytest.raises(SourceSyntaxError) as info:
        analyse([target])
    located = {(i.path, i.line) for i in info.value.issues}
    assert located == {
        (target / "src/app/bad.py", 3),
        (target / "src/app/worse.py", 4),
    }
    assert f"{target / 'src/app/bad.py'}:3: syntax error" in str(info.value)


def test_error_syntax_error_in_a_dependency(tmp_path: Path) -> None:
    make_project(tmp_path / "lib", "lib", factory=False, files={"src/lib/x.py": "def (\n"})
    target = make_project(tmp_path / "app", "app", dependencies=["lib @ file:../lib"])
    with pytest.raises(SourceSyntaxError) as info:
        analyse([target])
    assert (info.value.path, info.value.line) == (tmp_path / "lib/src/lib/x.py", 1)


@pytest.mark.parametrize(
    ("text", "match", "line"),
    [
        ("[project\nname = 'x'\n", "invalid TOML", 1),
        ("[tool.other]\n", r"no \[project\] table", None),
        ('[project]\nversion = "1"\n', "has no name", None),
        ('[project]\nname = "x"\nversion = "not a version"\n', "invalid version", 3),
        (
            '[project]\nname = "x"\nversion = "1"\ndependencies = ["x y z"]\n',
            "invalid requirement",
            4,
        ),
        (
            '[project]\nname = "x"\nversion = "1"\ndynamic = ["dependencies"]\n',
            "dynamic dependencies",
            4,
        ),
        (
            '[project]\nname = "x"\nversion = "1"\n[tool.uv.sources]\nlib = { workspace = true }\n',
            "in no uv workspace",
            5,
        ),
    ],
)
def test_error_invalid_project(tmp_path: Path, text: str, match: str, line: int | None) -> None:
    write_tree(tmp_path / "x", {"pyproject.toml": text, "x/__init__.py": ""})
    with pytest.raises(InvalidProject, match=match) as info:
        analyse([tmp_path / "x"])
    assert info.value.path == tmp_path / "x" / "pyproject.toml"
    assert info.value.line == line


def test_error_no_packages_found(tmp_path: Path) -> None:
    write_tree(tmp_path / "x", {"pyproject.toml": pyproject("x"), "other/__init__.py": ""})
    with pytest.raises(InvalidProject, match=r"cannot find the packages .* \[tool.cbus\] packages"):
        analyse([tmp_path / "x"])


def test_error_explicit_factory_that_does_not_exist(tmp_path: Path) -> None:
    target = make_project(
        tmp_path / "app",
        "app",
        extra='[tool.cbus]\nfactories = ["app.factory:missing", "nope:f", "bad-entry"]\n',
    )
    with pytest.raises(InvalidProject) as info:
        analyse([target])
    reasons = [i.reason for i in info.value.issues]
    assert len(reasons) == 3
    assert "defines no top-level missing" in reasons[0]
    assert "module nope is not in any vendored package" in reasons[1]
    assert "is not of the form" in reasons[2]
    assert all(i.line == 8 for i in info.value.issues)  # the factories = [...] line


def test_error_dependency_name_mismatch(tmp_path: Path) -> None:
    make_project(tmp_path / "lib", "other-name", factory=False)
    target = make_project(tmp_path / "app", "app", dependencies=["lib @ file:../lib"])
    with pytest.raises(InvalidProject, match="named other-name"):
        analyse([target])


def test_error_vendoring_a_package_named_controllerbus(tmp_path: Path) -> None:
    target = make_project(tmp_path / "app", "app", files={"src/controllerbus/__init__.py": ""})
    with pytest.raises(DuplicatePackage, match="host owns"):
        analyse([target])


def test_analysis_errors_render_one_line_per_issue(tmp_path: Path) -> None:
    error = MissingPath([Issue(tmp_path / "a", 3, "first"), Issue(None, None, "second")])
    assert isinstance(error, AnalysisError)
    assert str(error).splitlines() == [
        "missing path (2 issues):",
        f"  - {tmp_path / 'a'}:3: first",
        "  - second",
    ]


def test_file_dest_paths_are_posix(tmp_path: Path) -> None:
    target = make_project(tmp_path / "app", "app", files={"src/app/a/b/c.py": ""})
    assert "app/a/b/c.py" in [f.dest for f in analyse([target]).files]
