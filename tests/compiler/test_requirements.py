"""Requirement merging and the satisfiability check (pure functions, tables + properties)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from controllerbus.compiler import ConflictingRequirements
from controllerbus.compiler.factories import module_name, parse_module
from controllerbus.compiler.requirements import Declared, merge_requirements, satisfiable


def merge(*specs: str) -> tuple[str, ...]:
    return merge_requirements(Declared(Requirement(s)) for s in specs)


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        (["a"], ["a"]),
        (["A_b>=1", "a-B<2"], ["a-b<2,>=1"]),
        (["a>=1", "a>=1"], ["a>=1"]),
        (["a[y]", "a[x]>=1"], ["a[x,y]>=1"]),
        (
            ["a>=1", "a<3; python_version < '3.12'"],
            ["a>=1", 'a<3; python_version < "3.12"'],
        ),
        (["b", "a"], ["a", "b"]),
        (
            ["a @ https://x.invalid/a.whl", "a @ https://x.invalid/a.whl"],
            ["a@ https://x.invalid/a.whl"],
        ),
        (
            ["a @ https://x.invalid/a.whl ; os_name == 'posix'"],
            ['a@ https://x.invalid/a.whl ; os_name == "posix"'],
        ),
    ],
)
def test_merge(specs: list[str], expected: list[str]) -> None:
    assert list(merge(*specs)) == [str(Requirement(e)) for e in expected]


@pytest.mark.parametrize(
    "specs",
    [
        ["a>=2", "a<1"],
        ["a==1.0", "a==2.0"],
        ["a~=1.4", "a>=2"],
        ["a>1,<1"],
        ["a==1.*", "a>=2"],
        ["a @ https://x.invalid/1.whl", "a @ https://x.invalid/2.whl"],
        ["a===foo", "a===bar"],
        ["a>=2", "a<1; os_name == 'posix'"],
    ],
)
def test_merge_conflicts(specs: list[str]) -> None:
    with pytest.raises(ConflictingRequirements):
        merge(*specs)


def test_conflict_message_names_every_declaration(tmp_path: Path) -> None:
    declared = [
        Declared(Requirement("a>=2"), tmp_path / "one" / "pyproject.toml", 7),
        Declared(Requirement("a<1"), tmp_path / "two" / "pyproject.toml", None),
    ]
    with pytest.raises(ConflictingRequirements) as info:
        merge_requirements(declared)
    message = str(info.value)
    assert f"a>=2 in {tmp_path / 'one' / 'pyproject.toml'}:7" in message
    assert f"a<1 in {tmp_path / 'two' / 'pyproject.toml'}" in message
    assert info.value.line == 7


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", True),
        (">=1,<2", True),
        (">1.0,<1.1", True),
        (">1.9.9,<2.0", True),
        (">=2.0b1,<2.0rc1", True),
        (">=2.0b1,<2.0", False),  # PEP 440: <2.0 excludes 2.0 pre-releases
        ("~=1.4.5,!=1.4.5", True),
        ("==1.*,!=1.0", True),
        ("<1.0", True),
        ("!=1.0", True),
        ("===weird", True),
        (">=1,<1", False),
        ("==1,==2", False),
        (">2,<=2", False),
        ("~=2.2,<2.2", False),
    ],
)
def test_satisfiable(spec: str, expected: bool) -> None:
    assert satisfiable(SpecifierSet(spec)) is expected


_NAMES = st.sampled_from(["alpha", "Alpha", "beta_x", "beta-x", "gamma"])
_SPECS = st.sampled_from(["", ">=1", "<5", "!=2", ">=1.5", "[e1]", "[e2]>=1"])
_MARKERS = st.sampled_from(["", "; python_version >= '3.11'", "; os_name == 'posix'"])


@given(
    st.lists(st.tuples(_NAMES, _SPECS, _MARKERS).map("".join), min_size=1, max_size=8),
    st.randoms(),
)
def test_merge_is_independent_of_declaration_order(specs: list[str], rnd: object) -> None:
    shuffled = list(specs)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]  # st.randoms() gives random.Random
    assert merge(*specs) == merge(*shuffled)


@given(st.lists(st.tuples(_NAMES, _SPECS, _MARKERS).map("".join), min_size=1, max_size=8))
def test_merged_lines_accept_what_every_declaration_accepts(specs: list[str]) -> None:
    merged = {
        Requirement(line).name: Requirement(line) for line in merge(*specs) if ";" not in line
    }
    for spec in specs:
        req = Requirement(spec)
        if req.marker is None:
            line = merged[req.name.lower().replace("_", "-")]
            assert set(req.extras) <= line.extras
            assert set(req.specifier) <= set(line.specifier)


# --- module names and parsing (pure helpers of the factory scan) -------------------


@pytest.mark.parametrize(
    ("dest", "expected"),
    [
        ("pkg/__init__.py", "pkg"),
        ("pkg/sub/mod.py", "pkg.sub.mod"),
        ("mod.py", "mod"),
        ("pkg/data.json", None),
        ("pkg/not-a-name.py", None),
        ("pkg/sub-dir/mod.py", None),
    ],
)
def test_module_name(dest: str, expected: str | None) -> None:
    assert module_name(dest) == expected


def test_parse_module_bindings_and_cache(tmp_path: Path) -> None:
    source = b"import os.path\nfrom x import y as z\nA: int = 1\nclass K: ...\ndef f(): ...\n"
    parsed = parse_module(source, "digest-1", tmp_path / "m.py")
    assert parsed.functions == {"f": 5}
    assert parsed.names == {"os": 1, "z": 2, "A": 3, "K": 4, "f": 5}
    # Same digest, different bytes: the cached result wins (the digest is the key).
    assert parse_module(b"", "digest-1", tmp_path / "m.py") is parsed


def test_parse_module_reports_errors_without_raising(tmp_path: Path) -> None:
    assert parse_module(b"def (:\n", "d2", tmp_path / "m.py").error == (1, "invalid syntax")
    assert parse_module(b"a\x00b", "d3", tmp_path / "m.py").error is not None
    # An invalid escape only warns; with warnings as errors it must still parse.
    assert parse_module(b'x = "\\d"\n', "d4", tmp_path / "m.py").error is None
