"""The loader's fast install path: publish first, bytecode and fsync after the switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from controllerbus.loader.generation import (
    DURABLE_MARKER,
    apply_install,
    finish_install,
    plan_install,
)
from controllerbus.loader.verify import verify_wheel
from tests.loader.pluginkit import write_projects


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fastinstall")
    return write_projects(root, "hotfast").compile(root / "out").wheel


def test_deferred_install_serves_first_and_is_durable_after_finish(
    wheel: Path, tmp_path: Path
) -> None:
    plan = plan_install(tmp_path, verify_wheel(wheel), defer_finish=True)
    generation = apply_install(plan)
    package = generation.site_packages / "hotfast_plugin"
    assert (package / "greeter.py").is_file()  # complete: every file is in place
    assert not list(generation.site_packages.rglob("*.pyc"))
    assert not (generation.path / DURABLE_MARKER).exists()

    assert finish_install(plan)
    assert list((package / "__pycache__").glob("greeter.*.pyc"))
    assert (generation.path / DURABLE_MARKER).is_file()
    # Durable: the next install of the same wheel reuses it.
    assert apply_install(plan_install(tmp_path, verify_wheel(wheel), defer_finish=True)).reused


def test_a_generation_never_synced_is_replaced_not_reused(
    wheel: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # As after a power loss between the switch and finish_install.
    plan = plan_install(tmp_path, verify_wheel(wheel), defer_finish=True)
    apply_install(plan)
    again = apply_install(plan_install(tmp_path, verify_wheel(wheel)))
    assert not again.reused
    assert (again.path / DURABLE_MARKER).is_file()  # the synchronous path marks it at once
    assert any(DURABLE_MARKER in r.getMessage() for r in caplog.records)


def test_finish_skips_a_generation_removed_meanwhile(wheel: Path, tmp_path: Path) -> None:
    plan = plan_install(tmp_path, verify_wheel(wheel), defer_finish=True)
    assert not finish_install(plan)  # never installed: nothing to finish, no error
