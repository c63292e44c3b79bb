"""Calendar accounts: which calendar a user syncs, how, and what each run did.

A calendar account (``calendar_accounts``) is one calendar of a connected
integration (a Google calendar, an Outlook calendar, a CalDAV collection) that
a user chose to keep in sync with their CRM appointments, with its direction,
its conflict strategy, which appointments it exports and what a deletion in the
calendar does. Standard library only.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass, field

from crmflow.domain.calendar import CalendarEvent
from crmflow.domain.integrations import ProviderKey


class Direction(enum.StrEnum):
    """Which way changes flow."""

    TWO_WAY = "two_way"
    #: calendar -> CRM only; changes made in the CRM stay in the CRM
    IMPORT_ONLY = "import_only"
    #: CRM -> calendar only; changes made in the calendar are not imported
    EXPORT_ONLY = "export_only"


class Strategy(enum.StrEnum):
    """What happens when both sides changed an event differently."""

    CRM_WINS = "crm_wins"
    CALENDAR_WINS = "calendar_wins"
    #: the later change wins, by the provider's and the CRM's clocks
    LATEST_WINS = "latest_wins"
    #: nothing is overwritten; a person chooses on the Conflicts page
    MANUAL = "manual"


class ExportScope(enum.StrEnum):
    """Which CRM appointments a calendar receives."""

    #: the user's own appointments that no other of their calendars syncs
    OWN = "own"
    #: only the events that came from this calendar
    NONE = "none"


class DeleteMode(enum.StrEnum):
    """What an event deleted in the calendar does to its appointment."""

    #: the appointment stays, cancelled, and is no longer synced
    CANCEL = "cancel"
    DELETE = "delete"


class SyncType(enum.StrEnum):
    """What started a run (``calendar_sync_log.sync_type``)."""

    MANUAL = "manual"
    SCHEDULED = "scheduled"
    WEBHOOK = "webhook"
    #: everything listed again, no change feed (after a reset or on request)
    FULL = "full"


class RunStatus(enum.StrEnum):
    """How a run ended."""

    RUNNING = "running"
    SUCCESS = "success"
    #: some events could not be synced (they are retried next time)
    PARTIAL = "partial"
    FAILED = "failed"


class ConflictStatus(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class Resolution(enum.StrEnum):
    """A person's choice for a conflict."""

    KEEP_CRM = "keep_crm"
    KEEP_CALENDAR = "keep_calendar"


@dataclass(frozen=True, slots=True)
class CalendarAccountInfo:
    """A synced calendar as its user sees it."""

    id: uuid.UUID
    user_id: uuid.UUID
    #: None when its integration was disconnected (the account is kept, disabled)
    integration_id: uuid.UUID | None
    provider: ProviderKey
    external_calendar_id: str
    name: str
    direction: Direction
    strategy: Strategy
    export_scope: ExportScope
    delete_mode: DeleteMode
    is_enabled: bool
    last_synced_at: dt.datetime | None
    last_sync_status: RunStatus | None
    last_error: str | None
    created_at: dt.datetime
    #: events synced with this calendar now
    mapped_events: int = 0
    #: conflicts waiting for a person
    open_conflicts: int = 0
    #: when the background sync runs next (None: as soon as it can)
    next_sync_at: dt.datetime | None = None
    #: scheduled runs that failed in a row (0 after a success)
    sync_failures: int = 0


@dataclass(frozen=True, slots=True)
class SyncError:
    """One event a run could not sync, in words for the user."""

    message: str
    #: the event's UID (None: the whole run)
    ical_uid: str | None = None
    title: str | None = None
    #: a machine-readable reason where the user can act on it: ``mass_delete``
    #: (confirm the deletion), ``reconnect`` (the grant is gone),
    #: ``rate_limited`` (the provider asked to slow down); and ``interrupted``
    #: (the run's process ended before the run did)
    code: str | None = None
    #: how long the provider asked crmflow to wait (its ``Retry-After``),
    #: in seconds: the schedule does not try again sooner
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class SyncRunInfo:
    """One run: a ``calendar_sync_log`` row."""

    id: uuid.UUID
    calendar_account_id: uuid.UUID | None
    sync_type: SyncType
    direction: Direction
    status: RunStatus
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    duration_ms: int | None = None
    #: appointments created from calendar events
    events_imported: int = 0
    #: calendar events created from appointments
    events_exported: int = 0
    #: updates on either side
    events_updated: int = 0
    #: deletions (cancellations) on either side
    events_deleted: int = 0
    conflicts: int = 0
    errors: tuple[SyncError, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class ConflictInfo:
    """Both versions of an event changed differently, as found."""

    id: uuid.UUID
    calendar_account_id: uuid.UUID
    ical_uid: str
    appointment_id: uuid.UUID | None
    external_event_id: str
    crm_event: CalendarEvent
    crm_updated_at: dt.datetime | None
    calendar_event: CalendarEvent
    calendar_updated_at: dt.datetime | None
    status: ConflictStatus
    resolution: Resolution | None
    created_at: dt.datetime
    resolved_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class CalendarChoice:
    """A calendar an integration offers for syncing."""

    #: the provider's id (Google calendar id, Graph calendar id, CalDAV URL)
    id: str
    name: str
    #: the account may only read it (a subscription, a shared calendar)
    read_only: bool = False
    #: the account's main calendar
    primary: bool = False
