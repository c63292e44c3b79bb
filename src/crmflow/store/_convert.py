"""ORM rows -> domain records (private to ``store``)."""

from __future__ import annotations

from crmflow.domain import crm
from crmflow.domain.appointments import AppointmentStatus, ResponseStatus, TimeSpan
from crmflow.domain.calendar import RecurrenceException
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


def _change(exception: RecurrenceException) -> crm.OccurrenceChange:
    if exception.status is AppointmentStatus.CANCELLED:
        return crm.OccurrenceChange(exception.original_start, None)
    span = exception.span
    if span is None:  # other content, same time
        return crm.OccurrenceChange(exception.original_start, exception.original_start)
    start = span.start_date if span.all_day else span.start_at
    return crm.OccurrenceChange(exception.original_start, start)


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
