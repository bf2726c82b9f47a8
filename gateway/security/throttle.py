"""Rate limits: failed-token throttling per client address and a session-creation token bucket.

Both keep bounded state (an LRU of at most ``max_clients`` keys, expired
entries dropped as they are met) and take an injectable monotonic clock so
they can be tested without waiting.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]

DEFAULT_MAX_CLIENTS = 4096
"""Keys kept at most; the least recently seen one is forgotten first."""


class AuthThrottle:
    """After ``limit`` failed token attempts of one client within ``window_s``, refuse it.

    A throttled client is refused until its oldest failure in the window has
    aged out; while it is refused its requests are neither checked nor
    counted. Successful authentication resets nothing (an attacker holding one
    valid token cannot use it to clear its failures).
    """

    def __init__(self, limit: int, window_s: float, *, max_clients: int = DEFAULT_MAX_CLIENTS,
                 clock: Clock = time.monotonic) -> None:
        if limit < 1 or window_s <= 0 or max_clients < 1:
            raise ValueError("limit and max_clients must be >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def _recent(self, client: str, now: float) -> deque[float] | None:
        failures = self._failures.get(client)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        return failures

    def retry_after(self, client: str) -> float | None:
        """Seconds until *client* may try again, or None when it is not throttled."""
        now = self._clock()
        failures = self._recent(client, now)
        if failures is None or len(failures) < self.limit:
            return None
        return max(failures[0] + self.window_s - now, 0.001)

    def failed(self, client: str) -> None:
        """Record one failed token attempt of *client*."""
        now = self._clock()
        failures = self._recent(client, now)
        if failures is None:
            failures = deque(maxlen=self.limit)
            self._failures[client] = failures
        failures.append(now)
        self._failures.move_to_end(client)
        self._evict(now)

    def _evict(self, now: float) -> None:
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
        # drop a few expired entries from the cold end on every write
        for _ in range(2):
            if not self._failures:
                break
            oldest = next(iter(self._failures))
            if self._recent(oldest, now) is not None:
                break


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TokenBucket:
    """Per-key token bucket: ``burst`` requests at once, then ``rate_per_s`` on average."""

    def __init__(self, rate_per_s: float, burst: int, *, max_clients: int = DEFAULT_MAX_CLIENTS,
                 clock: Clock = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate_per_s must be > 0, burst and max_clients >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float | None:
        """Take one token for *key*: None when allowed, else seconds until one is available."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[key] = bucket
        else:
            bucket.tokens = min(float(self.burst),
                                bucket.tokens + (now - bucket.stamp) * self.rate_per_s)
            bucket.stamp = now
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self.rate_per_s


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))
