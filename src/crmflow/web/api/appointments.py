"""``/api/appointments``: the organization's appointments."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from crmflow.errors import ValidationFailed
from crmflow.store.repositories import AppointmentRepository
from crmflow.web.api._etag import expected_version, set_etag
from crmflow.web.api.schemas import AppointmentIn, AppointmentOut, PageOut
from crmflow.web.deps import ServicesDep, TenantDep

router = APIRouter(prefix="/api/appointments", tags=["appointments"])

IfMatch = Annotated[
    str | None, Header(description='Version ETag, e.g. "3"; 409 if stale.')
]


def _aware(value: dt.datetime | None, name: str) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValidationFailed(f"{name} needs a UTC offset, e.g. 2026-05-01T00:00:00Z.")
    return value


@router.get("", response_model=PageOut[AppointmentOut])
async def list_appointments(
    ctx: TenantDep,
    services: ServicesDep,
    start: Annotated[
        dt.datetime | None,
        Query(
            description=(
                "Only appointments with an occurrence ending after this instant"
                " (a series is looked at for four years after it when there is"
                " no end); series then list their occurrences in the range."
            )
        ),
    ] = None,
    end: Annotated[
        dt.datetime | None,
        Query(
            description=(
                "Only appointments with an occurrence starting before this"
                " instant (without start: a series by its first occurrence)."
            )
        ),
    ] = None,
    owner_id: uuid.UUID | None = None,
    include_cancelled: bool = True,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> PageOut[AppointmentOut]:
    """Appointments overlapping ``[start, end)``, earliest first.

    With ``start``, a series counts when one of its occurrences overlaps the
    range (a weekly meeting begun last year is listed for this week), is
    ordered by that occurrence and carries its occurrences in the range.
    Without it, a series is listed by its first occurrence.
    """
    since, until = _aware(start, "start"), _aware(end, "end")
    async with services.db.tenant(ctx) as session:
        repo = AppointmentRepository(session)
        if since is not None:
            page = await repo.overlapping(
                start=since,
                end=until,
                owner_id=owner_id,
                include_cancelled=include_cancelled,
                limit=limit,
                offset=offset,
            )
        else:
            page = await repo.list(
                end=until,
                owner_id=owner_id,
                include_cancelled=include_cancelled,
                limit=limit,
                offset=offset,
            )
    return PageOut[AppointmentOut](
        items=[AppointmentOut.of(a) for a in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=AppointmentOut)
async def create_appointment(
    body: AppointmentIn, ctx: TenantDep, services: ServicesDep, response: Response
) -> AppointmentOut:
    """Create an appointment owned by the caller."""
    draft = body.to_draft()
    async with services.db.tenant(ctx) as session:
        created = await AppointmentRepository(session).create(draft)
    set_etag(response, created.version)
    response.headers["Location"] = f"/api/appointments/{created.id}"
    return AppointmentOut.of(created)


@router.get("/{appointment_id}", response_model=AppointmentOut)
async def get_appointment(
    appointment_id: uuid.UUID, ctx: TenantDep, services: ServicesDep, response: Response
) -> AppointmentOut:
    async with services.db.tenant(ctx) as session:
        found = await AppointmentRepository(session).get(appointment_id)
    set_etag(response, found.version)
    return AppointmentOut.of(found)


@router.put("/{appointment_id}", response_model=AppointmentOut)
async def replace_appointment(
    appointment_id: uuid.UUID,
    body: AppointmentIn,
    ctx: TenantDep,
    services: ServicesDep,
    response: Response,
    if_match: IfMatch = None,
) -> AppointmentOut:
    """Replace every field (owner or admin only)."""
    draft = body.to_draft()
    async with services.db.tenant(ctx) as session:
        saved = await AppointmentRepository(session).update(
            appointment_id, draft, expected_version=expected_version(if_match)
        )
    set_etag(response, saved.version)
    return AppointmentOut.of(saved)


@router.patch("/{appointment_id}", response_model=AppointmentOut)
async def patch_appointment(
    appointment_id: uuid.UUID,
    body: dict[str, object],
    ctx: TenantDep,
    services: ServicesDep,
    response: Response,
    if_match: IfMatch = None,
) -> AppointmentOut:
    """Change some fields; the result is validated like a full body.

    Switching between timed and all-day requires the new time fields, e.g.
    ``{"all_day": true, "start_date": "2026-05-03", "start": null, "end": null}``.
    """
    async with services.db.tenant(ctx) as session:
        repo = AppointmentRepository(session)
        current = AppointmentOut.of(await repo.get(appointment_id))
        base = current.to_input().model_dump(mode="json")
        if body.get("all_day") is True and not current.all_day:
            base.update(start=None, end=None)
        if body.get("all_day") is False and current.all_day:
            base.update(start_date=None, end_date=None)
        merged = AppointmentIn.model_validate({**base, **body})
        saved = await repo.update(
            appointment_id,
            merged.to_draft(),
            expected_version=expected_version(if_match),
        )
    set_etag(response, saved.version)
    return AppointmentOut.of(saved)


@router.delete("/{appointment_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_appointment(
    appointment_id: uuid.UUID,
    ctx: TenantDep,
    services: ServicesDep,
    if_match: IfMatch = None,
) -> Response:
    async with services.db.tenant(ctx) as session:
        await AppointmentRepository(session).delete(
            appointment_id, expected_version=expected_version(if_match)
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
