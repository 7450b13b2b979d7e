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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import NormalizedName

from controllerbus.errors import LoaderError
from controllerbus.loader.errors import WheelChanged
from controllerbus.loader.generation import apply_install, plan_install
from controllerbus.loader.hostdeps import HostDistribution
from controllerbus.loader.trust import TrustPolicy
from controllerbus.loader.verify import VerifiedWheel, verify_wheel
from controllerbus.loader.wheelsource import (
    FindLinks,
    Resolution,
    cached_host_distributions,
    host_installed,
    resolve_dependencies,
)

__all__ = ["LoadPolicy", "install_ahead", "install_all_ahead", "start_index_mirror"]

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

    def trust_key(self) -> object:
        """Changes whenever the trust file does (``None`` without one)."""
        return self.trust.key() if self.trust is not None else None

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

    def host_distributions(self) -> Mapping[NormalizedName, HostDistribution]:
        """The host's distributions (cached; the state directory's never count)."""
        return cached_host_distributions(self.exclude)

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


def install_ahead(
    state_dir: Path,
    policy: LoadPolicy,
    wheel: Path,
    verify: Callable[[Path], VerifiedWheel] = verify_wheel,
) -> str | None:
    """Trust-check, verify, resolve and install ``wheel``'s generation; no activation.

    Returns the generation id, or ``None`` for a wheel that is no plugin. Blocking.

    Raises:
        LoaderError: whatever a load would raise for these steps.
    """
    trusted = policy.check_trust(wheel)
    verified = verify(wheel)
    policy.same_bytes(trusted, verified)
    if not verified.entry_points:
        return None
    deps = policy.resolve(verified)
    generation = apply_install(plan_install(state_dir, verified, dependencies=deps.wheels))
    return generation.id


async def install_all_ahead(
    state_dir: Path,
    policy: LoadPolicy,
    wheels: Sequence[Path],
    *,
    workers: int = 4,
    verify: Callable[[Path], VerifiedWheel] = verify_wheel,
) -> set[str]:
    """:func:`install_ahead` for independent wheels in parallel threads.

    Installing is mostly ``fsync`` and file writes, which release the GIL, so a few
    threads overlap well even on two cores. Failures are only logged at debug level:
    the load that follows reports them properly.

    Returns:
        The generation ids installed (or found already installed).
    """
    gate = asyncio.Semaphore(max(1, workers))
    done: set[str] = set()

    async def one(wheel: Path) -> None:
        async with gate:
            try:
                gid = await asyncio.to_thread(install_ahead, state_dir, policy, wheel, verify)
            except LoaderError as exc:
                logger.debug("install ahead of %s failed (the load will say why): %s", wheel, exc)
                return
            if gid is not None:
                done.add(gid)

    await asyncio.gather(*(one(w) for w in wheels))
    return done
