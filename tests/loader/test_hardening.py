"""Unit tests of the hardening pieces: sandbox limits, crash guard, records, residue.

The hostile corpus (``tests/hostile``) runs them end to end through a daemon; these
pin each piece's behaviour fast.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controllerbus.loader.crashguard import QUARANTINE_AFTER, ActivationGuard
from controllerbus.loader.manifest import MAX_FAILURES, Manifest, ManifestRecord
from controllerbus.loader.records import error_location, pruned, with_failure, with_success
from controllerbus.loader.residue import (
    Baseline,
    child_pids,
    find_residue,
    leaked_threads,
    record_thread_origins,
)
from controllerbus.loader.sandbox import (
    TrialLimits,
    describe_status,
    kill_trial,
    limit_note,
    marked_processes,
    trial_leftovers,
)
from tests.helpers import eventually_sync

# -- sandbox ----------------------------------------------------------------------------------


def test_limits_validate_and_default_the_cpu_limit_to_the_deadline() -> None:
    assert TrialLimits(deadline=2.5).cpu == 3
    assert TrialLimits(deadline=2.5, cpu_seconds=1).cpu == 1
    assert TrialLimits.from_json(TrialLimits(deadline=4).to_json()) == TrialLimits(deadline=4)
    with pytest.raises(ValueError, match="deadline must be positive"):
        TrialLimits(deadline=0)
    with pytest.raises(ValueError, match="open_files must be >= 0"):
        TrialLimits(open_files=-1)


def test_a_hit_limit_is_named() -> None:
    limits = TrialLimits(deadline=5, memory_mib=100, open_files=10)
    assert "address-space limit of 100 MiB" in limit_note(MemoryError(), limits)
    emfile = OSError(errno.EMFILE, "Too many open files")
    assert "open-files limit of 10" in limit_note(emfile, limits)
    assert limit_note(ValueError("x"), limits) == ""
    assert "CPU-time limit of 5 s" in describe_status(signal.SIGXCPU, limits)
    assert describe_status(signal.SIGSEGV, limits) == "killed by SIGSEGV"
    assert describe_status(7 << 8, limits) == "exit status 7"


def test_kill_trial_ends_the_group_and_marked_processes_that_left_it() -> None:
    marker = f"test-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "CBUS_TRIAL_ID": marker}
    leader = subprocess.Popen(["sleep", "60"], start_new_session=True, env=env)
    escaped = subprocess.Popen(["sleep", "60"], start_new_session=True, env=env)
    pids = {leader.pid, escaped.pid}
    try:
        # Popen returns once exec has begun; the kernel sets up the new environment a
        # moment later, so /proc/<pid>/environ can still be empty right after it returns.
        eventually_sync(
            lambda: {p for p, _c in marked_processes(marker)} == pids,
            within=5,
            failure=lambda: f"marked: {marked_processes(marker)}, expected {pids}",
        )
        left = trial_leftovers(leader.pid, marker)
        assert {p for p, _c in left} == {leader.pid, escaped.pid}
        killed = kill_trial(leader.pid, marker)
        assert {p for p, _c in killed} == {leader.pid, escaped.pid}
        assert leader.wait(timeout=5) == -signal.SIGKILL
        assert escaped.wait(timeout=5) == -signal.SIGKILL
    finally:
        for proc in (leader, escaped):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# -- crash guard ------------------------------------------------------------------------------


def test_an_unfinished_activation_counts_a_crash_until_quarantine_and_retry(
    tmp_path: Path,
) -> None:
    guard = ActivationGuard(tmp_path)
    assert guard.recover() is None
    guard.begin("test/p", "g1", tmp_path / "p.whl")
    guard.end("g1", ok=True)
    assert guard.recover() is None  # finished: nothing to count

    for count in range(1, QUARANTINE_AFTER + 1):
        guard.begin("test/p", "g1", tmp_path / "p.whl")  # ... and the process dies
        crash = ActivationGuard(tmp_path).recover()
        assert crash is not None
        assert (crash.binary_id, crash.generation, crash.count) == ("test/p", "g1", count)
        assert crash.status == ("quarantined" if count >= QUARANTINE_AFTER else "suspect")
    assert not (tmp_path / "activating.json").exists()
    assert guard.crash("g1") is not None

    assert guard.retry("test/p") == ["g1"]
    assert guard.crash("g1") is None
    assert not (tmp_path / "crashes.json").exists()


def test_a_successful_activation_clears_the_crash_count(tmp_path: Path) -> None:
    guard = ActivationGuard(tmp_path)
    guard.begin("test/p", "g1", tmp_path / "p.whl")
    assert guard.recover() is not None
    guard.begin("test/p", "g1", tmp_path / "p.whl")
    guard.end("g1", ok=True)
    assert guard.crash("g1") is None


def test_unreadable_guard_files_are_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "activating.json").write_bytes(b"\xff not json")
    (tmp_path / "crashes.json").write_text("[1,")
    guard = ActivationGuard(tmp_path)
    assert guard.recover() is None
    assert guard.crash("g1") is None
    assert "ignoring an unreadable activation marker" in caplog.text


# -- records ----------------------------------------------------------------------------------


def _record(tmp_path: Path, **update: object) -> ManifestRecord:
    wheel = tmp_path / "p.whl"
    wheel.write_bytes(b"")
    base = ManifestRecord(binary_id="test/p", wheel=str(wheel), status="active", generation="g1")
    return base.model_copy(update=update)


def test_failures_are_bounded_and_a_success_clears_the_error(tmp_path: Path) -> None:
    active = _record(tmp_path)
    manifest = Manifest(plugins=[active])
    now = datetime(2026, 1, 1, tzinfo=UTC)
    failed = active.model_copy(update={"status": "failed", "generation": ""})
    for i in range(MAX_FAILURES + 2):
        message = f"ImportError: no {i} (at /gen/p/x.py:{i + 1})"
        manifest = with_failure(
            manifest, failed, message, serving=True, now=now + timedelta(seconds=i)
        )
    record = manifest.get("test/p")
    assert record is not None
    assert (record.status, record.generation) == ("active", "g1")  # still serving
    assert record.error_at == f"/gen/p/x.py:{MAX_FAILURES + 2}"
    assert len(record.failures) == MAX_FAILURES
    assert record.failures[-1].error.startswith(f"ImportError: no {MAX_FAILURES + 1}")

    manifest = with_success(manifest, active)
    record = manifest.get("test/p")
    assert record is not None
    assert (record.status, record.error, record.error_at, record.error_time) == (
        "active",
        None,
        None,
        None,
    )
    assert len(record.failures) == MAX_FAILURES  # history kept


def test_records_of_gone_wheels_are_pruned_unless_active(tmp_path: Path) -> None:
    kept = _record(tmp_path, status="failed")
    gone = kept.model_copy(update={"binary_id": "test/gone", "wheel": "/nope.whl"})
    active_gone = gone.model_copy(update={"binary_id": "test/active", "status": "active"})
    manifest = pruned(Manifest(plugins=[kept, gone, active_gone]), set())
    assert [r.binary_id for r in manifest.plugins] == ["test/p", "test/active"]


def test_error_location_is_the_last_file_and_line() -> None:
    assert error_location("X (at /a.py:1) then (at /b/c.py:22)") == "/b/c.py:22"
    assert error_location("no location") is None


# -- residue ----------------------------------------------------------------------------------


def test_a_thread_started_from_generation_code_is_attributed(tmp_path: Path) -> None:
    record_thread_origins()
    generation = tmp_path / "gen"
    generation.mkdir()
    code = compile(
        "import threading\n"
        "def start(stop):\n"
        "    t = threading.Thread(target=stop.wait, name='gen-thread')\n"
        "    t.start()\n"
        "    return t\n",
        str(generation / "plugin.py"),
        "exec",
    )
    namespace: dict[str, object] = {}
    exec(code, namespace)
    baseline = Baseline.take()
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, name="host-thread")
    other.start()
    thread = namespace["start"](stop)  # type: ignore[operator]
    try:
        found = [t.name for t, _where in leaked_threads(generation, baseline)]
        assert found == ["gen-thread"]
        residue = find_residue(generation, baseline, kill_children=False)
        assert any("non-daemon thread 'gen-thread'" in line for line in residue), residue
    finally:
        stop.set()
        thread.join()
        other.join()


def test_a_child_process_started_after_the_baseline_is_killed(tmp_path: Path) -> None:
    baseline = Baseline.take()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert child.pid in child_pids()
        residue = find_residue(tmp_path, baseline)
        assert any(f"child process {child.pid}" in line and "killed" in line for line in residue)
        assert child.wait(timeout=5) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
