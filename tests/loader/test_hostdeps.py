"""check_host_requirements: the host serves a plugin's requirements, or one clear error."""

from __future__ import annotations

import importlib.metadata
import json
import sys
import types
from pathlib import Path

import pytest
from packaging.utils import NormalizedName, canonicalize_name

from controllerbus.loader import (
    HostDependencyError,
    HostDistribution,
    check_host_requirements,
    host_distributions,
    verify_wheel,
)
from controllerbus.loader.generation import Generation

CLICK = importlib.metadata.version("click")


def _host(*dists: tuple[str, str, tuple[str, ...]]) -> dict[NormalizedName, HostDistribution]:
    return {
        canonicalize_name(name): HostDistribution(canonicalize_name(name), version, requires)
        for name, version, requires in dists
    }


def test_satisfied_by_host() -> None:
    report = check_host_requirements(["click>=8", "packaging"])
    assert report.satisfied == (
        ("click>=8", CLICK),
        ("packaging", importlib.metadata.version("packaging")),
    )
    assert report.skipped == ()


def test_missing_distribution() -> None:
    with pytest.raises(HostDependencyError) as caught:
        check_host_requirements(["nonexistent-dist-xyz>=1"], plugin="demo.whl")
    error = caught.value
    assert error.conflicting == ()
    (issue,) = error.missing
    assert "plugin demo.whl requires 'nonexistent-dist-xyz>=1'" in issue
    assert "the host has no nonexistent-dist-xyz installed" in issue
    assert "previous generation" in str(error)


def test_conflicting_version_names_host_version() -> None:
    with pytest.raises(HostDependencyError) as caught:
        check_host_requirements(["click<1"], plugin="demo")
    (issue,) = caught.value.conflicting
    assert issue == (
        f"plugin demo requires 'click<1' but the host has click {CLICK}; rebuild the plugin "
        "against the host's version or upgrade the host"
    )


def test_every_problem_in_one_error() -> None:
    with pytest.raises(HostDependencyError) as caught:
        check_host_requirements(["click<1", "nonexistent-dist-xyz", "click>=8", "not a req!"])
    error = caught.value
    assert len(error.conflicting) == 1
    assert len(error.missing) == 2  # the absent dist and the unparsable line
    assert any("invalid requirement 'not a req!'" in issue for issue in error.missing)
    assert len(error.issues) == 3


@pytest.mark.parametrize(
    "line",
    [
        "foo; python_version < '3'",
        "foo; extra == 'dev'",  # the plugin's own extras are not installed
        "foo; sys_platform == 'nonexistent-os'",
    ],
)
def test_marker_not_applicable_is_skipped(line: str) -> None:
    assert check_host_requirements([line]).skipped == (line,)


def test_environment_override_applies_markers() -> None:
    line = "nonexistent-dist-xyz; sys_platform == 'win32'"
    assert check_host_requirements([line]).skipped == (line,)
    with pytest.raises(HostDependencyError):
        check_host_requirements([line], environment={"sys_platform": "win32"})


def test_prerelease_on_host_satisfies() -> None:
    installed = _host(("pre", "2.0rc1", ()))
    report = check_host_requirements(["pre>=1"], installed=installed)
    assert report.satisfied == (("pre>=1", "2.0rc1"),)


def test_extra_requirements_are_checked() -> None:
    installed = _host(
        ("pkg", "1.0", ("dep>=2; extra == 'fast'", "other; extra == 'slow'", "base")),
        ("dep", "1.5", ()),
    )
    with pytest.raises(HostDependencyError) as caught:
        check_host_requirements(["pkg[fast]"], plugin="demo", installed=installed)
    assert caught.value.missing == ()
    (issue,) = caught.value.conflicting
    assert "plugin demo (via pkg[fast]) requires 'dep>=2' but the host has dep 1.5" in issue
    assert check_host_requirements(["pkg"], installed=installed).satisfied == (("pkg", "1.0"),)


def test_host_distributions_canonical_names() -> None:
    dists = host_distributions()
    assert dists[canonicalize_name("click")].version == CLICK
    assert canonicalize_name("PyYAML") in dists  # canonicalised from "PyYAML"


def test_shadowed_first_party_package() -> None:
    with pytest.raises(HostDependencyError) as caught:
        check_host_requirements([], plugin="demo", first_party_packages=["json"])
    (issue,) = caught.value.shadowed
    assert "vendors top-level package 'json'" in issue
    assert f"imported 'json' from {json.__file__}" in issue


def test_module_from_the_generation_itself_is_not_shadowing(
    session_generation: Generation, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = types.ModuleType("cbus_loader_hello")
    fake.__file__ = str(session_generation.site_packages / "cbus_loader_hello" / "__init__.py")
    monkeypatch.setitem(sys.modules, "cbus_loader_hello", fake)
    report = check_host_requirements(
        [],
        first_party_packages=["cbus_loader_hello"],
        generation_path=session_generation.path,
    )
    assert report.notes == ()


def test_importable_but_not_imported_is_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cbus_note_mod.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    report = check_host_requirements([], plugin="demo", first_party_packages=["cbus_note_mod"])
    (note,) = report.notes
    assert "host can import 'cbus_note_mod'" in note
    assert "gets the plugin's copy" in note


def test_importable_copy_is_shadowing_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cbus_shadow_mod.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(HostDependencyError) as caught:
        check_host_requirements(
            [], plugin="demo", first_party_packages=["cbus_shadow_mod"], importable_shadows=True
        )
    (issue,) = caught.value.shadowed
    assert "vendors 'cbus_shadow_mod', but the host can already import it from" in issue
    assert str(tmp_path / "cbus_shadow_mod.py") in issue
    assert "rename the plugin's package or uninstall the host's copy" in issue
    # The generation being replaced is not the host: its copy is no shadow.
    report = check_host_requirements(
        [],
        first_party_packages=["cbus_shadow_mod"],
        generation_path=tmp_path,
        importable_shadows=True,
    )
    assert report.notes == ()


def test_real_wheel_requirements(hello_wheel: Path) -> None:
    verified = verify_wheel(hello_wheel)
    report = check_host_requirements(
        verified.requires_dist, plugin=verified.path.name, first_party_packages=verified.top_level
    )
    assert report.satisfied == (("click>=8", CLICK),)
    assert report.skipped == ("pytest-nonexistent-extra; python_version < '3'",)
