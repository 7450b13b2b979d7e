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
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import EntryPoint
from typing import Any, TextIO

from controllerbus import _fs
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


def run_trial(name: str, value: str) -> dict[str, Any]:
    """Import entry point ``name = value`` and construct its factories; JSON-able result."""
    try:
        plugin = EntryPoint(name, value, ENTRY_POINT_GROUP).load()
        if (problem := shape_problem(plugin)) is not None:
            return {"ok": False, "error": f"could not load hot plugin, {problem}"}
        factories = asyncio.run(_factories(plugin))
        issues = inspect_plugin(plugin, name, factories)
        if issues:
            return {"ok": False, "error": "; ".join(issues)}
        return {
            "ok": True,
            "binary_id": plugin.binary_id,
            "binary_version": plugin.binary_version,
            "factories": sorted(f.config_id() for f in factories),
        }
    except BaseException as exc:  # a trial reports whatever the plugin does, even SystemExit
        return {"ok": False, "error": describe_exception(exc)}


def serve(stdin: TextIO, stdout: TextIO) -> int:
    """Answer trial-import requests, one forked child each (a warm "zygote").

    Starting an interpreter and importing the bus costs ~0.4 s; forking this warm,
    single-threaded process costs milliseconds. Each request is a JSON line
    ``{"site": <site-packages>, "entry": "NAME=module:attr"}``; each answer a JSON
    line as :func:`run_trial` returns. The child imports the plugin with ``site`` first
    on ``sys.path`` (as the host does), answers, and exits; the server's own module
    state never sees plugin code.
    """
    from controllerbus.bus import bus as _bus  # noqa: F401  (warm the imports children need)

    stdout.write("ready\n")
    stdout.flush()
    for line in stdin:
        try:
            request = json.loads(line)
            site, entry = str(request["site"]), str(request["entry"])
            name, value = entry.split("=", 1)
        except (ValueError, KeyError, TypeError) as exc:
            stdout.write(json.dumps({"ok": False, "error": f"bad request: {exc}"}) + "\n")
            stdout.flush()
            continue
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: import, answer through the pipe, never return
            os.close(read_fd)
            code = 0
            try:
                sys.path.insert(0, site)
                answer = json.dumps(run_trial(name, value)).encode()
                os.write(write_fd, answer)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            answer_bytes = pipe.read()
        _pid, status = os.waitpid(pid, 0)
        if not answer_bytes:
            reason = f"the trial import crashed ({_describe_status(status)})"
            answer_bytes = json.dumps({"ok": False, "error": reason}).encode()
        stdout.write(answer_bytes.decode() + "\n")
        stdout.flush()
    return 0


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def main(argv: Sequence[str] | None = None) -> int:
    """``trial_child NAME=module:attr`` prints one JSON result; ``--serve`` serves many."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--serve"]:
        return serve(sys.stdin, sys.stdout)
    if len(args) != 1 or "=" not in args[0]:
        print(json.dumps({"ok": False, "error": "usage: trial_child NAME=module:attr | --serve"}))
        return 2
    result = run_trial(*args[0].split("=", 1))
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
