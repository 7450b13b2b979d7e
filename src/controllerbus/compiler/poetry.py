"""Poetry 1 metadata (``[tool.poetry]`` without ``[project]``) as a PEP 621 ``[project]`` table.

Poetry's constraint syntax becomes PEP 440: ``^1.2.3`` is ``>=1.2.3,<2.0.0`` (the
first non-zero component is bumped), ``~1.2`` is ``>=1.2,<1.3``, ``*`` is no
specifier, anything else (``>=1,<2``, ``==1.0``, ``1.0``) passes through with a
bare version as ``==``. Table forms: ``{ version = ..., extras = [...], markers =
..., python = ..., optional = true, path = ... }``; ``git``/``url`` become direct
references. ``optional = true`` dependencies ship only through ``[tool.poetry.extras]``.
Groups (``[tool.poetry.group.*]``, ``dev-dependencies``) are development-only and
never ship.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["poetry_project", "to_pep440"]

_BARE = re.compile(r"^\d+(\.\d+)*([a-z0-9.+-]*)$")


def to_pep440(constraint: str) -> str:
    """A poetry version constraint as a PEP 440 specifier (``""`` for any version)."""
    parts = [p.strip() for p in re.split(r"\s*,\s*|\s+(?=[<>=!~^])", constraint.strip()) if p]
    out: list[str] = []
    for part in parts:
        if part in ("*", ""):
            continue
        if part.startswith("^"):
            out.extend(_caret(part[1:]))
        elif part.startswith("~") and not part.startswith("~="):
            out.extend(_tilde(part[1:]))
        elif _BARE.match(part):
            out.append(f"=={part}")
        else:
            out.append(part)
    return ",".join(out)


def _numbers(version: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3]]


def _caret(version: str) -> list[str]:
    numbers = _numbers(version)
    index = next((i for i, n in enumerate(numbers) if n != 0), len(numbers) - 1)
    upper = [*numbers[:index], numbers[index] + 1]
    return [f">={version}", "<" + ".".join(str(n) for n in upper)]


def _tilde(version: str) -> list[str]:
    numbers = _numbers(version)
    upper = [numbers[0] + 1] if len(numbers) == 1 else [numbers[0], numbers[1] + 1]
    return [f">={version}", "<" + ".".join(str(n) for n in upper)]


def poetry_project(poetry: Mapping[str, Any]) -> dict[str, Any]:
    """A ``[project]`` table equivalent to a poetry-1 ``[tool.poetry]`` table."""
    project: dict[str, Any] = {}
    for key in ("name", "version", "description"):
        if key in poetry:
            project[key] = poetry[key]
    deps = poetry.get("dependencies", {})
    required: list[str] = []
    optional: dict[str, str] = {}
    for name, spec in deps.items() if isinstance(deps, dict) else ():
        if str(name).lower() == "python":
            project["requires-python"] = to_pep440(str(spec))
            continue
        line, is_optional = _requirement(str(name), spec)
        if is_optional:
            optional[str(name).lower()] = line
        else:
            required.append(line)
    project["dependencies"] = required
    extras = poetry.get("extras", {})
    if isinstance(extras, dict) and extras:
        project["optional-dependencies"] = {
            extra: [optional[str(n).lower()] for n in names if str(n).lower() in optional]
            for extra, names in extras.items()
            if isinstance(names, list)
        }
    return project


def _requirement(name: str, spec: object) -> tuple[str, bool]:
    if isinstance(spec, list):
        spec = spec[0] if spec else "*"  # multiple-constraint lists: the first one
    if not isinstance(spec, dict):
        return f"{name}{to_pep440(str(spec))}", False
    extras = spec.get("extras")
    head = f"{name}[{','.join(extras)}]" if isinstance(extras, list) and extras else name
    if "git" in spec:
        ref = spec.get("rev") or spec.get("tag") or spec.get("branch")
        line = f"{head} @ git+{spec['git']}" + (f"@{ref}" if ref else "")
    elif "url" in spec:
        line = f"{head} @ {spec['url']}"
    else:
        # path dependencies keep their name here; sources.poetry_path_sources binds them.
        line = head + to_pep440(str(spec.get("version", "*")))
    markers = [str(spec["markers"])] if "markers" in spec else []
    if "python" in spec:
        python = to_pep440(str(spec["python"]))
        markers.extend(
            f"python_version {m.group(1)} '{m.group(2)}'"
            for m in re.finditer(r"([<>=!~]=?)\s*([\d.*]+)", python)
        )
    if markers:
        line += "; " + " and ".join(f"({m})" for m in markers)
    return line, bool(spec.get("optional"))
