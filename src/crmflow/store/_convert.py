"""ORM rows -> domain records (private to ``store``)."""

from __future__ import annotations

from crmflow.domain import crm
from crmflow.domain.appointments import AppointmentStatus, ResponseStatus, TimeSpan
from crmflow.domain.tenancy import Role
from crmflow.store import models


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
    )


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
