"""Typing a config set's entries through the bus (``LoadConfigConstructorByID``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, MutableMapping
from typing import Literal

from pydantic import ValidationError

from controllerbus.bus.bus import Bus
from controllerbus.bus.directives import LoadConfigConstructorByID
from controllerbus.bus.helpers import exec_one_off
from controllerbus.bus.protocols import ConfigConstructor
from controllerbus.configset.model import (
    ConfigSet,
    ConfigSetError,
    ControllerConfig,
    RawControllerConfig,
    parse_document,
)

__all__ = ["lookup_config_constructor", "resolve_config_set", "unmarshal_config_set"]

logger = logging.getLogger(__name__)


async def lookup_config_constructor(bus: Bus, config_id: str) -> ConfigConstructor | None:
    """Ask the bus for the constructor of ``config_id``; ``None`` if no resolver knows it.

    Unlike Go, which blocks until some resolver answers, this returns once every
    resolver has had its say, so an unknown id is an error rather than a hang.
    """
    value, ref = await exec_one_off(bus, LoadConfigConstructorByID(config_id), return_if_idle=True)
    ref.release()
    if value is None or not isinstance(value.value, ConfigConstructor):
        return None
    return value.value


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


async def resolve_config_set(
    bus: Bus,
    raw: Mapping[str, RawControllerConfig],
    *,
    source: str = "<config set>",
    skip_unknown: bool = False,
) -> ConfigSet:
    """Build typed configs for every entry; collect every problem, then raise once.

    Args:
        skip_unknown: leave out entries whose config id no resolver knows (a plugin
            that is not loaded right now) instead of reporting them.

    Raises:
        ConfigSetError: unknown config ids, invalid fields, or failed ``validate_config``.
    """
    ids = sorted({entry.id for entry in raw.values()})
    ctors = dict(
        zip(
            ids,
            await asyncio.gather(*(lookup_config_constructor(bus, i) for i in ids)),
            strict=True,
        )
    )
    issues: list[str] = []
    result: ConfigSet = {}
    for key, entry in raw.items():
        ctor = ctors[entry.id]
        if ctor is None and skip_unknown:
            logger.info("config set key %s: no factory for %s is loaded; skipped", key, entry.id)
            continue
        if ctor is None:
            issues.append(
                f"{key}.id: unknown config id {entry.id!r}: no factory on the bus provides it"
                " (is the controller's plugin loaded?)"
            )
            continue
        empty = ctor.construct()
        try:
            config = type(empty).model_validate(dict(entry.config))
        except ValidationError as exc:
            for err in exc.errors():
                issues.append(f"{key}.config.{_field_path(err['loc'])}: {err['msg']}")
            continue
        try:
            config.validate_config()
        except ValueError as exc:
            issues.append(f"{key}.config: {exc}")
            continue
        result[key] = ControllerConfig(entry.revision, config)
    if issues:
        raise ConfigSetError(source, issues)
    return result


async def unmarshal_config_set(
    bus: Bus,
    data: str | bytes,
    target: MutableMapping[str, ControllerConfig],
    *,
    overwrite: bool = False,
    fmt: Literal["yaml", "json"] = "yaml",
    source: str = "<config set>",
) -> list[str]:
    """Parse ``data`` into ``target``; keys already present are kept unless ``overwrite``.

    Returns:
        The keys added or replaced, in document order.

    Raises:
        ConfigSetError: see :func:`parse_document` and :func:`resolve_config_set`.
    """
    raw = parse_document(data, fmt=fmt, source=source)
    wanted = {k: v for k, v in raw.items() if overwrite or k not in target}
    typed = await resolve_config_set(bus, wanted, source=source)
    target.update(typed)
    return list(typed)
