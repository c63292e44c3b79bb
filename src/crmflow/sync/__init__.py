"""Provider-agnostic two-way sync of CRM appointments with a calendar.

:func:`sync_pair` syncs two sides that both implement
``crmflow.domain.calendar.CalendarProvider``: the CRM (side *a*) and a provider
calendar (side *b*), against a :class:`~crmflow.sync.status.SyncStatusRepository`.
Apart from the errors in ``crmflow.sync.errors`` and the values it takes and
returns, this is the public API of the package.

The algorithm is vdirsyncer's (``vdirsyncer/sync/__init__.py``, itself based on
Edward Z. Yang's "How OfflineIMAP works",
http://blog.ezyang.com/2012/08/how-offlineimap-works/): a status row per ident
with each side's id, version and content hash; change detection by version,
confirmed by content hash; a decision table; per-ident rollback; the
``StorageEmpty`` guard. crmflow adds typed policies (:class:`ConflictPolicy`,
``DeletePolicy``, ``ReadOnlyPolicy``), incremental listing with cursor expiry
handling, re-planning after a stale precondition, idempotent creates and
notification-free writes. It meets
the conformance cases 1-22, 26 and 27; docs/sync.md maps each
to its test.

Modules: ``plan`` (pure decisions), ``engine`` (I/O and the status),
``status`` (the status port and schema), ``errors``.
"""

from __future__ import annotations

from crmflow.sync.engine import (
    ItemError,
    LogEntry,
    SyncResult,
    WriteKind,
    WriteRecord,
    sync_pair,
)
from crmflow.sync.plan import (
    Branch,
    ConflictPolicy,
    ConflictRecord,
    DeletePolicy,
    ReadOnlyPolicy,
    Resolver,
    SyncDirection,
)
from crmflow.sync.status import SideName

__all__ = [
    "Branch",
    "ConflictPolicy",
    "ConflictRecord",
    "DeletePolicy",
    "ItemError",
    "LogEntry",
    "ReadOnlyPolicy",
    "Resolver",
    "SideName",
    "SyncDirection",
    "SyncResult",
    "WriteKind",
    "WriteRecord",
    "sync_pair",
]
