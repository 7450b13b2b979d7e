"""What a generation leaves running after its unload: threads, child processes, files.

Weak references (:mod:`controllerbus.loader.purge`) prove that the plugin's *objects*
died; this module looks for what is not an object the plugin owns:

* **threads** still alive whose code lies in the generation (the thread's target,
  its ``run`` method, any frame of its current stack, or the code that started it:
  :func:`record_thread_origins` makes ``Thread.start`` note its caller's files);
  worker threads of a ``concurrent.futures`` pool count only by their stack;
* **open files and sockets** held in those threads' frames, and descriptors of the
  daemon pointing at files inside the generation directory;
* **child processes** of the daemon started while the generation was active (other
  than the loader's own, e.g. the trial server). They are killed when no other
  plugin is active (otherwise they may be another plugin's, and are only reported).

A :class:`Baseline` is taken before the generation is imported; :func:`find_residue`
after its controllers stopped and its modules were purged. Threads cannot be killed
in Python: a non-daemon one keeps the interpreter from exiting, which is why the
daemon abandons them with a distinct exit status (see ``docs/loader.md``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from controllerbus._fs import is_within

__all__ = [
    "Baseline",
    "child_pids",
    "find_residue",
    "leaked_threads",
    "open_fds",
    "record_thread_origins",
]

_ORIGIN = "_cbus_origin"
_ORIGIN_DEPTH = 40


def record_thread_origins() -> None:
    """Make ``threading.Thread.start`` record the files of its callers (idempotent).

    A thread running a stdlib function (``Thread(target=time.sleep)``) shows no
    plugin frame on its stack; where it was started from does.
    """
    start = threading.Thread.start
    if getattr(start, "_cbus_records_origin", False):
        return

    def recording_start(self: threading.Thread) -> None:
        files: list[str] = []
        frame = sys._getframe(1)
        while frame is not None and len(files) < _ORIGIN_DEPTH:
            files.append(frame.f_code.co_filename)
            frame = frame.f_back  # type: ignore[assignment]
        with contextlib.suppress(AttributeError):
            setattr(self, _ORIGIN, tuple(files))
        start(self)

    recording_start._cbus_records_origin = True  # type: ignore[attr-defined]
    threading.Thread.start = recording_start  # type: ignore[method-assign]


@dataclass(frozen=True, slots=True)
class Baseline:
    """Threads, children and descriptors that existed before a generation was imported."""

    threads: frozenset[int]
    children: frozenset[int]

    @classmethod
    def take(cls) -> Baseline:
        """The current threads and child processes."""
        return cls(frozenset(t.ident or 0 for t in threading.enumerate()), frozenset(child_pids()))


def child_pids() -> set[int]:
    """Pids of this process's live (non-zombie) children (Linux ``/proc``; else empty)."""
    pids: set[int] = set()
    task_dir = Path("/proc/self/task")
    with contextlib.suppress(OSError):
        for task in task_dir.iterdir():
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in (task / "children").read_text().split())
    return {p for p in pids if _state(p) not in ("Z", None)}


def open_fds() -> dict[int, str]:
    """This process's open descriptors and what they point at (Linux ``/proc``)."""
    result: dict[int, str] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc/self/fd"):
            with contextlib.suppress(OSError, ValueError):
                result[int(entry.name)] = os.readlink(entry.path)
    return result


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:120] or "?"


def _frames(frame: FrameType | None) -> Iterator[FrameType]:
    while frame is not None:
        yield frame
        frame = frame.f_back


def leaked_threads(
    generation: Path, baseline: Baseline
) -> list[tuple[threading.Thread, str | None]]:
    """Live threads started since ``baseline`` whose code lies in ``generation``.

    Each with where it is now (``file:line`` of its innermost frame in the generation).
    """
    root = str(generation)
    frames = sys._current_frames()
    found: list[tuple[threading.Thread, str | None]] = []
    for thread in threading.enumerate():
        if thread.ident in baseline.threads or not thread.is_alive():
            continue
        stack = list(_frames(frames.get(thread.ident or 0)))
        inside = [f for f in stack if is_within(f.f_code.co_filename, root)]
        target = getattr(thread, "_target", None)
        code = getattr(target, "__code__", None) or getattr(type(thread).run, "__code__", None)
        pool_worker = code is not None and code.co_filename.endswith(
            os.path.join("concurrent", "futures", "thread.py")
        )
        origin = () if pool_worker else getattr(thread, _ORIGIN, ())
        owned = (
            bool(inside)
            or (code is not None and not pool_worker and is_within(code.co_filename, root))
            or any(is_within(f, root) for f in origin)
        )
        if owned:
            where = f"{inside[0].f_code.co_filename}:{inside[0].f_lineno}" if inside else None
            found.append((thread, where))
    return found


def _fds_in_frames(frames: list[FrameType]) -> set[int]:
    fds: set[int] = set()
    for frame in frames:
        values = list(frame.f_locals.values())
        for value in list(values):
            attrs = getattr(value, "__dict__", None)
            if isinstance(attrs, dict):
                values.extend(attrs.values())
        for value in values:
            fileno = getattr(value, "fileno", None)
            if callable(fileno) and not isinstance(value, type):
                with contextlib.suppress(Exception):
                    fd = fileno()
                    if isinstance(fd, int) and fd > 2:
                        fds.add(fd)
    return fds


def find_residue(
    generation: Path,
    baseline: Baseline,
    *,
    own_children: Collection[int] = (),
    kill_children: bool = True,
) -> list[str]:
    """Describe what the unloaded ``generation`` left running (empty: nothing).

    Args:
        generation: the generation's directory.
        baseline: taken before the generation was imported.
        own_children: pids of the loader's own children (not the plugin's).
        kill_children: kill the leftover child processes (else only report them).
    """
    found: list[str] = []
    fds = open_fds()
    frames = sys._current_frames()
    held: set[int] = set()
    for thread, where in leaked_threads(generation, baseline):
        kind = "daemon thread" if thread.daemon else "non-daemon thread"
        at = f" (at {where})" if where else ""
        hint = (
            "; it will keep the daemon from exiting"
            if not thread.daemon
            else "; it runs on with no plugin behind it"
        )
        found.append(f"{kind} {thread.name!r} is still running after the unload{at}{hint}")
        held |= _fds_in_frames(list(_frames(frames.get(thread.ident or 0))))
    root = str(generation)
    held |= {fd for fd, target in fds.items() if is_within(target, root)}
    for fd in sorted(held):
        if fd in fds:
            found.append(f"open file descriptor {fd} ({fds[fd]}) is still held")
    for pid in sorted(child_pids() - baseline.children - set(own_children)):
        command = _cmdline(pid)
        if kill_children:
            _kill(pid)
            found.append(f"child process {pid} ({command}) was still running; killed")
        else:
            found.append(
                f"child process {pid} ({command}), started while the plugin was active, is "
                "still running (not killed: another plugin is active and may own it)"
            )
    return found


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and _state(pid) not in ("Z", None):
        time.sleep(0.01)
    # Not reaped here: its owner (a Popen, asyncio's child watcher) waits for it and
    # would lose its exit status; a zombie runs nothing.
