"""Trial imports out of process: the forking server and the one-shot subprocess."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from controllerbus.loader.trial import (
    ForkTrialRunner,
    NoTrialRunner,
    SubprocessTrialRunner,
    TrialKind,
    TrialResult,
    TrialServer,
    trial_in_subprocess,
    trial_runner,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the trial server forks")


def _plugin(site: Path, name: str, body: str) -> str:
    package = site / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(body)
    return f"{name}={name}:PLUGIN"


GOOD = """
from controllerbus.example.boilerplate import new_factory
from controllerbus.plugin import StaticPlugin
PLUGIN = StaticPlugin("{name}", "1.0", lambda bus: [new_factory(bus)])
"""


async def test_server_answers_good_and_bad_plugins_and_keeps_its_state_clean(
    tmp_path: Path,
) -> None:
    server = TrialServer(tmp_path)
    try:
        site = tmp_path / "site"
        good = _plugin(site, "trial_good_pkg", GOOD.format(name="trial_good_pkg"))
        result = await server.trial(site, good)
        assert result == {
            "ok": True,
            "binary_id": "trial_good_pkg",
            "binary_version": "1.0",
            "factories": ["controllerbus/example/boilerplate/1"],
        }
        broken = _plugin(site, "trial_broken_pkg", "raise RuntimeError('import boom')\n")
        result = await server.trial(site, broken)
        assert result["ok"] is False
        assert "RuntimeError: import boom" in result["error"]
        assert "trial_broken_pkg/__init__.py:1" in result["error"]
        # A child that dies without answering is reported, and the server lives on.
        crash = _plugin(site, "trial_crash_pkg", "import os\nos._exit(3)\n")
        result = await server.trial(site, crash)
        assert result == {"ok": False, "error": "the trial import crashed (exit status 3)"}
        mismatch = _plugin(site, "trial_mismatch_pkg", GOOD.format(name="other-id"))
        result = await server.trial(site, mismatch)
        assert "binary_id is 'other-id'" in result["error"]
        # The plugin was imported in the children only, never here.
        assert "trial_good_pkg" not in sys.modules
    finally:
        await server.aclose()
    await server.aclose()  # idempotent


async def test_server_restarts_after_it_died(tmp_path: Path) -> None:
    server = TrialServer(tmp_path)
    try:
        site = tmp_path / "site"
        entry = _plugin(site, "trial_again_pkg", GOOD.format(name="trial_again_pkg"))
        assert (await server.trial(site, entry))["ok"]
        proc = server._proc
        assert proc is not None
        proc.kill()
        await proc.wait()
        assert (await server.trial(site, entry))["ok"]
    finally:
        await server.aclose()


async def test_one_shot_subprocess_reports_missing_module(tmp_path: Path) -> None:
    result = await trial_in_subprocess(Path(sys.executable), tmp_path, "x=no_such_module_xyz:P")
    assert result["ok"] is False
    assert "ModuleNotFoundError" in result["error"]


@pytest.mark.parametrize(
    ("kind", "runner"),
    [("fork", ForkTrialRunner), ("subprocess", SubprocessTrialRunner), ("none", NoTrialRunner)],
)
def test_trial_runner_builds_each_kind(tmp_path: Path, kind: TrialKind, runner: type) -> None:
    built = trial_runner(kind, tmp_path)
    assert isinstance(built, runner)
    assert built.kind == kind


def test_an_unknown_trial_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown trial kind 'inprocess'; expected one of fork"):
        trial_runner("inprocess", tmp_path)  # type: ignore[arg-type]


def test_trial_result_from_the_child_answer() -> None:
    assert TrialResult.from_json({"ok": True, "factories": ["a/1"]}) == TrialResult(
        True, factories=("a/1",)
    )
    assert TrialResult.from_json({"ok": False, "error": "boom"}) == TrialResult(False, "boom")


async def test_fork_runner_warms_up_in_the_background_and_closes(tmp_path: Path) -> None:
    runner = trial_runner("fork", tmp_path)
    runner.start()
    runner.start()  # idempotent
    try:
        site = tmp_path / "site"
        entry = _plugin(site, "cbt_runner_good", GOOD.format(name="cbt_runner_good"))
        name, _, value = entry.partition("=")
        generation = SimpleNamespace(site_packages=site)
        result = await runner.trial(generation, name, value)  # type: ignore[arg-type]
        assert result.ok, result.error
        assert result.factories == ("controllerbus/example/boilerplate/1",)
    finally:
        await runner.aclose()
