"""Apply a config-set document on a bus, and again after every plugin change.

:func:`read_config_document` reads the file's envelope; :class:`ConfigSetApplier`
keeps one :class:`~controllerbus.configset.controller.ApplyConfigSet` directive on
the bus for it, typed against the factories the bus has *now*, so that a reloaded
plugin's keys restart on the new code (the daemon passes :meth:`ConfigSetApplier.refresh`
as the plugin host's ``on_change``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from controllerbus.bus.helpers import CallbackHandler
from controllerbus.configset.controller import ApplyConfigSet, ConfigSetState
from controllerbus.configset.model import guess_format, parse_document
from controllerbus.configset.resolve import resolve_config_set
from controllerbus.errors import ConfigError

if TYPE_CHECKING:
    from controllerbus.bus.bus import Bus
    from controllerbus.bus.protocols import AttachedValue, DirectiveInstance, Reference
    from controllerbus.configset.model import ConfigSet, RawControllerConfig

__all__ = ["ConfigSetApplier", "read_config_document"]

logger = logging.getLogger(__name__)


async def read_config_document(
    path: Path, *, write_config: bool = False
) -> dict[str, RawControllerConfig]:
    """Read the config-set file's envelope (types are resolved later, on the bus).

    Raises:
        ConfigError: the file is missing (without ``write_config``) or malformed.
    """
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        if not write_config:
            raise ConfigError(
                f"cannot find config at {path}: create it, pass -c with another file,"
                " or pass --write-config to start from an empty one"
            ) from None
        data = b""
    except OSError as exc:
        raise ConfigError(f"cannot read config at {path}: {exc.strerror}") from exc
    return parse_document(data, fmt=guess_format(path), source=str(path))


def _log_state(_inst: DirectiveInstance, av: AttachedValue) -> None:
    state = av.value
    if not isinstance(state, ConfigSetState):
        return
    if state.error is not None:
        logger.error("config set key %s: controller failed: %s", state.id, state.error)
    elif state.controller is not None:
        info = state.controller.get_controller_info()
        logger.info("config set key %s: running %s@%s", state.id, info.id, info.version)


class ConfigSetApplier:
    """Keeps one ``ApplyConfigSet`` on the bus for a config-set document.

    :meth:`apply` types the document against the factories on the bus now and
    swaps the directive: keys whose config is unchanged keep running; keys whose
    config *class* changed (a reloaded plugin) restart on the new code.
    """

    def __init__(self, bus: Bus, raw: Mapping[str, RawControllerConfig], source: str) -> None:
        self._bus = bus
        self._raw = dict(raw)
        self._source = source
        self._ref: Reference | None = None
        self._closed = False

    async def apply(self, *, strict: bool) -> ConfigSet:
        """Type and apply the document; returns the typed set (for ``--write-config``).

        Args:
            strict: report unknown config ids as errors (at start-up); otherwise skip
                them (their plugin may be loading, or failed to load).

        Raises:
            ConfigSetError: with ``strict``, any problem; otherwise invalid entries.
        """
        typed = await resolve_config_set(
            self._bus, self._raw, source=self._source, skip_unknown=not strict
        )
        if self._closed:
            return typed
        pushed = asyncio.get_running_loop().create_future()
        seen: set[str] = set()

        def added(inst: DirectiveInstance, av: AttachedValue) -> None:
            _log_state(inst, av)
            if isinstance(av.value, ConfigSetState):
                seen.add(av.value.id)
            if len(seen) >= len(typed) and not pushed.done():
                pushed.set_result(None)

        _inst, ref = self._bus.add_directive(ApplyConfigSet(typed), CallbackHandler(added))
        old, self._ref = self._ref, ref
        if typed:
            # Every key has been pushed to the config-set controller once each has
            # reported a state; only then may the old set go (or keys would restart).
            try:
                async with asyncio.timeout(10):
                    await pushed
            except TimeoutError:
                logger.warning("config set: not every key reported a state within 10 s")
        if old is not None:
            old.release()
        return typed

    async def refresh(self) -> None:
        """Re-type after a plugin change (the ``PluginHost`` ``on_change`` hook)."""
        if self._ref is None or self._closed:
            return
        try:
            await self.apply(strict=False)
        except ConfigError as exc:
            logger.error("config set could not be re-applied after a plugin change: %s", exc)

    def close(self) -> None:
        """Release the directive: every key's controller stops."""
        self._closed = True
        if self._ref is not None:
            self._ref.release()
            self._ref = None
