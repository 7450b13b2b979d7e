"""The hostile-input corpus harness: a real daemon subprocess and a table of cases.

:class:`DaemonUnderTest` runs ``cbus daemon`` (through ``driver.py``, which adds a
control socket to ask the bus ``Hello``) on a plugins directory and a state
directory in ``tmp_path``, with a good plugin loaded and its greeter running. A
:class:`HostileCase` makes one hostile file; :func:`run_case` drops it into the
plugins directory and asserts what every refusal must show:

* the refusal is recorded in the manifest (the plugin's record, or ``wheel:<name>``
  for a file whose plugin is unknown) with its reason, and logged;
* the daemon is alive and answers ``Hello`` from the last good generation;
* nothing is left running: no process of the daemon's other than the trial server
  (processes are found by an environment marker, so a process that left the
  daemon's session is found too).

One daemon serves a whole test module (``daemon`` fixtures in the modules); the
case's file is removed again afterwards. :meth:`DaemonUnderTest.stop` asserts the
clean exit on SIGTERM.

Other test modules reuse this: build a :class:`GoodPlugin` once, start a
:class:`DaemonUnderTest`, and ``run_case`` their own cases.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..loader.pluginkit import PluginProjects, write_projects
from ..loader.wheelkit import dist_info_of, record_hash

__all__ = [
    "DaemonUnderTest",
    "GoodPlugin",
    "HostileCase",
    "build_good_plugin",
    "reversion",
    "run_case",
]

DRIVER = Path(__file__).with_name("driver.py")
MARKER_ENV = "CBUS_HOSTILE_RUN"
TRIAL_SERVER = "controllerbus.loader.trial_child --serve"


@dataclass(frozen=True, slots=True)
class GoodPlugin:
    """A compiled, loadable plugin: its wheel, identity and greeter."""

    projects: PluginProjects
    wheel: Path
    sha256: str
    version: str
    module: str

    @property
    def binary_id(self) -> str:
        return self.projects.binary_id

    @property
    def config_id(self) -> str:
        return self.projects.config_id

    @property
    def greeter_member(self) -> str:
        return self.projects.greeter_member

    def config_yaml(self) -> str:
        """A config set running the plugin's greeter (answers ``hello, NAME!``)."""
        return f'greeter:\n  id: {self.config_id}\n  config:\n    punctuation: "!"\n'


def build_good_plugin(root: Path, prefix: str) -> GoodPlugin:
    """Write and compile the test plugin under ``root`` (package names start with prefix)."""
    projects = write_projects(root / "projects", prefix)
    result = projects.compile(root / "dist")
    return GoodPlugin(projects, result.wheel, result.sha256, str(result.version), result.module)


def reversion(src: Path, dst_dir: Path, serial: int) -> Path:
    """Copy wheel ``src`` into ``dst_dir`` as a newer version (``.postN``), RECORD fixed.

    Each case gets its own version, so its wheel is the newest of the distribution
    and is tried as a replacement of the good one.
    """
    version = src.name.split("-")[1]
    public, plus, local = version.partition("+")
    new_version = f"{public}.post{serial}{plus}{local}"
    old_di = dist_info_of(src)
    new_di = old_di.replace(f"-{version}.dist-info", f"-{new_version}.dist-info")
    members: list[tuple[str, bytes, int]] = []
    with zipfile.ZipFile(src) as zf:
        for info in zf.infolist():
            data = zf.read(info)
            member = info.filename
            if member.startswith(old_di + "/"):
                member = new_di + member[len(old_di) :]
                if member.endswith("/METADATA"):
                    data = re.sub(
                        rb"^Version: .*$",
                        f"Version: {new_version}".encode(),
                        data,
                        count=1,
                        flags=re.MULTILINE,
                    )
            members.append((member, data, info.external_attr))
    record = f"{new_di}/RECORD"
    lines = [f"{n},{record_hash(d)},{len(d)}" for n, d, _a in members if n != record]
    lines.append(f"{record},,")
    members = [m for m in members if m[0] != record]
    members.append((record, ("\n".join(lines) + "\n").encode(), 0o100644 << 16))
    dst = dst_dir / src.name.replace(f"-{version}-", f"-{new_version}-")
    dst_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as out:
        for member, data, attr in members:
            info = zipfile.ZipInfo(member, date_time=(2020, 2, 2, 0, 0, 0))
            info.external_attr = attr
            info.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(info, data)
    return dst


# (good plugin, a loadable newer wheel of it, destination path) -> the hostile file.
Make = Callable[[GoodPlugin, Path, Path], Path]


@dataclass(frozen=True, slots=True)
class HostileCase:
    """One hostile file and what the daemon must say about it.

    Attributes:
        name: the case id.
        make: builds the file (see :data:`Make`); its name is the file's name in the
            plugins directory.
        says: text the recorded error (and the log) must contain.
        recorded_as: ``plugin`` (the plugin's own record keeps serving, with the
            failure in its history) or ``wheel`` (a ``wheel:<name>`` record).
        within: seconds until the refusal must be recorded.
    """

    name: str
    make: Make
    says: str
    recorded_as: Literal["plugin", "wheel"] = "plugin"
    within: float = 60.0


@dataclass(eq=False)
class DaemonUnderTest:
    """``cbus daemon`` (with a control socket) in a subprocess, logging to a file."""

    root: Path
    good: GoodPlugin
    args: Sequence[str] = ()
    plugins: Path = field(init=False)
    state: Path = field(init=False)
    log: Path = field(init=False)
    control: Path = field(init=False)
    marker: str = field(init=False)
    proc: subprocess.Popen[bytes] | None = field(init=False, default=None)
    _serial: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.plugins = self.root / "plugins"
        self.state = self.root / "state"
        self.control = self.root / "control.sock"
        self.marker = uuid.uuid4().hex
        self.log = self.root / "daemon-0.log"
        self.plugins.mkdir(parents=True, exist_ok=True)
        (self.root / "cbus.yaml").write_text(self.good.config_yaml())

    # -- life ---------------------------------------------------------------------------------

    def start(self, *, with_good: bool = True, wait: str | None = "greeter") -> None:
        """Start the daemon (with the good wheel in the plugins dir) and wait for it."""
        if with_good and not (self.plugins / self.good.wheel.name).exists():
            self.drop(self.good.wheel)
        runs = len(list(self.root.glob("daemon-*.log")))
        self.log = self.root / f"daemon-{runs}.log"
        self.control.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            str(DRIVER),
            "--control",
            str(self.control),
            "-c",
            str(self.root / "cbus.yaml"),
            "--plugins-dir",
            str(self.plugins),
            "--state-dir",
            str(self.state),
            *self.args,
        ]
        env = {**os.environ, MARKER_ENV: self.marker, "PYTHONWARNINGS": "error::RuntimeWarning"}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.root, env=env
            )
        if wait == "greeter":
            self.wait_for(f"config set key greeter: running {self.good.config_id}")
            self.wait_until(lambda: self.control.exists(), "the control socket")
        elif wait is not None:
            self.wait_for(wait)

    def stop(self, *, expect: int = 0, within: float = 30.0) -> str:
        """SIGTERM; assert the exit status and that nothing is left running; the log."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=within)
        elapsed = time.monotonic() - started
        log = self.text()
        assert code == expect, f"exit status {code} (wanted {expect}) after {elapsed:.1f}s:\n{log}"
        self.wait_until(lambda: not self.processes(), "no process of the daemon is left")
        return log

    def kill(self) -> None:
        """SIGKILL the daemon and everything carrying its marker (test clean-up)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid, _cmd in self.processes():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- files --------------------------------------------------------------------------------

    def next_wheel(self, staging: Path) -> Path:
        """A loadable, newer wheel of the good plugin (unique per call), in ``staging``."""
        self._serial += 1
        return reversion(self.good.wheel, staging / f"v{self._serial}", self._serial)

    def drop(self, src: Path, name: str | None = None) -> Path:
        """Put ``src`` into the plugins directory as a compiler does (temp name, rename)."""
        dst = self.plugins / (name or src.name)
        tmp = self.plugins / f".{dst.name}.partial"
        if src.is_dir():
            os.replace(src, dst)
            return dst
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dst)
        return dst

    def remove(self, path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            import shutil

            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    # -- observation --------------------------------------------------------------------------

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def mark(self) -> int:
        return len(self.text())

    def wait_for(self, text: str, *, after: int = 0, within: float = 60.0) -> str:
        """Wait until ``text`` is logged after offset ``after``; return the log."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            content = self.text()
            if text in content[after:]:
                return content
            if not self.alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged; got:\n{self.text()[after:][-6000:]}")

    def wait_until(self, pred: Callable[[], object], what: str, *, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {within}s: {what}; log:\n{self.text()[-4000:]}")
            time.sleep(0.05)

    def manifest(self) -> dict[str, Any]:
        """``manifest.json`` as the daemon last wrote it (always valid JSON)."""
        path = self.state / "manifest.json"
        if not path.exists():
            return {"version": 1, "plugins": []}
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def record(self, key: str) -> dict[str, Any] | None:
        return next((r for r in self.manifest()["plugins"] if r["binary_id"] == key), None)

    def ask(self, command: str) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(str(self.control))
            conn.sendall(command.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        answer: dict[str, Any] = json.loads(data)
        return answer

    def hello(self, name: str = "bob") -> str | None:
        """The daemon's answer to ``Hello(name)``."""
        text = self.ask(f"hello {name}").get("text")
        return str(text) if text is not None else None

    def processes(self) -> list[tuple[int, str]]:
        """Every live process carrying this daemon's marker (the daemon included)."""
        needle = f"{MARKER_ENV}={self.marker}".encode()
        found: list[tuple[int, str]] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle not in (entry / "environ").read_bytes().split(b"\0"):
                    continue
                stat = (entry / "stat").read_text()
                if stat[stat.rindex(")") + 2 :].split()[0] == "Z":
                    continue
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except (OSError, ValueError):
                continue
            found.append((int(entry.name), cmd))
        return found

    def stray_processes(self) -> list[tuple[int, str]]:
        """Processes of the daemon's other than itself and an idle trial server."""
        return [
            (pid, cmd)
            for pid, cmd in self.processes()
            if pid != self.pid and TRIAL_SERVER not in cmd
        ]

    def assert_serving(self) -> None:
        """Alive, answering from the good generation, which the manifest shows active."""
        assert self.alive(), f"the daemon died:\n{self.text()[-4000:]}"
        assert self.hello() == "hello, bob!"
        record = self.record(self.good.binary_id)
        assert record is not None, self.manifest()
        assert (record["status"], record["generation"]) == ("active", self.good.sha256), record


def run_case(dut: DaemonUnderTest, case: HostileCase, staging: Path) -> dict[str, Any]:
    """Drop ``case``'s file, assert the refusal and that all is well; return the record."""
    work = staging / case.name
    work.mkdir(parents=True, exist_ok=True)
    source = dut.next_wheel(work)
    made = case.make(dut.good, source, work / "out" / source.name)
    mark = dut.mark()
    dropped = dut.drop(made)
    try:
        record = _wait_for_refusal(dut, case, dropped)
        dut.wait_for(case.says, after=mark, within=10)
        dut.assert_serving()
        dut.wait_until(lambda: not dut.stray_processes(), f"{case.name}: nothing left running")
        manifest_text = (dut.state / "manifest.json").read_text()
        json.loads(manifest_text)  # always valid JSON
        assert "Traceback" not in dut.text()[mark:], dut.text()[mark:]
        return record
    finally:
        dut.remove(dropped)


def _wait_for_refusal(dut: DaemonUnderTest, case: HostileCase, dropped: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def refused() -> bool:
        if case.recorded_as == "wheel":
            record = dut.record(f"wheel:{dropped.name}")
            if record is None or case.says not in (record.get("error") or ""):
                return False
            assert record["status"] in ("failed", "rejected", "quarantined"), record
        else:
            record = dut.record(dut.good.binary_id)
            if record is None:
                return False
            failures = [f for f in record.get("failures", []) if f.get("wheel") == str(dropped)]
            if not failures or case.says not in failures[-1]["error"]:
                return False
            assert record["status"] == "active", record
        found.update(record)
        return True

    dut.wait_until(refused, f"{case.name}: refusal recorded ({case.says!r})", within=case.within)
    return found
