"""Fault injection: every failure the sandbox can simulate, as one typed knob.

A :class:`Fault` names *what* goes wrong (:class:`FaultKind`), *for whom*
(``user``, ``api``, ``method``) and *how often* (``count`` times, each with
probability ``rate``). Handlers never carry ad-hoc flags: they ask the
:class:`FaultPlan` whether a fault of the kinds they can express fires for the
current request (house style 8.6).

Where each kind takes effect:

* request faults (:data:`REQUEST_FAULTS`) — before the API handler runs, after
  the caller is authenticated (Google checks quota per user, so it must know the
  user first). Errors use the vendor's exact envelope, e.g. Google's 403/429
  ``usageLimits`` bodies from the Calendar errors guide.
* ``latency`` — adds ``latency_ms`` before the request is handled; combines
  with any other fault.
* ``drop_connection`` — the response starts, then the connection is closed
  mid-body; clients see a protocol error / incomplete read.
* ``short_page`` — a list call returns an empty page that still carries a
  ``nextPageToken``. Google: "The number of events in the resulting page may be
  less than this value, or none at all, even if there are more events matching
  the query" (events.list ``maxResults``).
* ``drop_notification`` — a push notification is silently not delivered
  ("Notifications are not 100% reliable", push guide).

Matching is by lower-cased user email, API name (``calendar``, ``gmail``,
``oauth``) and method id (``calendar.events.list``, ``oauth.token``); ``None``
matches anything.
"""

from __future__ import annotations

import random
import secrets
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["ERROR_FAULTS", "REQUEST_FAULTS", "Fault", "FaultKind", "FaultPlan"]


class FaultKind(StrEnum):
    """What goes wrong. Vendor modules map each kind to the vendor's exact response."""

    #: 403 usageLimits/rateLimitExceeded "Rate Limit Exceeded"
    RATE_LIMIT_403 = "rate_limit_403"
    #: 429 usageLimits/rateLimitExceeded "Rate Limit Exceeded"
    RATE_LIMIT_429 = "rate_limit_429"
    #: 403 usageLimits/userRateLimitExceeded "User Rate Limit Exceeded"
    USER_RATE_LIMIT = "user_rate_limit"
    #: 403 usageLimits/quotaExceeded (Calendar "usage limits exceeded")
    QUOTA_EXCEEDED = "quota_exceeded"
    #: 429 usageLimits/rateLimitExceeded "Too many concurrent requests for user" (Gmail)
    CONCURRENT_REQUESTS = "concurrent_requests"
    #: 500 global/backendError "Backend Error"
    BACKEND_ERROR = "backend_error"
    #: 503 "The service is currently unavailable."
    UNAVAILABLE = "unavailable"
    #: 401 global/authError "Invalid Credentials" although the token is valid
    AUTH_ERROR = "auth_error"
    #: extra delay of ``latency_ms`` before handling
    LATENCY = "latency"
    #: response starts, then the connection is closed mid-body
    DROP_CONNECTION = "drop_connection"
    #: a list page comes back empty but with a nextPageToken
    SHORT_PAGE = "short_page"
    #: a push notification is not delivered
    DROP_NOTIFICATION = "drop_notification"


#: kinds answered with an error response instead of running the handler
ERROR_FAULTS: frozenset[FaultKind] = frozenset(
    {
        FaultKind.RATE_LIMIT_403,
        FaultKind.RATE_LIMIT_429,
        FaultKind.USER_RATE_LIMIT,
        FaultKind.QUOTA_EXCEEDED,
        FaultKind.CONCURRENT_REQUESTS,
        FaultKind.BACKEND_ERROR,
        FaultKind.UNAVAILABLE,
        FaultKind.AUTH_ERROR,
    }
)

#: kinds decided once per request, before the handler runs
REQUEST_FAULTS: frozenset[FaultKind] = ERROR_FAULTS | {
    FaultKind.LATENCY,
    FaultKind.DROP_CONNECTION,
}


def _new_fault_id() -> str:
    return "f_" + secrets.token_hex(6)


@dataclass
class Fault:
    """One injection rule. JSON shape of ``POST {base}/_sandbox/faults``."""

    kind: FaultKind
    #: only requests by this user (email); None = any user (and anonymous calls)
    user: str | None = None
    #: only this API ("calendar", "gmail", "oauth"); None = any
    api: str | None = None
    #: only this method id ("calendar.events.list", "oauth.token"); None = any
    method: str | None = None
    #: fire at most this many times, then the rule retires; None = unlimited
    count: int | None = None
    #: probability of firing for a matching request, 0..1
    rate: float = 1.0
    #: value of the Retry-After header (seconds) on error faults; None = no header
    retry_after_s: int | None = None
    #: delay added by ``latency`` faults, in milliseconds
    latency_ms: int = 0
    #: assigned by the plan
    id: str = field(default_factory=_new_fault_id)
    #: how many times the rule fired so far
    fired: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must not be negative")
        if self.user is not None:
            self.user = self.user.lower()

    def matches(self, *, user: str | None, api: str | None, method: str | None) -> bool:
        """True when the rule applies to a request by ``user`` to ``api``/``method``."""
        if self.user is not None and self.user != (user or "").lower():
            return False
        if self.api is not None and self.api != api:
            return False
        return self.method is None or self.method == method


class FaultPlan:
    """The active faults. Thread-safe; see the module docstring."""

    def __init__(self, *, seed: int | None = None) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        # Fault rates are simulation, not security: a seedable PRNG keeps test
        # runs reproducible.
        self._random = random.Random(seed)  # noqa: S311

    def add(self, fault: Fault) -> Fault:
        """Activate ``fault`` and return it."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault_id: str) -> bool:
        """Deactivate the fault with ``fault_id``; False if there was none."""
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) != before

    def clear(self) -> None:
        """Deactivate every fault."""
        with self._lock:
            self._faults.clear()

    def active(self) -> list[Fault]:
        """Return the active faults, oldest first."""
        with self._lock:
            return list(self._faults)

    def draw(
        self,
        kinds: Collection[FaultKind],
        *,
        user: str | None,
        api: str | None,
        method: str | None,
    ) -> list[Fault]:
        """Return the faults of ``kinds`` that fire for this request, oldest first.

        Each returned fault's ``fired`` is incremented; a fault whose ``count``
        is used up is retired. A rule with ``rate < 1`` fires at random.
        """
        fired: list[Fault] = []
        with self._lock:
            for fault in self._faults:
                if fault.kind not in kinds:
                    continue
                if not fault.matches(user=user, api=api, method=method):
                    continue
                if fault.rate < 1.0 and self._random.random() >= fault.rate:
                    continue
                fault.fired += 1
                fired.append(fault)
            self._faults = [
                f for f in self._faults if f.count is None or f.fired < f.count
            ]
        return fired

    def random_int(self, low: int, high: int) -> int:
        """Return a random integer in [low, high] from the plan's seeded generator.

        Used for simulated gaps (Gmail history ids, push message numbers), which
        must be reproducible under a seed but carry no security meaning.
        """
        with self._lock:
            return self._random.randint(low, high)
