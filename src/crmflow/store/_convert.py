"""ORM rows -> domain records (private to ``store``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from crmflow.domain import crm
from crmflow.domain.appointments import AppointmentStatus, ResponseStatus, TimeSpan
from crmflow.domain.calendar import RecurrenceException
from crmflow.domain.recurrence import series_end
from crmflow.domain.tenancy import Role
from crmflow.store import models
from crmflow.store.calendar_json import exceptions_from_json


def appointment(row: models.Appointment) -> crm.Appointment:
    return crm.Appointment(
        id=row.id,
        organization_id=row.organization_id,
        owner_id=row.user_id,
        title=row.title,
        description=row.description,
        location=row.location,
        span=TimeSpan(row.start_at, row.end_at, row.timezone, row.all_day),
        attendees=tuple(
            crm.Attendee(
                email=a["email"],
                name=a.get("name"),
                response_status=ResponseStatus(a.get("response_status", "needsAction")),
            )
            for a in row.attendees
        ),
        status=AppointmentStatus(row.status),
        recurrence_rule=row.recurrence_rule,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
        recurrence=tuple(row.recurrence or ()),
        occurrence_changes=tuple(
            _change(e) for e in exceptions_from_json(row.recurrence_exceptions or [])
        ),
    )


def set_series_end(row: models.Appointment) -> None:
    """Work out ``row.series_end_at`` from the row's span, recurrence lines
    and exceptions (every write of those calls this or
    :func:`series_end_of`)."""
    row.series_end_at = series_end_of(
        TimeSpan(row.start_at, row.end_at, row.timezone, row.all_day),
        row.recurrence or (),
        exceptions_from_json(row.recurrence_exceptions or []),
    )


def series_end_of(
    span: TimeSpan, lines: Sequence[str], exceptions: Iterable[RecurrenceException]
) -> dt.datetime | None:
    """``series_end_at`` of an appointment (see the column)."""
    return series_end(span, lines, tuple(_change(e) for e in exceptions))


def _change(exception: RecurrenceException) -> crm.OccurrenceChange:
    if exception.status is AppointmentStatus.CANCELLED:
        return crm.OccurrenceChange(exception.original_start, None)
    span = exception.span
    if span is None:  # other content, same time
        return crm.OccurrenceChange(exception.original_start, exception.original_start)
    if span.all_day:
        return crm.OccurrenceChange(
            exception.original_start, span.start_date, span.end_date
        )
    return crm.OccurrenceChange(exception.original_start, span.start_at, span.end_at)


def contact(row: models.Contact) -> crm.Contact:
    return crm.Contact(
        id=row.id,
        organization_id=row.organization_id,
        created_by=row.user_id,
        name=row.name,
        email_addresses=tuple(row.email_addresses),
        company=row.company,
        phone=row.phone,
        notes=row.notes,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
    )


def api_token(row: models.ApiToken) -> crm.ApiTokenInfo:
    return crm.ApiTokenInfo(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
    )


def user(row: models.User) -> crm.UserAccount:
    return crm.UserAccount(
        id=row.id,
        email=row.email,
        display_name=row.display_name,
        is_active=row.is_active,
        session_epoch=row.session_epoch,
    )


def organization(row: models.Organization, role: str) -> crm.Organization:
    return crm.Organization(id=row.id, name=row.name, slug=row.slug, role=Role(role))
