"""Errors of the two-way sync engine (after vdirsyncer's ``sync/exceptions.py``).

Each message defaults to the class docstring, as everywhere in crmflow
(``crmflow.errors``); the details are attributes.

Our exception hierarchy::

    SyncError                  the sync of a pair stopped, or one ident was skipped
    ├── SyncConflict           both sides changed an event differently; policy manual
    ├── StorageEmpty           one side suddenly lists nothing; nothing was deleted
    ├── BothReadOnly           neither side accepts writes; nothing to do
    ├── IdentConflict          two items of one side carry the same ical_uid
    ├── PartialSync            a change needs a write to a read-only side (policy error)
    └── StatusSchemaError      the stored sync status cannot be read

Errors about one ident (``SyncConflict``, ``IdentConflict``, ``PartialSync``) go
to the ``on_error`` callback of ``sync_pair`` when one is given, like a failed
write; the others stop the sync before anything is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crmflow.errors import CrmflowError

if TYPE_CHECKING:
    from crmflow.sync.plan import ConflictRecord
    from crmflow.sync.status import SideName


def _doc(error: CrmflowError) -> str:
    """The class docstring on one line: the default message."""
    return " ".join((type(error).__doc__ or "").split())


class SyncError(CrmflowError):
    """The calendar sync stopped; the status is unchanged for what was not done."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or _doc(self))


class SyncConflict(SyncError):
    """An event was changed differently in the CRM and in the calendar; choose
    which version to keep (nothing was overwritten)."""

    def __init__(self, record: ConflictRecord, message: str | None = None) -> None:
        #: both versions of the event
        self.record = record
        self.ident = record.ident
        #: the CRM appointment's id and the calendar event's id
        self.crm_id = record.crm.remote_id
        self.calendar_id = record.calendar.remote_id
        super().__init__(
            message
            or f"{_doc(self)} Event {self.ident!r}: CRM {self.crm_id!r}, "
            f"calendar {self.calendar_id!r}."
        )


class StorageEmpty(SyncError):
    """One side of the sync now lists no events at all although events were
    synced before; nothing was deleted. If it really was emptied on purpose,
    sync again with force_delete."""

    def __init__(
        self, side: SideName, message: str | None = None, *, synced: int = 0
    ) -> None:
        #: the side that lists nothing
        self.side = side
        #: how many events the last sync left in sync
        self.synced = synced
        super().__init__(message or f"{_doc(self)} Empty side: {side}.")


class BothReadOnly(SyncError):
    """Neither side of the sync accepts changes, so there is nothing to sync."""


class IdentConflict(SyncError):
    """Several events of one side carry the same iCalendar UID; crmflow cannot
    tell which one is synced. Delete or change all but one of them."""

    def __init__(
        self,
        side: SideName,
        ident: str,
        remote_ids: tuple[str, ...],
        message: str | None = None,
    ) -> None:
        self.side = side
        self.ident = ident
        #: every item of ``side`` with that UID
        self.remote_ids = remote_ids
        super().__init__(
            message
            or f"{_doc(self)} Side {side}, UID {ident!r}: {', '.join(map(repr, remote_ids))}."
        )


class PartialSync(SyncError):
    """A change would have to be written to a side that is read-only; it was
    not synced (the read-only policy is "error")."""

    def __init__(self, side: SideName, ident: str, message: str | None = None) -> None:
        #: the read-only side
        self.side = side
        self.ident = ident
        super().__init__(message or f"{_doc(self)} Side {side}, UID {ident!r}.")


class StatusSchemaError(SyncError):
    """The stored sync status cannot be read; reset the calendar connection to
    start the sync afresh."""
