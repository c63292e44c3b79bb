"""Optional per-minute request quotas (sliding window over sandbox time).

Google meters API calls per minute over a sliding window, per project and per
user per project (Calendar quota guide: 10,000/min per project, 600/min per
user per project). The sandbox enforces such limits only when
:class:`~crmflow.sandbox.state.SandboxConfig` sets them, so tests can provoke
real quota errors instead of injected faults.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque

__all__ = ["QuotaMeter"]

#: the quota window, in milliseconds
WINDOW_MS = 60_000


class QuotaMeter:
    """Counts requests per key in a sliding one-minute window. Thread-safe."""

    def __init__(self) -> None:
        self._hits: defaultdict[str, deque[int]] = defaultdict(deque)
        self._lock = threading.Lock()

    def admit(self, key: str, limit: int | None, now_ms: int) -> bool:
        """Count a request for ``key``; False when it exceeds ``limit`` (not counted then).

        ``limit`` None means unlimited (nothing is recorded).
        """
        if limit is None:
            return True
        with self._lock:
            hits = self._hits[key]
            while hits and hits[0] <= now_ms - WINDOW_MS:
                hits.popleft()
            if len(hits) >= limit:
                return False
            hits.append(now_ms)
            return True

    def clear(self) -> None:
        """Forget all counts."""
        with self._lock:
            self._hits.clear()
