"""Fixtures of the loader tests: real wheels built once per session, generations."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controllerbus.loader.generation import Generation, apply_install, plan_install
from controllerbus.loader.purge import purge_generation
from controllerbus.loader.verify import verify_wheel

from .wheelkit import HELLO_PROJECT, build_wheel


@pytest.fixture(scope="session")
def hello_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The loader-hello plugin wheel, built once with hatchling in-process."""
    return build_wheel(HELLO_PROJECT, tmp_path_factory.mktemp("dist"))


@pytest.fixture
def wheel_copy(hello_wheel: Path, tmp_path: Path) -> Path:
    """A private copy of the hello wheel in ``tmp_path/in`` that a test may change."""
    target = tmp_path / "in" / hello_wheel.name
    target.parent.mkdir()
    shutil.copyfile(hello_wheel, target)
    return target


@pytest.fixture(scope="session")
def session_generation(tmp_path_factory: pytest.TempPathFactory, hello_wheel: Path) -> Generation:
    """One installed generation of the hello wheel, shared by read-only tests."""
    state = tmp_path_factory.mktemp("state")
    return apply_install(plan_install(state, verify_wheel(hello_wheel)))


@pytest.fixture
def active_generation(session_generation: Generation) -> Iterator[Generation]:
    """The session generation on ``sys.path``; purged again after the test."""
    sys.path.insert(0, str(session_generation.site_packages))
    try:
        yield session_generation
    finally:
        purge_generation(session_generation.path)
