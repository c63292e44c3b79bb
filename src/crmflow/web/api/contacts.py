"""``/api/contacts``: the organization's contacts."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from crmflow.store.repositories import ContactRepository
from crmflow.web.api._etag import expected_version, set_etag
from crmflow.web.api.schemas import ContactIn, ContactOut, PageOut
from crmflow.web.deps import ServicesDep, TenantDep

router = APIRouter(prefix="/api/contacts", tags=["contacts"])

IfMatch = Annotated[
    str | None, Header(description='Version ETag, e.g. "3"; 409 if stale.')
]


@router.get("", response_model=PageOut[ContactOut])
async def list_contacts(
    ctx: TenantDep,
    services: ServicesDep,
    q: Annotated[
        str | None, Query(max_length=200, description="Matches name, company or email.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> PageOut[ContactOut]:
    async with services.db.tenant(ctx) as session:
        page = await ContactRepository(session).list(q=q, limit=limit, offset=offset)
    return PageOut[ContactOut](
        items=[ContactOut.of(c) for c in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ContactOut)
async def create_contact(
    body: ContactIn, ctx: TenantDep, services: ServicesDep, response: Response
) -> ContactOut:
    async with services.db.tenant(ctx) as session:
        created = await ContactRepository(session).create(body.to_draft())
    set_etag(response, created.version)
    response.headers["Location"] = f"/api/contacts/{created.id}"
    return ContactOut.of(created)


@router.get("/{contact_id}", response_model=ContactOut)
async def get_contact(
    contact_id: uuid.UUID, ctx: TenantDep, services: ServicesDep, response: Response
) -> ContactOut:
    async with services.db.tenant(ctx) as session:
        found = await ContactRepository(session).get(contact_id)
    set_etag(response, found.version)
    return ContactOut.of(found)


@router.put("/{contact_id}", response_model=ContactOut)
async def replace_contact(
    contact_id: uuid.UUID,
    body: ContactIn,
    ctx: TenantDep,
    services: ServicesDep,
    response: Response,
    if_match: IfMatch = None,
) -> ContactOut:
    async with services.db.tenant(ctx) as session:
        saved = await ContactRepository(session).update(
            contact_id, body.to_draft(), expected_version=expected_version(if_match)
        )
    set_etag(response, saved.version)
    return ContactOut.of(saved)


@router.patch("/{contact_id}", response_model=ContactOut)
async def patch_contact(
    contact_id: uuid.UUID,
    body: dict[str, object],
    ctx: TenantDep,
    services: ServicesDep,
    response: Response,
    if_match: IfMatch = None,
) -> ContactOut:
    """Change some fields; the result is validated like a full body."""
    async with services.db.tenant(ctx) as session:
        repo = ContactRepository(session)
        current = ContactOut.of(await repo.get(contact_id))
        base = current.model_dump(
            mode="json",
            include={"name", "email_addresses", "company", "phone", "notes"},
        )
        merged = ContactIn.model_validate({**base, **body})
        saved = await repo.update(
            contact_id, merged.to_draft(), expected_version=expected_version(if_match)
        )
    set_etag(response, saved.version)
    return ContactOut.of(saved)


@router.delete("/{contact_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_contact(
    contact_id: uuid.UUID,
    ctx: TenantDep,
    services: ServicesDep,
    if_match: IfMatch = None,
) -> Response:
    async with services.db.tenant(ctx) as session:
        await ContactRepository(session).delete(
            contact_id, expected_version=expected_version(if_match)
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
