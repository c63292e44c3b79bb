"""Plain records of CRM objects, as repositories hand them out.

Frozen dataclasses: the web layer renders them, the sync engine reads them;
nothing outside ``store/`` ever holds an ORM row.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Generic, TypeVar

from crmflow.domain.appointments import (
    AppointmentStatus,
    ResponseStatus,
    TimeSpan,
)
from crmflow.domain.tenancy import Role


@dataclass(frozen=True, slots=True)
class Organization:
    id: uuid.UUID
    name: str
    slug: str
    #: the acting user's role there
    role: Role


@dataclass(frozen=True, slots=True)
class UserAccount:
    id: uuid.UUID
    email: str
    display_name: str
    is_active: bool
    #: sessions signed in under another epoch are no longer valid
    session_epoch: int = 0


@dataclass(frozen=True, slots=True)
class Member:
    user_id: uuid.UUID
    email: str
    display_name: str
    role: Role
    joined_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ApiTokenInfo:
    """A personal API token as listed; the token itself is shown only once."""

    id: uuid.UUID
    name: str
    prefix: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    expires_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Attendee:
    email: str
    name: str | None = None
    response_status: ResponseStatus = ResponseStatus.NEEDS_ACTION


@dataclass(frozen=True, slots=True)
class AppointmentDraft:
    """Everything a caller sets on an appointment."""

    title: str
    span: TimeSpan
    description: str | None = None
    location: str | None = None
    attendees: tuple[Attendee, ...] = ()
    status: AppointmentStatus = AppointmentStatus.CONFIRMED
    recurrence_rule: str | None = None


@dataclass(frozen=True, slots=True)
class Appointment:
    id: uuid.UUID
    organization_id: uuid.UUID
    owner_id: uuid.UUID
    title: str
    description: str | None
    location: str | None
    span: TimeSpan
    attendees: tuple[Attendee, ...]
    status: AppointmentStatus
    recurrence_rule: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    version: int
    #: every recurrence line of a series (``RRULE:..``, ``EXDATE..``); the
    #: RRULE among them is ``recurrence_rule``
    recurrence: tuple[str, ...] = ()
    #: the series' occurrences that are cancelled or moved
    occurrence_changes: tuple[OccurrenceChange, ...] = ()
    #: a series listed for a time range: its occurrences in that range,
    #: earliest first (empty otherwise)
    occurrences: tuple[TimeSpan, ...] = ()


@dataclass(frozen=True, slots=True)
class OccurrenceChange:
    """One occurrence of a series that does not start where its rule says."""

    #: where the rule puts it: a date (all-day series) or an aware instant
    original_start: dt.date | dt.datetime
    #: where it starts instead; None when it is cancelled
    start: dt.date | dt.datetime | None
    #: where it ends instead (exclusive date for an all-day series); None:
    #: as long after ``start`` as the series' occurrences last
    end: dt.date | dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class ContactDraft:
    name: str
    email_addresses: tuple[str, ...] = ()
    company: str | None = None
    phone: str | None = None
    notes: str | None = None


@dataclass(frozen=True, slots=True)
class Contact:
    id: uuid.UUID
    organization_id: uuid.UUID
    created_by: uuid.UUID | None
    name: str
    email_addresses: tuple[str, ...]
    company: str | None
    phone: str | None
    notes: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    version: int


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing."""

    items: tuple[T, ...]
    total: int
    limit: int
    offset: int
