"""The trial child: trial-import a plugin in a separate interpreter.

``python -m controllerbus.loader.trial_child`` is the child side of a trial;
:mod:`controllerbus.loader.trial` is the parent side that starts it.

Before a reload switches generations, the loader runs this with the *new*
generation's interpreter: it imports the entry point, checks the plugin's shape and
constructs its factories on a throw-away bus. An import error, a crash or a factory
that raises shows up here, while the old generation is still serving. (The new
generation cannot be imported in-process first: its first-party packages have the
same names as the old one's.)

Output: one JSON object on stdout, ``{"ok": true, "binary_id": ..., "binary_version":
..., "factories": [...]}`` or ``{"ok": false, "error": "..."}`` (exit status 1).

Every trial runs in a process group of its own with the resource limits of
:mod:`controllerbus.loader.sandbox`; non-daemon threads or processes the plugin
leaves running after its import and factories fail the trial (they would keep the
daemon from exiting, or outlive the plugin).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import traceback
from collections.abc import Sequence
from importlib.metadata import EntryPoint
from typing import Any, TextIO

from controllerbus import _fs
from controllerbus.loader.sandbox import (
    TRIAL_MARKER_ENV,
    TrialLimits,
    apply_limits,
    describe_status,
    kill_trial,
    limit_note,
)
from controllerbus.plugin import ENTRY_POINT_GROUP

__all__ = ["describe_exception", "inspect_plugin", "main", "run_trial", "serve", "shape_problem"]


def describe_exception(exc: BaseException, *, within: str | None = None) -> str:
    """``Type: message (at file:line)``, naming the innermost frame inside ``within``.

    Only text is kept: an exception object would hold the plugin's frames (and so its
    modules) alive after unload.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    if within is not None:
        frames = traceback.StackSummary.from_list(
            [f for f in frames if _fs.is_within(f.filename, within)] or list(frames)
        )
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" (at {exc.filename}:{exc.lineno})"
    return f"{type(exc).__name__}: {exc}{where}"


def inspect_plugin(plugin: object, expected_id: str, factories: Sequence[Any]) -> list[str]:
    """Problems with a plugin object and its factories (empty = fine)."""
    from controllerbus.bus.protocols import Factory

    issues: list[str] = []
    binary_id = getattr(plugin, "binary_id", None)
    if binary_id != expected_id:
        issues.append(
            f"the entry point is named {expected_id!r} but the plugin's binary_id is {binary_id!r}"
        )
    for index, factory in enumerate(factories):
        if not isinstance(factory, Factory):
            issues.append(f"factories()[{index}] is a {type(factory).__name__}, not a Factory")
    return issues


def shape_problem(plugin: object) -> str | None:
    """Why ``plugin`` is not a plugin object, or ``None`` if it looks like one."""
    if plugin is None:
        return "the entry point resolves to None (nil plugin global)"
    missing = [
        name for name in ("binary_id", "binary_version", "factories") if not hasattr(plugin, name)
    ]
    if missing:
        return (
            f"invalid type {type(plugin).__module__}.{type(plugin).__qualname__}: "
            f"missing {', '.join(missing)}"
        )
    return None


async def _factories(plugin: Any) -> list[Any]:
    from controllerbus.bus.bus import Bus

    async with Bus() as bus:
        return list(plugin.factories(bus))


def run_trial(name: str, value: str, limits: TrialLimits | None = None) -> dict[str, Any]:
    """Import entry point ``name = value`` and construct its factories; JSON-able result."""
    before = set(threading.enumerate())
    try:
        plugin = EntryPoint(name, value, ENTRY_POINT_GROUP).load()
        if (problem := shape_problem(plugin)) is not None:
            return {"ok": False, "error": f"could not load hot plugin, {problem}"}
        factories = asyncio.run(_factories(plugin))
        issues = inspect_plugin(plugin, name, factories)
        if threads := _new_threads(before):
            issues.append(
                f"the import left non-daemon thread(s) running: {', '.join(threads)} "
                "(they would keep the daemon from exiting; make them daemon threads, "
                "or start them in a controller and stop them in close())"
            )
        if issues:
            return {"ok": False, "error": "; ".join(issues)}
        return {
            "ok": True,
            "binary_id": plugin.binary_id,
            "binary_version": plugin.binary_version,
            "factories": sorted(f.config_id() for f in factories),
        }
    except BaseException as exc:  # a trial reports whatever the plugin does, even SystemExit
        note = limit_note(exc, limits) if limits is not None else ""
        return {"ok": False, "error": describe_exception(exc) + note}


def _new_threads(before: set[threading.Thread]) -> list[str]:
    return [
        repr(t.name)
        for t in threading.enumerate()
        if t not in before and not t.daemon and t.is_alive()
    ]


def serve(stdin: TextIO, stdout: TextIO) -> int:
    """Answer trial-import requests, one forked child each (a warm "zygote").

    Starting an interpreter and importing the bus costs ~0.4 s; forking this warm,
    single-threaded process costs milliseconds. Each request is a JSON line
    ``{"site": <site-packages>, "entry": "NAME=module:attr", "limits": {...},
    "marker": <unique id>}``; the
    server answers ``{"pid": N}`` (the child, also its process group) at once and
    then a JSON line as :func:`run_trial` returns. The child starts a session of its
    own, imports the plugin with ``site`` first on ``sys.path`` (as the host does)
    under the limits, answers, and exits; the server's own module state never sees
    plugin code. Whatever is left in the child's process group is killed.
    """
    from controllerbus.bus import bus as _bus  # noqa: F401  (warm the imports children need)

    stdout.write("ready\n")
    stdout.flush()
    for line in stdin:
        try:
            request = json.loads(line)
            site, entry = str(request["site"]), str(request["entry"])
            name, value = entry.split("=", 1)
            limits = TrialLimits.from_json(request.get("limits"))
            marker = str(request.get("marker") or "")
        except (ValueError, KeyError, TypeError) as exc:
            stdout.write(json.dumps({"ok": False, "error": f"bad request: {exc}"}) + "\n")
            stdout.flush()
            continue
        answer = _serve_one(site, name, value, limits, marker, stdout)
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()
    return 0


def _serve_one(
    site: str, name: str, value: str, limits: TrialLimits, marker: str, stdout: TextIO
) -> dict[str, Any]:
    read_fd, write_fd = os.pipe()
    stdout.flush()
    pid = os.fork()
    if pid == 0:  # child: never returns
        _child(read_fd, write_fd, site, name, value, limits, marker)
    os.close(write_fd)
    stdout.write(json.dumps({"pid": pid}) + "\n")
    stdout.flush()
    # Read up to the answer's newline, not to EOF: a process the plugin forked holds
    # the pipe's write end too.
    answer_bytes = b""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while not answer_bytes.endswith(b"\n"):
            chunk = pipe.read(65536)
            if not chunk:
                break
            answer_bytes += chunk
    _pid, status = os.waitpid(pid, 0)
    left = kill_trial(pid, marker)
    if not answer_bytes.endswith(b"\n"):
        reason = f"the trial import crashed ({describe_status(status, limits)})"
        return {"ok": False, "error": reason}
    answer: dict[str, Any] = json.loads(answer_bytes)
    if left and answer.get("ok"):
        listed = ", ".join(f"pid {p} ({cmd})" for p, cmd in left[:5])
        answer = {
            "ok": False,
            "error": f"the import left {len(left)} process(es) running: {listed} "
            "(killed; start processes in a controller and stop them in close())",
        }
    return answer


def _child(
    read_fd: int,
    write_fd: int,
    site: str,
    name: str,
    value: str,
    limits: TrialLimits,
    marker: str,
) -> None:
    code = 0
    try:
        os.close(read_fd)
        os.setsid()  # a process group of its own: one killpg ends it and its children
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)  # the server's stdout is the daemon's pipe: never hold it
        os.close(devnull)
        if marker:
            os.environ[TRIAL_MARKER_ENV] = marker  # inherited by whatever it starts
        apply_limits(limits)
        sys.path.insert(0, site)
        answer = (json.dumps(run_trial(name, value, limits)) + "\n").encode()
        while answer:
            answer = answer[os.write(write_fd, answer) :]
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """``[--limits JSON] NAME=module:attr`` prints one result; ``--serve`` serves many."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--serve"]:
        return serve(sys.stdin, sys.stdout)
    limits: TrialLimits | None = None
    if len(args) == 3 and args[0] == "--limits":
        limits = TrialLimits.from_json(json.loads(args[1]))
        apply_limits(limits)
        args = args[2:]
    if len(args) != 1 or "=" not in args[0]:
        usage = "usage: trial_child [--limits JSON] NAME=module:attr | --serve"
        print(json.dumps({"ok": False, "error": usage}))
        return 2
    name, value = args[0].split("=", 1)
    result = run_trial(name, value, limits)
    print(json.dumps(result), flush=True)
    # os._exit: a non-daemon thread the plugin started must not keep the trial alive.
    os._exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    raise SystemExit(main())
