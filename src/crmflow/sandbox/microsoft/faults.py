"""Microsoft fault knobs: the shared :class:`~crmflow.sandbox.faults.FaultPlan` plus Graph-only kinds.

The shared plan's kinds keep their meaning on the Microsoft side, answered in
Microsoft's envelopes:

=====================  ===========================================================
shared kind            Microsoft response
=====================  ===========================================================
rate_limit_403/429,    429 ``TooManyRequests`` "Please retry again later." with
user_rate_limit,       the throttling ``innerError`` and ``Retry-After``
quota_exceeded
concurrent_requests    429 ``ApplicationThrottled`` "Application is over its
                       MailboxConcurrency limit."
backend_error          500 ``generalException``
unavailable            503 ``ServiceUnavailable`` (+ ``Retry-After`` if set)
auth_error             401 ``InvalidAuthenticationToken``
latency, drop_connection, short_page, drop_notification: as documented there
=====================  ===========================================================

Graph-only kinds (:class:`GraphFaultKind`) cover what the shared enum cannot
express: fractional ``Retry-After`` (microsoft-graph.md §6), transient 412s on
any call (≈ 3.5 % observed, checklist 15), ``503 ConcurrentItemSave`` after the
event was actually created, ``504 UnknownError``, and token-endpoint errors
with a chosen AADSTS code (checklist 25). They live in :class:`GraphFaultPlan`
until the shared ``FaultKind`` grows them (see docs/sandbox.md (Part 2)).

API names: ``graph`` and ``identity``; method ids such as ``graph.events.create``
or ``identity.token``.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from crmflow.sandbox.faults import FaultPlan

__all__ = ["GraphFault", "GraphFaultKind", "GraphFaultPlan"]


class GraphFaultKind(StrEnum):
    """Graph- and identity-specific failures."""

    #: 429 TooManyRequests with a fractional Retry-After (``retry_after_s``)
    THROTTLED = "graph_throttled"
    #: 429 ApplicationThrottled "MailboxConcurrency"
    MAILBOX_CONCURRENCY = "graph_mailbox_concurrency"
    #: 412 ErrorIrresolvableConflict with no precondition (even GETs)
    IRRESOLVABLE_CONFLICT = "graph_irresolvable_conflict"
    #: 503 ConcurrentItemSave on create; the item *is* created (``after_write``)
    CONCURRENT_ITEM_SAVE = "graph_concurrent_item_save"
    #: 503 ErrorInternalServerTransientError (Retry-After when ``retry_after_s``)
    TRANSIENT_503 = "graph_transient_503"
    #: 504 UnknownError with an empty message (heavy delta queries)
    GATEWAY_TIMEOUT = "graph_gateway_timeout"
    #: the token endpoint answers AADSTS ``aadsts_code`` (70008, 700082, 50173, 70000, 9002313, 50076, 65001…)
    TOKEN_ERROR = "identity_token_error"  # noqa: S105 - a fault name, not a secret


@dataclass
class GraphFault:
    """One Graph injection rule (same shape as the shared ``Fault`` plus two fields)."""

    kind: GraphFaultKind
    user: str | None = None
    api: str | None = None
    method: str | None = None
    count: int | None = None
    rate: float = 1.0
    #: Retry-After in seconds; fractions allowed ("Retry-After: 2.128")
    retry_after_s: float | None = None
    #: AADSTS code for ``identity_token_error``
    aadsts_code: int = 70008
    #: ``graph_concurrent_item_save``: perform the write before failing
    after_write: bool = True
    id: str = field(default_factory=lambda: "gf_" + secrets.token_hex(6))
    fired: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1")
        if self.user is not None:
            self.user = self.user.lower()

    def as_json(self) -> dict[str, Any]:
        """Control API form."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "user": self.user,
            "api": self.api,
            "method": self.method,
            "count": self.count,
            "rate": self.rate,
            "retry_after_s": self.retry_after_s,
            "aadsts_code": self.aadsts_code,
            "after_write": self.after_write,
            "fired": self.fired,
        }


class GraphFaultPlan:
    """Graph-only faults next to the shared plan. Thread-safe."""

    def __init__(self, shared: FaultPlan) -> None:
        self.shared = shared
        self._faults: list[GraphFault] = []
        self._lock = threading.Lock()

    def add(self, fault: GraphFault) -> GraphFault:
        """Activate ``fault``."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault_id: str) -> bool:
        """Deactivate a Graph fault; False if unknown."""
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) != before

    def clear(self) -> None:
        """Deactivate every Graph fault (the shared plan is cleared by the state)."""
        with self._lock:
            self._faults.clear()

    def active(self) -> list[GraphFault]:
        """Active Graph faults, oldest first."""
        with self._lock:
            return list(self._faults)

    def draw(
        self,
        kinds: Collection[GraphFaultKind],
        *,
        user: str | None,
        api: str | None,
        method: str | None,
    ) -> list[GraphFault]:
        """The Graph faults of ``kinds`` firing for this request (counts consumed)."""
        fired: list[GraphFault] = []
        with self._lock:
            for fault in self._faults:
                if fault.kind not in kinds:
                    continue
                if fault.user is not None and fault.user != (user or "").lower():
                    continue
                if fault.api is not None and fault.api != api:
                    continue
                if fault.method is not None and fault.method != method:
                    continue
                if (
                    fault.rate < 1.0
                    and self.shared.random_int(0, 999_999) >= fault.rate * 1_000_000
                ):
                    continue
                fault.fired += 1
                fired.append(fault)
            self._faults = [
                f for f in self._faults if f.count is None or f.fired < f.count
            ]
        return fired
