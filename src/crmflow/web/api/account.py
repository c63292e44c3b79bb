"""``/api/me``, ``/api/organizations``, ``/api/members`` and ``/api/tokens``."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from crmflow.store.identity import expiry_from_days, get_user, organizations_of
from crmflow.store.repositories import ApiTokenRepository, MemberRepository
from crmflow.web.api.schemas import (
    MemberIn,
    MemberOut,
    MemberRoleIn,
    MeOut,
    OrganizationOut,
    TokenCreatedOut,
    TokenIn,
    TokenOut,
)
from crmflow.web.deps import ServicesDep, TenantDep

router = APIRouter(prefix="/api", tags=["account"])


@router.get("/me", response_model=MeOut)
async def me(ctx: TenantDep, services: ServicesDep) -> MeOut:
    """The caller and the organization their token acts in."""
    user = await get_user(services.db, ctx.user_id)
    org = next(
        o
        for o in await organizations_of(services.db, ctx.user_id)
        if o.id == ctx.organization_id
    )
    return MeOut(
        id=user.id,
        email=user.email,
        display_name=user.display_name,
        organization=OrganizationOut(
            id=org.id, name=org.name, slug=org.slug, role=org.role
        ),
    )


@router.get("/organizations", response_model=list[OrganizationOut])
async def my_organizations(
    ctx: TenantDep, services: ServicesDep
) -> list[OrganizationOut]:
    """Every organization the caller belongs to, with their role."""
    return [
        OrganizationOut(id=o.id, name=o.name, slug=o.slug, role=o.role)
        for o in await organizations_of(services.db, ctx.user_id)
    ]


def _member(m: object) -> MemberOut:
    return MemberOut.model_validate(m, from_attributes=True)


@router.get("/members", response_model=list[MemberOut])
async def list_members(ctx: TenantDep, services: ServicesDep) -> list[MemberOut]:
    """Members of the caller's organization."""
    async with services.db.tenant(ctx) as session:
        return [_member(m) for m in await MemberRepository(session).list()]


@router.post("/members", status_code=status.HTTP_201_CREATED, response_model=MemberOut)
async def add_member(
    body: MemberIn, ctx: TenantDep, services: ServicesDep
) -> MemberOut:
    """Create a user account in the caller's organization (admins only)."""
    async with services.db.tenant(ctx) as session:
        created = await MemberRepository(session).add_new_user(
            str(body.email), body.display_name, body.password, body.role
        )
    return _member(created)


@router.patch("/members/{user_id}", response_model=MemberOut)
async def change_member_role(
    user_id: uuid.UUID, body: MemberRoleIn, ctx: TenantDep, services: ServicesDep
) -> MemberOut:
    """Change a member's role (admins only; the last admin cannot be demoted)."""
    async with services.db.tenant(ctx) as session:
        return _member(await MemberRepository(session).change_role(user_id, body.role))


@router.delete("/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_member(
    user_id: uuid.UUID, ctx: TenantDep, services: ServicesDep
) -> Response:
    """Remove a member from the organization (admins only)."""
    async with services.db.tenant(ctx) as session:
        await MemberRepository(session).remove(user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/tokens", response_model=list[TokenOut])
async def list_tokens(ctx: TenantDep, services: ServicesDep) -> list[TokenOut]:
    """The caller's active API tokens (never the tokens themselves)."""
    async with services.db.tenant(ctx) as session:
        return [TokenOut.of(t) for t in await ApiTokenRepository(session).list()]


@router.post(
    "/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenCreatedOut
)
async def create_token(
    body: TokenIn, ctx: TenantDep, services: ServicesDep
) -> TokenCreatedOut:
    """A new personal API token; the response is the only time it is shown."""
    async with services.db.tenant(ctx) as session:
        secret, info = await ApiTokenRepository(session).create(
            body.name, expires_at=expiry_from_days(body.expires_in_days)
        )
    return TokenCreatedOut(**TokenOut.of(info).model_dump(), token=secret.reveal())


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_token(
    token_id: uuid.UUID, ctx: TenantDep, services: ServicesDep
) -> Response:
    async with services.db.tenant(ctx) as session:
        await ApiTokenRepository(session).revoke(token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
