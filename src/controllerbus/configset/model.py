"""Config sets: the file format and its in-memory form (docs/bus.md#config-sets).

A config-set file (YAML or JSON) maps a key to an entry::

    boilerplate-example-0:
      config:
        exampleField: "hello world"
      id: controllerbus/example/boilerplate/1
      revision: 1

Parsing is two steps: :func:`parse_document` checks the envelope without knowing
any config type (pure), then :func:`controllerbus.configset.resolve.resolve_config_set`
asks the bus for each id's config constructor and validates the ``config`` object.
Every problem is collected and reported at once, each naming the key and field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from controllerbus.bus.config import Config
from controllerbus.errors import ConfigError

__all__ = [
    "ConfigSet",
    "ConfigSetError",
    "ControllerConfig",
    "RawControllerConfig",
    "config_set_to_json",
    "config_set_to_yaml",
    "guess_format",
    "parse_document",
]

_ENTRY_FIELDS = ("id", "revision", "config")


class ConfigSetError(ConfigError):
    """A config set could not be parsed; lists every problem found.

    Attributes:
        source: the file (or ``"<config set>"``) the set came from.
        issues: one line per problem, each starting with ``key.field``.
    """

    def __init__(self, source: str, issues: Sequence[str]) -> None:
        super().__init__(source, tuple(issues))
        self.source = source
        self.issues = tuple(issues)

    def __str__(self) -> str:
        found = "\n".join(f"  - {issue}" for issue in self.issues)
        return f"{self.source}: invalid config set:\n{found}"


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """A config with its revision; a strictly higher revision restarts a controller."""

    revision: int
    config: Config

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ControllerConfig)
            and self.revision == other.revision
            and self.config.equals_config(other.config)
        )

    def __hash__(self) -> int:
        return hash((self.revision, self.config.config_id()))


ConfigSet = dict[str, ControllerConfig]


@dataclass(frozen=True, slots=True)
class RawControllerConfig:
    """An entry whose envelope is valid but whose ``config`` is not yet typed."""

    id: str
    revision: int
    config: Mapping[str, Any]


def _check_entry(key: str, entry: object, issues: list[str]) -> RawControllerConfig | None:
    if not isinstance(entry, Mapping):
        issues.append(f"{key}: entry must be an object with id, revision and config")
        return None
    before = len(issues)
    for field in entry:
        if field not in _ENTRY_FIELDS:
            hint = " (did you mean 'revision'?)" if field in ("rev", "version") else ""
            issues.append(f"{key}.{field}: unknown field{hint}; expected id, revision, config")
    config_id = entry.get("id")
    if config_id is None or config_id == "":
        issues.append(f"{key}.id: config id was not specified")
    elif not isinstance(config_id, str):
        issues.append(f"{key}.id: must be a string, got {type(config_id).__name__}")
    revision = entry.get("revision", 0)
    if revision is None:
        revision = 0
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
        issues.append(f"{key}.revision: must be a non-negative integer, got {revision!r}")
    config = entry.get("config")
    if config is None:
        issues.append(f"{key}.config: config was not specified")
    elif not isinstance(config, Mapping):
        issues.append(f"{key}.config: must be an object, got {type(config).__name__}")
    if len(issues) > before:
        return None
    assert isinstance(config_id, str)
    assert isinstance(revision, int)
    assert isinstance(config, Mapping)
    return RawControllerConfig(config_id, revision, config)


def _load(text: str, fmt: Literal["yaml", "json"], source: str) -> object:
    try:
        if fmt == "json":
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigSetError(source, [f"line {exc.lineno}: malformed JSON: {exc.msg}"]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigSetError(source, [f"{where}malformed YAML: {problem}"]) from exc


def guess_format(path: Path | str) -> Literal["yaml", "json"]:
    """``json`` for ``*.json`` files, ``yaml`` otherwise."""
    return "json" if str(path).lower().endswith(".json") else "yaml"


def parse_document(
    data: str | bytes,
    *,
    fmt: Literal["yaml", "json"] = "yaml",
    source: str = "<config set>",
) -> dict[str, RawControllerConfig]:
    """Check a config-set document's envelope; keys keep the document's order.

    Raises:
        ConfigSetError: malformed YAML/JSON, or entries with missing or wrong fields.
    """
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    doc = _load(text, fmt, source)
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigSetError(
            source, [f"top level must be an object of key: entry, got {type(doc).__name__}"]
        )
    issues: list[str] = []
    raw: dict[str, RawControllerConfig] = {}
    for key, entry in doc.items():
        if not isinstance(key, str):
            issues.append(f"{key!r}: keys must be strings")
            continue
        if checked := _check_entry(key, entry, issues):
            raw[key] = checked
    if issues:
        raise ConfigSetError(source, issues)
    return raw


def _entry_json(conf: ControllerConfig) -> dict[str, Any]:
    # Go's protobuf-JSON order: revision, id, config; revision omitted when 0.
    entry: dict[str, Any] = {}
    if conf.revision:
        entry["revision"] = conf.revision
    entry["id"] = conf.config.config_id()
    entry["config"] = conf.config.to_json_dict()
    return entry


def config_set_to_json(config_set: Mapping[str, ControllerConfig]) -> str:
    """Compact JSON, as Go marshals it: ``{"k":{"revision":1,"id":"...","config":{}}}``."""
    doc = {key: _entry_json(conf) for key, conf in config_set.items()}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def config_set_to_yaml(config_set: Mapping[str, ControllerConfig]) -> str:
    """YAML with keys sorted at every level (``config, id, revision``)."""
    doc = {key: _entry_json(conf) for key, conf in config_set.items()}
    text = yaml.safe_dump(doc, sort_keys=True, default_flow_style=False, allow_unicode=True)
    if yaml.safe_load(text) != doc:
        # PyYAML writes some characters (NEL, LS, PS) raw, which read back as line
        # breaks; escaping everything non-ASCII is ugly but exact.
        text = yaml.safe_dump(doc, sort_keys=True, default_flow_style=False)
    return text
