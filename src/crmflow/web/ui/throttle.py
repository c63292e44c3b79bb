"""Sign-in throttling: failed password attempts per address and per client.

After :data:`MAX_FAILURES` failures for one email address, or from one client
address, within :data:`WINDOW_S`, further attempts are refused with 429 until the
oldest failure leaves the window. Counts live in the process's memory: with
several ``crmflow serve`` processes each counts on its own, which still bounds
guessing to a small multiple of the limit.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

MAX_FAILURES = 10
WINDOW_S = 15 * 60.0  # 15 minutes, in seconds
_MAX_KEYS = 100_000  # bound memory under a spray of random addresses


class LoginThrottle:
    """Sliding-window failure counter keyed by strings (``email:…``, ``ip:…``)."""

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_failures
        self._window_s = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self._window_s:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after_s(self, keys: Iterable[str]) -> float | None:
        """Seconds until an attempt is allowed again, or None when it is allowed."""
        now = self._clock()
        with self._lock:
            waits = [
                times[0] + self._window_s - now
                for key in keys
                if len(times := self._recent(key, now)) >= self._max
            ]
        return max(waits) if waits else None

    def failed(self, keys: Iterable[str]) -> None:
        """Record a failed attempt under every key."""
        now = self._clock()
        with self._lock:
            if len(self._failures) > _MAX_KEYS:
                self._failures.clear()
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, keys: Iterable[str]) -> None:
        """Forget the failures of these keys (a correct password was given)."""
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
