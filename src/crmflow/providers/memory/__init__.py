"""In-process calendar provider: :class:`MemoryCalendar`.

A first-class implementation of ``crmflow.domain.calendar.CalendarProvider``
that passes the same contract suite as the real adapters
(``tests/sync/contract.py``), with knobs that inject the faults real providers
show. Used by the sync engine's tests; imports only the domain and
``providers.base``, never another provider package.
"""

from __future__ import annotations

from crmflow.providers.memory._calendar import (
    WRITES,
    Call,
    DuplicateCreate,
    MemoryCalendar,
    Method,
    Stored,
)

__all__ = ["WRITES", "Call", "DuplicateCreate", "MemoryCalendar", "Method", "Stored"]
