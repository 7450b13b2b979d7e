"""The production checks of a load: trust before anything is read, dependency wheels.

:class:`LoadPolicy` is what :class:`~controllerbus.loader.host.PluginHost` consults
for every wheel, in this order:

1. :meth:`LoadPolicy.check_trust`: with a trust file, hash the file and refuse it
   unless pinned (nothing is unpacked or verified before that);
2. verification (the host's), then :meth:`LoadPolicy.same_bytes`: the bytes verified
   are the bytes trusted;
3. :meth:`LoadPolicy.resolve`: the plugin's requirements the host does not have come
   from dependency wheels in the find-links directories (trust-checked and verified
   the same way); the rest is left to the host's requirement check;
4. the generation is installed with those wheels and its id covers their hashes.

Without a trust file nothing is pinned (development); a wheel directory still
provides dependencies. Everything here is blocking: call it from a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from controllerbus.loader.errors import WheelChanged
from controllerbus.loader.trust import TrustPolicy
from controllerbus.loader.verify import VerifiedWheel
from controllerbus.loader.wheelsource import (
    FindLinks,
    Resolution,
    host_installed,
    resolve_dependencies,
)

__all__ = ["LoadPolicy", "start_index_mirror"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadPolicy:
    """Trust and dependency settings of a plugin host.

    Attributes:
        trust: the trust file (``None``: no pinning).
        find_links: directories searched for dependency wheels.
        exclude: directories whose distributions never count as the host's (the
            state directory: another plugin's generation is not the host).
    """

    trust: TrustPolicy | None = None
    find_links: tuple[Path, ...] = ()
    exclude: tuple[Path, ...] = field(default=())

    @classmethod
    def of(
        cls,
        trust: Path | None = None,
        find_links: Sequence[Path] = (),
        exclude: Sequence[Path] = (),
    ) -> LoadPolicy:
        """Build a policy from daemon options (paths made absolute)."""
        return cls(
            TrustPolicy(trust) if trust is not None else None,
            tuple(p.absolute() for p in find_links),
            tuple(p.absolute() for p in exclude),
        )

    def check_trust(self, wheel: Path) -> str | None:
        """The wheel's sha256 if pinned; ``None`` without a trust file.

        Raises:
            UntrustedWheel: not pinned, or pinned with another hash.
            TrustFileError: the trust file is unusable (fail closed).
        """
        return self.trust.check(wheel) if self.trust is not None else None

    @staticmethod
    def same_bytes(trusted: str | None, verified: VerifiedWheel) -> None:
        """Raise :class:`WheelChanged` if the file changed between trust check and verify."""
        if trusted is not None and trusted != verified.sha256:
            raise WheelChanged(verified.path, trusted, verified.sha256)

    def resolve(self, verified: VerifiedWheel) -> Resolution:
        """The dependency wheels ``verified`` needs and the lines the host must serve.

        Raises:
            DependencyError, UntrustedWheel, InvalidWheel: see
            :func:`~controllerbus.loader.wheelsource.resolve_dependencies`.
        """
        if not self.find_links:
            # No wheelhouse: the host serves everything (and reports what it lacks).
            return Resolution(host_lines=verified.requires_dist)
        return resolve_dependencies(
            verified,
            find_links=FindLinks(self.find_links),
            trust=self.trust.current() if self.trust is not None else None,
            host=host_installed(self.exclude),
        )


async def start_index_mirror(
    index_url: str, trust: TrustPolicy, dest: Path, *, poll: float = 5.0
) -> asyncio.Task[None]:
    """Mirror the trust file's wheels from ``index_url`` into ``dest`` once, then keep it.

    The first pass runs before this returns, so the plugins it brings load at start-up;
    if the index is down it is logged (the daemon starts with what ``dest`` holds) and
    the background task retries. Cancel the returned task to stop.
    """
    from controllerbus.errors import LoaderError
    from controllerbus.loader.index import IndexClient
    from controllerbus.loader.wheelcache import mirror_forever, mirror_trusted

    client = IndexClient(index_url)
    await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
    try:
        report = await asyncio.to_thread(mirror_trusted, client, trust.current(), dest)
        logger.info(
            "index %s: %d wheel(s) mirrored into %s, %d already there, %d error(s)",
            index_url,
            len(report.downloaded),
            dest,
            len(report.present),
            len(report.errors),
        )
    except LoaderError as exc:
        logger.error("%s", exc)
    return asyncio.create_task(
        mirror_forever(client, trust, dest, poll=poll), name=f"index mirror {index_url}"
    )
