"""Tenant-scoped repositories: ORM rows in, domain records out.

Every query carries the tenant predicate of its table's class (see
``crmflow.domain.tenancy`` for who sees what), on SQLite and PostgreSQL alike;
PostgreSQL enforces the same rules again with row level security. An object the
acting user may not see is reported as :class:`~crmflow.errors.NotFound`, never
as "forbidden", so ids of other tenants cannot be probed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from dateutil.rrule import rrule, rrulestr
from icalendar import vRecur
from sqlalchemy import Select, String, Text, cast, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from crmflow.domain import crm
from crmflow.domain.appointments import normalize_rrule
from crmflow.domain.emails import normalize_email
from crmflow.domain.recurrence import never_matches, occurrences
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import Role, TenantContext
from crmflow.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from crmflow.mail.addresses import link_key
from crmflow.store import _convert, models
from crmflow.store.db import tenant_of
from crmflow.store.identity import (
    check_password_strength,
    hash_api_token,
    new_api_token,
)
from crmflow.store.passwords import hash_password

MAX_PAGE = 500
#: occurrences of one series listed with it for a range, at most (a daily
#: series over three months; a longer range is asked for in parts)
OCCURRENCES_LISTED = 100


def _page_bounds(limit: int, offset: int) -> tuple[int, int]:
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed(f"limit must be between 1 and {MAX_PAGE}.")
    if offset < 0:
        raise ValidationFailed("offset must not be negative.")
    return limit, offset


async def _count(session: AsyncSession, stmt: Select[Any]) -> int:
    total = await session.scalar(
        select(func.count()).select_from(stmt.order_by(None).subquery())
    )
    return int(total or 0)


def _check_expected(row_version: int, expected: int | None) -> None:
    if expected is not None and row_version != expected:
        raise Conflict(
            f"This object was changed by someone else (now version {row_version}, "
            f"you edited version {expected}); reload it and try again."
        )


#: how far after its start a new rule must have an occurrence
RULE_REACH = dt.timedelta(days=10 * 366)


def _check_occurs(rule: str, start: dt.datetime) -> None:
    """Expand ``rule`` once from ``start``, so that a rule dateutil cannot
    expand is refused here rather than breaking calendar sync later.

    A rule that can never match (30 February) is refused without asking
    dateutil, which would look for an occurrence until the year 9999
    (seconds of CPU in the request). The first occurrence must come within
    :data:`RULE_REACH` of the start (dateutil still searches further for a
    rule that never matches in another way, e.g. a BYSETPOS past its set).

    Raises:
        ValidationFailed: the rule cannot be expanded or has no occurrence
            in that reach.
    """
    try:
        if never_matches(vRecur.from_ical(rule)):
            raise ValidationFailed(
                "The recurrence rule can never occur: its BYMONTHDAY is in none "
                "of its months (e.g. BYMONTHDAY=30 with BYMONTH=2)."
            )
        parsed = rrulestr(f"RRULE:{rule}", dtstart=start)
        if not isinstance(parsed, rrule):  # one RRULE line gives one rule
            raise ValueError("not a single rule")
        until = getattr(parsed, "_until", None)
        reach = start + RULE_REACH
        # the first occurrence only: COUNT does not change it
        bounded = parsed.replace(
            count=None, until=reach if until is None else min(until, reach)
        )
        first = next(iter(bounded), None)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValidationFailed(f"Invalid recurrence rule: {exc}.") from None
    if first is None:
        raise ValidationFailed(
            "The recurrence rule has no occurrence within ten years of the "
            "start; check its UNTIL and its BY parts."
        )


def _in_range(
    candidates: Sequence[crm.Appointment],
    start: dt.datetime,
    end: dt.datetime | None,
    limit: int,
) -> list[tuple[dt.datetime, crm.Appointment]]:
    """The series among ``candidates`` with an occurrence overlapping
    ``[start, end)``: when the first one starts, and the appointment with
    its occurrences there (at most ``limit``). One whose lines nobody can
    expand counts by its first occurrence."""
    found: list[tuple[dt.datetime, crm.Appointment]] = []
    for appointment in candidates:
        span = appointment.span
        listed = occurrences(
            span,
            appointment.recurrence,
            start,
            end,
            appointment.occurrence_changes,
            limit=limit,
        )
        if listed is None:
            if span.end_at > start and (end is None or span.start_at < end):
                found.append((span.start_at, appointment))
        elif listed:
            found.append(
                (listed[0].start_at, replace(appointment, occurrences=tuple(listed)))
            )
    return found


class AppointmentRepository:
    """Appointments of the acting organization."""

    def __init__(self, session: AsyncSession) -> None:
        self._s = session
        self._ctx: TenantContext = tenant_of(session)

    def _scoped(self) -> Select[Any]:
        return select(models.Appointment).where(
            models.Appointment.organization_id == self._ctx.organization_id
        )

    async def list(
        self,
        *,
        end: dt.datetime | None = None,
        owner_id: uuid.UUID | None = None,
        include_cancelled: bool = True,
        limit: int = 50,
        offset: int = 0,
    ) -> crm.Page[crm.Appointment]:
        """Appointments that begin before ``end`` (all without it), earliest
        first; a series by its first occurrence (:meth:`overlapping` lists
        what happens in a range)."""
        limit, offset = _page_bounds(limit, offset)
        stmt = self._scoped()
        if end is not None:
            stmt = stmt.where(models.Appointment.start_at < end)
        if owner_id is not None:
            stmt = stmt.where(models.Appointment.user_id == owner_id)
        if not include_cancelled:
            stmt = stmt.where(models.Appointment.status != "cancelled")
        total = await _count(self._s, stmt)
        rows = await self._s.scalars(
            stmt.order_by(models.Appointment.start_at, models.Appointment.id)
            .limit(limit)
            .offset(offset)
        )
        return crm.Page(
            tuple(_convert.appointment(r) for r in rows), total, limit, offset
        )

    async def overlapping(
        self,
        *,
        start: dt.datetime,
        end: dt.datetime | None = None,
        owner_id: uuid.UUID | None = None,
        include_cancelled: bool = True,
        limit: int = 50,
        offset: int = 0,
        occurrences_listed: int = OCCURRENCES_LISTED,
    ) -> crm.Page[crm.Appointment]:
        """Appointments with an occurrence overlapping ``[start, end)`` (no
        ``end``: from ``start`` on; a series is looked at for the
        ``domain.recurrence.HORIZON`` after it), ordered by the start of
        their first such occurrence, then id.

        A series is listed once, with its occurrences in the range
        (``occurrences``, earliest first, at most ``occurrences_listed``):
        a weekly meeting that began last year is listed for this week.
        Cancelled occurrences are not occurrences; a moved one is where it was
        moved to. A series whose recurrence lines cannot be read is taken as
        its first occurrence only.

        Cost: appointments that do not repeat are paged in the database; the
        series that may reach into the range (those begun before its end and
        not ended before its start, ``series_end_at``) are expanded here,
        each one.
        """
        limit, offset = _page_bounds(limit, offset)
        if end is not None and end <= start:
            raise ValidationFailed("The range end must be after its start.")
        a = models.Appointment
        stmt = self._scoped()
        if end is not None:
            stmt = stmt.where(a.start_at < end)
        if owner_id is not None:
            stmt = stmt.where(a.user_id == owner_id)
        if not include_cancelled:
            stmt = stmt.where(a.status != "cancelled")
        # one row, one occurrence: the row's own span (no recurrence line;
        # the column holds JSON text, "[]" as written)
        single = cast(a.recurrence, Text) == "[]"
        singles = stmt.where(single, a.end_at > start)
        total = await _count(self._s, singles)
        found: list[tuple[dt.datetime, uuid.UUID, crm.Appointment]] = [
            (row.start_at, row.id, _convert.appointment(row))
            for row in await self._s.scalars(
                singles.order_by(a.start_at, a.id).limit(offset + limit)
            )
        ]
        series = stmt.where(
            ~single, or_(a.series_end_at.is_(None), a.series_end_at > start)
        )
        candidates = [
            _convert.appointment(row) for row in await self._s.scalars(series)
        ]
        # expanding is CPU work of a few milliseconds per series: in a thread,
        # so that the event loop (other requests, the in-process syncs) goes on
        listed = await asyncio.to_thread(
            _in_range, candidates, start, end, occurrences_listed
        )
        found.extend((first, a.id, a) for first, a in listed)
        total += len(listed)
        found.sort(key=lambda item: (item[0], item[1]))
        return crm.Page(
            tuple(item[2] for item in found[offset : offset + limit]),
            total,
            limit,
            offset,
        )

    async def with_attendees(
        self, keys: Iterable[str], *, limit: int = 50
    ) -> Sequence[crm.Appointment]:
        """Appointments, newest first, with an attendee whose address has one of
        these link keys (:func:`crmflow.mail.addresses.link_key`): how a contact
        finds its meetings, by the same rule as its mail."""
        wanted = set(keys)
        if not wanted:
            return []
        # a cheap text prefilter on the JSON column (the local part of each key
        # appears in the stored address), then the exact rule in Python
        stmt = self._scoped().where(
            or_(
                *(
                    cast(models.Appointment.attendees, String).ilike(
                        "%" + k.split("@")[0].replace("%", "").replace("_", "") + "%"
                    )
                    for k in wanted
                )
            )
        )
        rows = await self._s.scalars(
            stmt.order_by(models.Appointment.start_at.desc()).limit(limit * 4)
        )
        found = [
            a
            for a in (_convert.appointment(r) for r in rows)
            if any(link_key(x.email) in wanted for x in a.attendees)
        ]
        return found[:limit]

    async def _row(self, appointment_id: uuid.UUID) -> models.Appointment:
        row: models.Appointment | None = await self._s.scalar(
            self._scoped().where(models.Appointment.id == appointment_id)
        )
        if row is None:
            raise NotFound("Appointment not found.")
        return row

    async def get(self, appointment_id: uuid.UUID) -> crm.Appointment:
        """Raises NotFound for unknown ids and other organizations' appointments."""
        return _convert.appointment(await self._row(appointment_id))

    @staticmethod
    def _apply(row: models.Appointment, draft: crm.AppointmentDraft) -> None:
        title = draft.title.strip()
        if not title:
            raise ValidationFailed("An appointment needs a title.")
        rule = normalize_rrule(draft.recurrence_rule)
        if rule is not None:
            _check_occurs(rule, draft.span.start_at)
        row.title = title
        row.description = draft.description
        row.location = draft.location
        row.start_at = draft.span.start_at
        row.end_at = draft.span.end_at
        row.timezone = draft.span.timezone
        row.all_day = draft.span.all_day
        row.attendees = [
            {
                "email": a.email,
                "name": a.name,
                "response_status": a.response_status.value,
            }
            for a in draft.attendees
        ]
        row.status = draft.status.value
        if rule != row.recurrence_rule or (rule and not row.recurrence):
            # a new rule replaces every recurrence line and drops the exceptions,
            # which belonged to the old rule; an unchanged rule keeps the
            # EXDATEs and overridden occurrences a calendar sync brought
            row.recurrence = [f"RRULE:{rule}"] if rule else []
            row.recurrence_exceptions = []
        row.recurrence_rule = rule
        _convert.set_series_end(row)

    async def create(self, draft: crm.AppointmentDraft) -> crm.Appointment:
        """Create an appointment owned by the acting user."""
        row = models.Appointment(
            organization_id=self._ctx.organization_id, user_id=self._ctx.user_id
        )
        self._apply(row, draft)
        self._s.add(row)
        await self._s.flush()
        return _convert.appointment(row)

    def _check_writable(self, row: models.Appointment) -> None:
        if row.user_id != self._ctx.user_id and not self._ctx.is_admin:
            raise PermissionDenied(
                "Only the owner of this appointment or an organization admin can change it."
            )

    async def update(
        self,
        appointment_id: uuid.UUID,
        draft: crm.AppointmentDraft,
        *,
        expected_version: int | None = None,
    ) -> crm.Appointment:
        """Replace an appointment's fields.

        Raises:
            NotFound: unknown or another organization's appointment.
            PermissionDenied: neither the owner nor an admin.
            Conflict: ``expected_version`` is stale.
        """
        row = await self._row(appointment_id)
        self._check_writable(row)
        _check_expected(row.version, expected_version)
        self._apply(row, draft)
        await self._s.flush()
        return _convert.appointment(row)

    async def delete(
        self, appointment_id: uuid.UUID, *, expected_version: int | None = None
    ) -> None:
        """Delete an appointment (same errors as :meth:`update`)."""
        row = await self._row(appointment_id)
        self._check_writable(row)
        _check_expected(row.version, expected_version)
        await self._s.delete(row)
        await self._s.flush()


class ContactRepository:
    """Contacts of the acting organization; any member may change them."""

    def __init__(self, session: AsyncSession) -> None:
        self._s = session
        self._ctx = tenant_of(session)

    def _scoped(self) -> Select[Any]:
        return select(models.Contact).where(
            models.Contact.organization_id == self._ctx.organization_id
        )

    async def list(
        self, *, q: str | None = None, limit: int = 50, offset: int = 0
    ) -> crm.Page[crm.Contact]:
        """Contacts by name; ``q`` matches name, company or an email address."""
        limit, offset = _page_bounds(limit, offset)
        stmt = self._scoped()
        if q:
            like = f"%{q.strip().lower()}%"
            stmt = stmt.where(
                or_(
                    func.lower(models.Contact.name).like(like),
                    func.lower(models.Contact.company).like(like),
                    func.lower(func.cast(models.Contact.email_addresses, Text)).like(
                        like
                    ),
                )
            )
        total = await _count(self._s, stmt)
        rows = await self._s.scalars(
            stmt.order_by(func.lower(models.Contact.name), models.Contact.id)
            .limit(limit)
            .offset(offset)
        )
        return crm.Page(tuple(_convert.contact(r) for r in rows), total, limit, offset)

    async def _row(self, contact_id: uuid.UUID) -> models.Contact:
        row: models.Contact | None = await self._s.scalar(
            self._scoped().where(models.Contact.id == contact_id)
        )
        if row is None:
            raise NotFound("Contact not found.")
        return row

    async def get(self, contact_id: uuid.UUID) -> crm.Contact:
        """Raises NotFound for unknown ids and other organizations' contacts."""
        return _convert.contact(await self._row(contact_id))

    @staticmethod
    def _apply(row: models.Contact, draft: crm.ContactDraft) -> None:
        name = draft.name.strip()
        if not name:
            raise ValidationFailed("A contact needs a name.")
        addresses: list[str] = []
        for address in draft.email_addresses:
            value = normalize_email(address)
            if value not in addresses:
                addresses.append(value)
        row.name = name
        row.email_addresses = addresses
        row.company = draft.company
        row.phone = draft.phone
        row.notes = draft.notes

    async def create(self, draft: crm.ContactDraft) -> crm.Contact:
        row = models.Contact(
            organization_id=self._ctx.organization_id, user_id=self._ctx.user_id
        )
        self._apply(row, draft)
        self._s.add(row)
        await self._s.flush()
        return _convert.contact(row)

    async def update(
        self,
        contact_id: uuid.UUID,
        draft: crm.ContactDraft,
        *,
        expected_version: int | None = None,
    ) -> crm.Contact:
        row = await self._row(contact_id)
        _check_expected(row.version, expected_version)
        self._apply(row, draft)
        await self._s.flush()
        return _convert.contact(row)

    async def delete(
        self, contact_id: uuid.UUID, *, expected_version: int | None = None
    ) -> None:
        row = await self._row(contact_id)
        _check_expected(row.version, expected_version)
        await self._s.delete(row)
        await self._s.flush()


class ApiTokenRepository:
    """The acting user's personal API tokens in the acting organization."""

    def __init__(self, session: AsyncSession) -> None:
        self._s = session
        self._ctx = tenant_of(session)

    def _scoped(self) -> Select[Any]:
        return select(models.ApiToken).where(
            models.ApiToken.organization_id == self._ctx.organization_id,
            models.ApiToken.user_id == self._ctx.user_id,
            models.ApiToken.revoked_at.is_(None),
        )

    async def list(self) -> list[crm.ApiTokenInfo]:
        rows = await self._s.scalars(
            self._scoped().order_by(models.ApiToken.created_at)
        )
        return [_convert.api_token(r) for r in rows]

    async def create(
        self, name: str, *, expires_at: dt.datetime | None = None
    ) -> tuple[Secret, crm.ApiTokenInfo]:
        """A new token; the plaintext is returned here once and never stored."""
        if not name.strip():
            raise ValidationFailed("A token needs a name, e.g. 'reporting script'.")
        token = new_api_token()
        row = models.ApiToken(
            organization_id=self._ctx.organization_id,
            user_id=self._ctx.user_id,
            name=name.strip()[:100],
            token_hash=hash_api_token(token.reveal()),
            prefix=token.reveal()[:12],
            expires_at=expires_at,
        )
        self._s.add(row)
        await self._s.flush()
        return token, _convert.api_token(row)

    async def revoke(self, token_id: uuid.UUID) -> None:
        row = await self._s.scalar(self._scoped().where(models.ApiToken.id == token_id))
        if row is None:
            raise NotFound("API token not found.")
        row.revoked_at = models.utcnow()
        await self._s.flush()


class MemberRepository:
    """Members of the acting organization; changes need an admin."""

    def __init__(self, session: AsyncSession) -> None:
        self._s = session
        self._ctx = tenant_of(session)

    def _require_admin(self) -> None:
        if not self._ctx.is_admin:
            raise PermissionDenied("Only organization admins can manage members.")

    async def list(self) -> list[crm.Member]:
        rows = await self._s.execute(
            select(models.User, models.UserOrganization)
            .join(
                models.UserOrganization,
                models.UserOrganization.user_id == models.User.id,
            )
            .where(models.UserOrganization.organization_id == self._ctx.organization_id)
            .order_by(models.User.email)
        )
        return [
            crm.Member(u.id, u.email, u.display_name, Role(m.role), m.created_at)
            for u, m in rows
        ]

    async def _membership(self, user_id: uuid.UUID) -> models.UserOrganization:
        row = await self._s.scalar(
            select(models.UserOrganization).where(
                models.UserOrganization.organization_id == self._ctx.organization_id,
                models.UserOrganization.user_id == user_id,
            )
        )
        if row is None:
            raise NotFound("Member not found.")
        return row

    async def _super_admins(self) -> int:
        count = await self._s.scalar(
            select(func.count()).where(
                models.UserOrganization.organization_id == self._ctx.organization_id,
                models.UserOrganization.role.in_(("admin", "super_admin")),
            )
        )
        return int(count or 0)

    def _check_grant(self, role: Role) -> None:
        if role is Role.SUPER_ADMIN and self._ctx.role is not Role.SUPER_ADMIN:
            raise PermissionDenied("Only a super admin can make someone a super admin.")

    async def add_new_user(
        self, email: str, display_name: str, password: str, role: Role
    ) -> crm.Member:
        """Create a user account and make it a member.

        Raises:
            Conflict: an account with this email exists already (use
                :meth:`add_existing_user` through ``email`` lookup in the web layer).
        """
        self._require_admin()
        self._check_grant(role)
        address = normalize_email(email)
        check_password_strength(password)
        user = models.User(
            email=address,
            display_name=display_name.strip() or address.split("@")[0],
            password_hash=hash_password(password),
        )
        taken = await self._s.scalar(
            select(func.count()).where(models.User.email == address)
        )
        if taken:
            raise Conflict(f"A user with email {address} already exists.")
        self._s.add(user)
        try:
            await self._s.flush()
        except IntegrityError as exc:
            # on PostgreSQL another organization's user is invisible to the count
            # above; the unique index still refuses the duplicate
            raise Conflict(f"A user with email {address} already exists.") from exc
        membership = models.UserOrganization(
            user_id=user.id, organization_id=self._ctx.organization_id, role=role.value
        )
        self._s.add(membership)
        await self._s.flush()
        return crm.Member(
            user.id, user.email, user.display_name, role, membership.created_at
        )

    async def change_role(self, user_id: uuid.UUID, role: Role) -> crm.Member:
        self._require_admin()
        self._check_grant(role)
        membership = await self._membership(user_id)
        if (
            Role(membership.role).is_admin
            and not role.is_admin
            and await self._super_admins() <= 1
        ):
            raise Conflict("The organization needs at least one admin.")
        membership.role = role.value
        await self._s.flush()
        return next(m for m in await self.list() if m.user_id == user_id)

    async def remove(self, user_id: uuid.UUID) -> None:
        self._require_admin()
        membership = await self._membership(user_id)
        if Role(membership.role).is_admin and await self._super_admins() <= 1:
            raise Conflict("The organization needs at least one admin.")
        await self._s.execute(
            delete(models.UserOrganization).where(
                models.UserOrganization.organization_id == self._ctx.organization_id,
                models.UserOrganization.user_id == user_id,
            )
        )


def ids(records: Sequence[Any]) -> list[uuid.UUID]:
    """The ``id`` of each record (test and API helper)."""
    return [r.id for r in records]
