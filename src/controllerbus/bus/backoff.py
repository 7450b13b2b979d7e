"""Exponential backoff with jitter, as cenkalti/backoff's ``ExponentialBackOff``.

The loader controller (docs/bus.md#the-loader-controller) retries a failed controller
with these defaults: initial 0.5 s, multiplier 2, max interval 30 s, max elapsed 60 s,
randomization factor 0.5. Time and randomness are injectable so tests need not sleep for real.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff", "BackoffPolicy"]


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """The constants of an exponential backoff, in seconds."""

    initial_interval: float = 0.5
    multiplier: float = 2.0
    max_interval: float = 30.0
    max_elapsed: float = 60.0
    randomization_factor: float = 0.5


class Backoff:
    """One running backoff: :meth:`next_delay` until it returns ``None`` (exhausted)."""

    def __init__(
        self,
        policy: BackoffPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy or BackoffPolicy()
        self._clock = clock
        self._rand = rand
        self.reset()

    def reset(self) -> None:
        """Start over from the initial interval; elapsed time counts from now."""
        self._interval = self.policy.initial_interval
        self._started = self._clock()

    def elapsed(self) -> float:
        """Seconds since the last :meth:`reset`."""
        return self._clock() - self._started

    def next_delay(self) -> float | None:
        """The next randomised delay, or ``None`` once ``max_elapsed`` is exceeded."""
        policy = self.policy
        delta = policy.randomization_factor * self._interval
        low, high = self._interval - delta, self._interval + delta
        delay = low + self._rand() * (high - low)
        self._interval = min(self._interval * policy.multiplier, policy.max_interval)
        if policy.max_elapsed > 0 and self.elapsed() + delay > policy.max_elapsed:
            # cenkalti stops when the elapsed time *would* exceed the limit.
            return None
        return delay
