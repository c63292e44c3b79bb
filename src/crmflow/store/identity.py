"""Sign-in, organization membership, personal API tokens, and provisioning.

Sign-in runs before any tenant exists, so it uses the narrow lookup transactions
of :class:`~crmflow.store.db.Database` (``login_lookup``/``as_user``), which on
PostgreSQL make exactly one user or token row visible. Provisioning
(``provision_*``) runs on the admin (migration role) database from the CLI and the
demo seeder.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import uuid

from sqlalchemy import func, select, update

from crmflow.domain import crm
from crmflow.domain.emails import normalize_email
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import Role, TenantContext
from crmflow.errors import Conflict, NotFound, ValidationFailed
from crmflow.store import _convert, models
from crmflow.store.db import Database
from crmflow.store.passwords import MIN_PASSWORD_LENGTH, hash_password, verify_password

TOKEN_PREFIX = "crm_"  # noqa: S105 - a public marker, not a secret
_TOKEN_BYTES = 32  # 256 random bits


def hash_api_token(token: str) -> str:
    """SHA-256 of an API token (tokens are 256-bit random, so no salt is needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def authenticate_password(
    db: Database, email: str, password: str
) -> crm.UserAccount | None:
    """The active user with ``email`` and ``password``, or None.

    Unknown users cost the same argon2 verification as known ones.
    """
    try:
        address = normalize_email(email)
    except ValidationFailed:
        verify_password(None, password)
        return None
    async with db.login_lookup(email=address) as session:
        row = await session.scalar(
            select(models.User).where(models.User.email == address)
        )
    if row is None or not row.is_active:
        verify_password(None, password)
        return None
    return _convert.user(row) if verify_password(row.password_hash, password) else None


async def get_user(db: Database, user_id: uuid.UUID) -> crm.UserAccount:
    """The user's own account.

    Raises:
        NotFound: no such active user.
    """
    async with db.as_user(user_id) as session:
        row = await session.get(models.User, user_id)
    if row is None or not row.is_active:
        raise NotFound("Your account no longer exists or was deactivated.")
    return _convert.user(row)


async def organizations_of(db: Database, user_id: uuid.UUID) -> list[crm.Organization]:
    """The organizations ``user_id`` belongs to, by name."""
    async with db.as_user(user_id) as session:
        rows = await session.execute(
            select(models.Organization, models.UserOrganization.role)
            .join(
                models.UserOrganization,
                models.UserOrganization.organization_id == models.Organization.id,
            )
            .where(models.UserOrganization.user_id == user_id)
            .order_by(models.Organization.name)
        )
        return [_convert.organization(org, role) for org, role in rows]


async def enter_organization(
    db: Database, user_id: uuid.UUID, organization_id: uuid.UUID | None = None
) -> TenantContext:
    """Verify membership and return the tenant context to act in.

    ``organization_id=None`` picks the user's first organization by name.

    Raises:
        NotFound: the user is not a member of that organization (or of any).
    """
    orgs = await organizations_of(db, user_id)
    for org in orgs:
        if organization_id is None or org.id == organization_id:
            return TenantContext(user_id=user_id, organization_id=org.id, role=org.role)
    raise NotFound("You are not a member of this organization.")


async def authenticate_api_token(db: Database, token: str) -> TenantContext | None:
    """The tenant an API token acts as, or None when unknown, revoked or expired.

    Records ``last_used_at``.
    """
    if not token.startswith(TOKEN_PREFIX):
        return None
    digest = hash_api_token(token)
    now = models.utcnow()
    async with db.login_lookup(token_hash=digest) as session:
        row = await session.scalar(
            select(models.ApiToken).where(models.ApiToken.token_hash == digest)
        )
        if row is None or row.revoked_at is not None:
            return None
        if row.expires_at is not None and row.expires_at <= now:
            return None
        user_id, org_id = row.user_id, row.organization_id
    try:
        ctx = await enter_organization(db, user_id, org_id)
    except NotFound:
        return None
    async with db.tenant(ctx) as session:
        await session.execute(
            update(models.ApiToken)
            .where(models.ApiToken.token_hash == digest)
            .values(last_used_at=now)
        )
    return ctx


async def change_password(
    db: Database, user_id: uuid.UUID, current: str, new: str
) -> int:
    """Replace the user's password after checking the current one, and end every
    other session.

    Returns:
        The new session epoch (the caller re-stamps its own session with it).

    Raises:
        ValidationFailed: the current password is wrong or the new one too short.
    """
    check_password_strength(new)
    async with db.as_user(user_id) as session:
        row = await session.get(models.User, user_id)
        if row is None or not verify_password(row.password_hash, current):
            raise ValidationFailed("The current password is not correct.")
        row.password_hash = hash_password(new)
        epoch: int = row.session_epoch + 1
        row.session_epoch = epoch
        return epoch


async def end_all_sessions(db: Database, user_id: uuid.UUID) -> int:
    """Invalidate every UI session of the user ("sign out everywhere").

    Returns:
        The new session epoch.
    """
    async with db.as_user(user_id) as session:
        row = await session.get(models.User, user_id)
        if row is None:
            raise NotFound("Your account no longer exists.")
        epoch: int = row.session_epoch + 1
        row.session_epoch = epoch
        return epoch


def check_password_strength(password: str) -> None:
    """Raises ValidationFailed when ``password`` is too short."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"A password needs at least {MIN_PASSWORD_LENGTH} characters."
        )


def new_api_token() -> Secret:
    """A fresh random API token (shown to the user once, stored only hashed)."""
    return Secret(TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES))


# ------------------------------------------------------------------ provisioning


def _slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:90] or "org"


async def provision_organization(
    admin: Database, name: str, slug: str | None = None
) -> uuid.UUID:
    """Create an organization (admin database). Returns its id.

    Raises:
        Conflict: the slug is taken.
        ValidationFailed: empty name.
    """
    if not name.strip():
        raise ValidationFailed("An organization needs a name.")
    wanted = slug or _slugify(name)
    async with admin.admin() as session:
        taken = await session.scalar(
            select(func.count()).where(models.Organization.slug == wanted)
        )
        if taken:
            raise Conflict(f"An organization with slug {wanted!r} already exists.")
        org = models.Organization(name=name.strip(), slug=wanted)
        session.add(org)
        await session.flush()
        return org.id


async def provision_user(
    admin: Database,
    email: str,
    password: str,
    *,
    display_name: str | None = None,
    organization_id: uuid.UUID | None = None,
    role: Role = Role.MEMBER,
) -> uuid.UUID:
    """Create a user, optionally as a member of an organization (admin database).

    Raises:
        Conflict: a user with this email exists.
        ValidationFailed: bad email or weak password.
    """
    address = normalize_email(email)
    check_password_strength(password)
    async with admin.admin() as session:
        exists = await session.scalar(
            select(func.count()).where(models.User.email == address)
        )
        if exists:
            raise Conflict(f"A user with email {address} already exists.")
        user = models.User(
            email=address,
            display_name=(display_name or address.split("@")[0]).strip(),
            password_hash=hash_password(password),
        )
        session.add(user)
        await session.flush()
        if organization_id is not None:
            session.add(
                models.UserOrganization(
                    user_id=user.id, organization_id=organization_id, role=role.value
                )
            )
        return user.id


async def find_user(admin: Database, email: str) -> uuid.UUID | None:
    """The id of the active user with ``email`` (admin database)."""
    async with admin.admin() as session:
        found: uuid.UUID | None = await session.scalar(
            select(models.User.id).where(
                models.User.email == email.strip().lower(),
                models.User.is_active.is_(True),
            )
        )
        return found


async def find_organization(admin: Database, slug: str) -> uuid.UUID | None:
    """The id of the organization with ``slug`` (admin database)."""
    async with admin.admin() as session:
        found: uuid.UUID | None = await session.scalar(
            select(models.Organization.id).where(models.Organization.slug == slug)
        )
        return found


def expiry_from_days(days: int | None) -> dt.datetime | None:
    """``days`` from now, or None for a token that never expires."""
    if days is None:
        return None
    if days < 1 or days > 3650:
        raise ValidationFailed("A token lives between 1 and 3650 days.")
    return models.utcnow() + dt.timedelta(days=days)
