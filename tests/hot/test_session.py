"""The hot reloader in-process: real projects, real compiles, real file watches.

Each test writes its own plugin projects (unique package prefixes: loading a plugin
imports it into this process) and runs :func:`daemon_session` with ``hot`` targets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from controllerbus.bus.helpers import exec_one_off
from controllerbus.daemon import DaemonOptions, DaemonSession, daemon_session
from controllerbus.errors import ConfigError
from controllerbus.example.hello import Hello, HelloReply
from controllerbus.hot import BatchWatcher, HotTarget, ReloadEvent, WatchError
from tests.loader.pluginkit import PluginProjects, write_projects

pytestmark = pytest.mark.slow

COUNTING = """
    def snapshot(self) -> dict[str, int]:
        return {"n": self._n}

    def restore(self, state: dict[str, int]) -> None:
        RESTORE_BODY

    def _next(self) -> int:
        self._n = getattr(self, "_n", 0) + 1
        return self._n
"""


def make_counting(
    projects: PluginProjects, restore_body: str = 'self._n = int(state["n"])'
) -> Path:
    """Give the generated greeter a counter (the greeting's suffix) with snapshot/restore."""
    greeter = projects.target / "src" / projects.package / "greeter.py"
    text = greeter.read_text()
    text = text.replace(
        "    def get_controller_info(self)",
        COUNTING.replace("RESTORE_BODY", restore_body).lstrip("\n")
        + "\n    def get_controller_info(self)",
    )
    text = text.replace(
        "return [_HelloResolver(directive.name, self._config.punctuation)]",
        "return [_HelloResolver(directive.name, str(self._next()))]",
    )
    greeter.write_text(text)
    return greeter


class Events:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[ReloadEvent] = asyncio.Queue()

    def __call__(self, event: ReloadEvent) -> None:
        self.queue.put_nowait(event)

    async def next(self) -> ReloadEvent:
        async with asyncio.timeout(60):
            return await self.queue.get()


@asynccontextmanager
async def hot_session(
    tmp_path: Path, targets: list[PluginProjects], events: Events, config: str | None
) -> AsyncIterator[DaemonSession]:
    cfg = None
    if config is not None:
        cfg = tmp_path / "cbus.yaml"
        cfg.write_text(config)
    options = DaemonOptions(
        config_path=cfg,
        state_dir=tmp_path / "state",
        hot=tuple(HotTarget((p.target,)) for p in targets),
        on_reload=events,
    )
    async with daemon_session(options) as session:
        yield session


def greeter_config(projects: PluginProjects) -> str:
    return f"greeter:\n  id: {projects.config_id}\n  config: {{}}\n  revision: 1\n"


async def ask(session: DaemonSession) -> HelloReply:
    av, ref = await exec_one_off(session.bus, Hello("you"))
    ref.release()
    assert av is not None
    assert isinstance(av.value, HelloReply)
    return av.value


async def test_state_carried_and_a_failing_restore_rolls_back(tmp_path: Path) -> None:
    projects = write_projects(tmp_path, "hotstate")
    greeter = make_counting(projects)
    events = Events()
    async with hot_session(tmp_path, [projects], events, greeter_config(projects)) as session:
        assert (await events.next()).ok
        assert session.hot is not None
        assert (await ask(session)).text == "hello, you1"
        assert (await ask(session)).text == "hello, you2"

        projects.set_greeting("howdy")
        event = await events.next()
        assert event.ok, event.error
        assert event.carried == 1
        assert set(event.phases) >= {"debounce", "compile", "verify", "install", "activate"}
        assert (await ask(session)).text == "howdy, you3"

        # restore() raises: the load fails, the old generation serves with its state.
        good = greeter.read_text()
        greeter.write_text(good.replace('self._n = int(state["n"])', 'raise KeyError("nope")'))
        event = await events.next()
        assert not event.ok
        assert event.error is not None
        assert "failed to restore" in event.error
        assert f"{greeter.name}:" in event.error
        assert (await ask(session)).text == "howdy, you4"
        assert session.host is not None
        record = session.host.manifest.get(projects.binary_id) or session.host.manifest.get(
            "hotstate-plugin"
        )
        assert record is not None
        assert record.status == "active"
        assert record.error is not None
        assert "restore() of" in record.error
        assert all(r.clean for r in session.host.unload_reports)


async def test_only_the_changed_plugin_is_rebuilt_and_new_package_files_count(
    tmp_path: Path,
) -> None:
    first = write_projects(tmp_path / "a", "hotonea")
    second = write_projects(tmp_path / "b", "hotoneb")
    events = Events()
    async with hot_session(tmp_path, [first, second], events, None) as session:
        names = {(await events.next()).target, (await events.next()).target}
        assert names == {"hotonea-plugin", "hotoneb-plugin"}
        assert session.hot is not None
        watched = {str(p) for p in session.hot.watched}
        # Exactly the graph's files and package directories, not the project trees.
        assert str(first.target / "pyproject.toml") in watched
        assert str(first.target / "src" / first.package) in watched
        assert str(first.target) not in watched

        first.set_greeting("bonjour")
        event = await events.next()
        assert (event.target, event.ok) == ("hotonea-plugin", True)
        await asyncio.sleep(0.3)
        assert events.queue.empty()  # the other plugin was not rebuilt

        extra = second.target / "src" / second.package / "extra.py"
        extra.write_text("VALUE = 1\n")
        event = await events.next()
        assert event.target == "hotoneb-plugin"
        assert str(extra) in event.changed
        assert event.ok
        assert not event.unchanged  # the new module is in the new wheel


async def test_no_config_runs_without_config_set_controllers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    projects = write_projects(tmp_path, "hotnocfg")
    events = Events()
    caplog.set_level("INFO")
    async with hot_session(tmp_path, [projects], events, None) as session:
        assert (await events.next()).ok
        assert session.host is not None
        assert list(session.host.active()) == ["hotnocfg-plugin"]
    assert sum("no config set" in r.getMessage() for r in caplog.records) == 1


async def test_the_targets_own_config_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    projects = write_projects(tmp_path, "hotowncfg")
    (projects.target / "controllerbus_daemon.yaml").write_text(greeter_config(projects))
    events = Events()
    async with hot_session(tmp_path, [projects], events, None) as session:
        assert (await events.next()).ok
        assert (await ask(session)).text == "hello, you"


async def test_an_explicit_missing_config_is_an_error(tmp_path: Path) -> None:
    options = DaemonOptions(config_path=tmp_path / "nope.yaml", state_dir=tmp_path / "s")
    with pytest.raises(ConfigError, match="cannot find config"):
        async with daemon_session(options):
            pass


async def test_a_watch_that_cannot_be_set_up_is_loud(tmp_path: Path) -> None:
    watcher = BatchWatcher([tmp_path / "missing"], lambda paths: None)
    with pytest.raises(WatchError, match=r"cannot watch .*missing: no such file"):
        await watcher.start()


def test_hot_target_parse_and_names(tmp_path: Path) -> None:
    projects = write_projects(tmp_path, "hotnames")
    target = HotTarget.parse(f"{projects.target},{projects.library}")
    assert target.name == "hotnames-greeting+hotnames-plugin"
    assert target.slug == "hotnames-greeting-hotnames-plugin"
    with pytest.raises(ConfigError, match=r"no pyproject\.toml"):
        HotTarget.parse(str(tmp_path))
    assert json.dumps(target.name)
