"""Request and response bodies of the JSON API (pydantic), and their mapping to
domain records. Validation errors come back as 422 with the field named."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Generic, Self, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from crmflow.domain import crm
from crmflow.domain.appointments import (
    AppointmentStatus,
    ResponseStatus,
    TimeSpan,
    all_day_span,
    timed_span,
    zone,
)
from crmflow.domain.emails import normalize_email
from crmflow.domain.tenancy import Role
from crmflow.errors import ValidationFailed

T = TypeVar("T")

Title = Annotated[str, Field(min_length=1, max_length=500)]


def _email(value: str) -> str:
    try:
        return normalize_email(value)
    except ValidationFailed as exc:
        raise ValueError(exc.message) from None


#: an address, normalized to lower case
EmailStr = Annotated[str, Field(max_length=320), AfterValidator(_email)]


class Strict(BaseModel):
    """Unknown fields are an error, so typos do not silently drop data."""

    model_config = ConfigDict(extra="forbid")


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class AttendeeIn(Strict):
    email: EmailStr
    name: str | None = Field(default=None, max_length=200)
    response_status: ResponseStatus = ResponseStatus.NEEDS_ACTION


class AppointmentIn(Strict):
    """A timed appointment gives ``start``/``end``; an all-day one gives
    ``all_day: true`` with ``start_date`` and optional exclusive ``end_date``."""

    title: Title
    description: str | None = Field(default=None, max_length=20_000)
    location: str | None = Field(default=None, max_length=500)
    all_day: bool = False
    start: dt.datetime | None = Field(
        default=None,
        description="Start; without an offset it is wall-clock time in `timezone`.",
    )
    end: dt.datetime | None = None
    start_date: dt.date | None = None
    end_date: dt.date | None = Field(
        default=None,
        description="Exclusive: a one-day appointment on 3 May ends on 4 May.",
    )
    timezone: str = Field(
        default="UTC", description="IANA time zone, e.g. Europe/Berlin."
    )
    attendees: list[AttendeeIn] = Field(default_factory=list, max_length=500)
    status: AppointmentStatus = AppointmentStatus.CONFIRMED
    recurrence_rule: str | None = Field(
        default=None,
        max_length=500,
        description="RFC 5545 RRULE, e.g. FREQ=WEEKLY;BYDAY=MO.",
    )

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if self.all_day:
            if self.start_date is None:
                raise ValueError("an all-day appointment needs start_date")
            if self.start is not None or self.end is not None:
                raise ValueError(
                    "an all-day appointment takes start_date/end_date, not start/end"
                )
        else:
            if self.start is None or self.end is None:
                raise ValueError(
                    "a timed appointment needs start and end (or set all_day)"
                )
            if self.start_date is not None or self.end_date is not None:
                raise ValueError("start_date/end_date are for all-day appointments")
        try:
            zone(self.timezone)
        except ValidationFailed as exc:
            raise ValueError(exc.message) from None
        return self

    def to_draft(self) -> crm.AppointmentDraft:
        """The domain draft (raises ValidationFailed for domain rules)."""
        if self.all_day:
            assert self.start_date is not None  # noqa: S101 - checked by _shape
            span = all_day_span(self.start_date, self.end_date, self.timezone)
        else:
            assert self.start is not None  # noqa: S101 - checked by _shape
            assert self.end is not None  # noqa: S101
            span = timed_span(self.start, self.end, self.timezone)
        return crm.AppointmentDraft(
            title=self.title,
            span=span,
            description=self.description,
            location=self.location,
            attendees=tuple(
                crm.Attendee(a.email, a.name, a.response_status) for a in self.attendees
            ),
            status=self.status,
            recurrence_rule=self.recurrence_rule,
        )


class AttendeeOut(BaseModel):
    email: str
    name: str | None
    response_status: ResponseStatus


class OccurrenceOut(BaseModel):
    """One occurrence of a series, in the series' time zone."""

    start: dt.datetime
    end: dt.datetime
    start_date: dt.date | None
    end_date: dt.date | None = Field(description="Exclusive end date (all-day only).")

    @classmethod
    def of(cls, span: TimeSpan) -> OccurrenceOut:
        tz = zone(span.timezone)
        return cls(
            start=span.start_at.astimezone(tz),
            end=span.end_at.astimezone(tz),
            start_date=span.start_date if span.all_day else None,
            end_date=span.end_date if span.all_day else None,
        )


class AppointmentOut(BaseModel):
    id: uuid.UUID
    owner_id: uuid.UUID
    title: str
    description: str | None
    location: str | None
    all_day: bool
    start: dt.datetime = Field(description="Start in the appointment's time zone.")
    end: dt.datetime
    start_date: dt.date | None
    end_date: dt.date | None = Field(description="Exclusive end date (all-day only).")
    timezone: str
    attendees: list[AttendeeOut]
    status: AppointmentStatus
    recurrence_rule: str | None
    occurrences: list[OccurrenceOut] | None = Field(
        default=None,
        description=(
            "A series listed for a range (start given): its occurrences in"
            " the range, earliest first, at most 100; null otherwise."
        ),
    )
    created_at: dt.datetime
    updated_at: dt.datetime
    version: int

    @classmethod
    def of(cls, a: crm.Appointment) -> AppointmentOut:
        tz = zone(a.span.timezone)
        return cls(
            id=a.id,
            owner_id=a.owner_id,
            title=a.title,
            description=a.description,
            location=a.location,
            all_day=a.span.all_day,
            start=a.span.start_at.astimezone(tz),
            end=a.span.end_at.astimezone(tz),
            start_date=a.span.start_date if a.span.all_day else None,
            end_date=a.span.end_date if a.span.all_day else None,
            timezone=a.span.timezone,
            attendees=[
                AttendeeOut(
                    email=x.email, name=x.name, response_status=x.response_status
                )
                for x in a.attendees
            ],
            status=a.status,
            recurrence_rule=a.recurrence_rule,
            occurrences=[OccurrenceOut.of(o) for o in a.occurrences]
            if a.occurrences
            else None,
            created_at=a.created_at,
            updated_at=a.updated_at,
            version=a.version,
        )

    def to_input(self) -> AppointmentIn:
        """This appointment as an input body (the base of a PATCH)."""
        return AppointmentIn(
            title=self.title,
            description=self.description,
            location=self.location,
            all_day=self.all_day,
            start=None if self.all_day else self.start,
            end=None if self.all_day else self.end,
            start_date=self.start_date,
            end_date=self.end_date,
            timezone=self.timezone,
            attendees=[
                AttendeeIn(
                    email=x.email, name=x.name, response_status=x.response_status
                )
                for x in self.attendees
            ],
            status=self.status,
            recurrence_rule=self.recurrence_rule,
        )


class ContactIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    email_addresses: list[EmailStr] = Field(default_factory=list, max_length=50)
    company: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=50)
    notes: str | None = Field(default=None, max_length=20_000)

    def to_draft(self) -> crm.ContactDraft:
        return crm.ContactDraft(
            name=self.name,
            email_addresses=tuple(str(e) for e in self.email_addresses),
            company=self.company,
            phone=self.phone,
            notes=self.notes,
        )


class ContactOut(BaseModel):
    id: uuid.UUID
    name: str
    email_addresses: list[str]
    company: str | None
    phone: str | None
    notes: str | None
    created_by: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime
    version: int

    @classmethod
    def of(cls, c: crm.Contact) -> ContactOut:
        return cls(
            id=c.id,
            name=c.name,
            email_addresses=list(c.email_addresses),
            company=c.company,
            phone=c.phone,
            notes=c.notes,
            created_by=c.created_by,
            created_at=c.created_at,
            updated_at=c.updated_at,
            version=c.version,
        )


class OrganizationOut(BaseModel):
    id: uuid.UUID
    name: str
    slug: str
    role: Role


class MeOut(BaseModel):
    id: uuid.UUID
    email: str
    display_name: str
    organization: OrganizationOut


class MemberIn(Strict):
    email: EmailStr
    display_name: str = Field(default="", max_length=200)
    password: str = Field(min_length=8, max_length=500, description="Initial password.")
    role: Role = Role.MEMBER


class MemberRoleIn(Strict):
    role: Role


class MemberOut(BaseModel):
    user_id: uuid.UUID
    email: str
    display_name: str
    role: Role
    joined_at: dt.datetime


class TokenIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class TokenOut(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    expires_at: dt.datetime | None

    @classmethod
    def of(cls, t: crm.ApiTokenInfo) -> TokenOut:
        return cls(
            id=t.id,
            name=t.name,
            prefix=t.prefix,
            created_at=t.created_at,
            last_used_at=t.last_used_at,
            expires_at=t.expires_at,
        )


class TokenCreatedOut(TokenOut):
    token: str = Field(description="Shown only in this response; store it now.")
