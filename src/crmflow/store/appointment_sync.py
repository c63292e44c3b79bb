"""The database side of a calendar sync run: appointments as events, the status
rows (``calendar_event_mappings``) and the change-feed cursor.

:class:`SyncSession` is the run's unit of work: one write-locked tenant
transaction, opened on first use and committed by :meth:`SyncSession.commit`.
The sync service commits before every call to the provider, so a run never
waits for a provider inside a database transaction (the one request made
ahead, the change feed, runs while the run reads, and is waited for after the
commit), and consecutive CRM writes (an initial import of thousands of events)
share one transaction and one flush.

The functions below take the open session; they know nothing about the sync
engine's types (the services layer adapts them to the engine's ports).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from sqlalchemy import (
    String,
    and_,
    cast,
    delete,
    exists,
    func,
    insert,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from crmflow.domain.appointments import AppointmentStatus, TimeSpan
from crmflow.domain.calendar import CalendarEvent
from crmflow.domain.tenancy import Role, TenantContext
from crmflow.errors import Conflict, NotFound
from crmflow.store import models
from crmflow.store._convert import series_end_of
from crmflow.store.calendar_json import (
    attendees_from_json,
    attendees_to_json,
    exceptions_from_json,
    exceptions_to_json,
)
from crmflow.store.db import Database, tenant_of
from crmflow.store.prebuilt import owned, owner, param

#: ids per ``IN (...)`` list: below SQLite's and PostgreSQL's parameter limits
_CHUNK = 500
#: rows per multi-row INSERT of appointments or status rows (SQLAlchemy's
#: own batch for PostgreSQL's insertmanyvalues is 1,000 rows)
INSERT_ROWS = 1000
_TITLE_MAX = 500
_LOCATION_MAX = 500


_APPOINTMENTS = models.Base.metadata.tables["appointments"]
_MAPPINGS = models.Base.metadata.tables["calendar_event_mappings"]


class _IdText(FunctionElement[str]):
    """A ``Uuid`` column as its canonical text (``str(uuid.UUID)``: lower-case
    8-4-4-4-12), made by the database. A run lists every appointment id it
    syncs; making a ``uuid.UUID`` of each and then a string costs more than
    the query."""

    type = String()
    inherit_cache = True


@compiles(_IdText, "postgresql")
def _id_text_postgresql(element: _IdText, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS TEXT)"


@compiles(_IdText, "sqlite")
def _id_text_sqlite(element: _IdText, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLAlchemy stores a Uuid on SQLite as 32 hex digits without dashes
    column = compiler.process(element.clauses, **kw)
    parts = [(1, 8), (9, 4), (13, 4), (17, 4), (21, 12)]
    return (
        "lower("
        + " || '-' || ".join(
            f"substr({column}, {start}, {length})" for start, length in parts
        )
        + ")"
    )


class SyncSession:
    """One run's database work, committed in groups (see the module doc).

    Not safe for concurrent use: the engine calls one side at a time.
    """

    def __init__(self, db: Database, ctx: TenantContext) -> None:
        self.db = db
        self.ctx = ctx
        self._stack: contextlib.AsyncExitStack | None = None
        self._session: AsyncSession | None = None
        #: appointments added but not sent yet: one multi-row INSERT for all
        self._pending: list[dict[str, Any]] = []
        #: how many transactions this run committed
        self.commits = 0

    async def session(self) -> AsyncSession:
        """The open transaction, begun now if none is open, with every added
        appointment written (so queries see them)."""
        if self._session is None:
            stack = contextlib.AsyncExitStack()
            opened: AsyncSession = await stack.enter_async_context(
                self.db.tenant(self.ctx, write_lock=True)
            )
            self._session, self._stack = opened, stack
        session: AsyncSession = self._session
        if self._pending:
            rows, self._pending = self._pending, []
            for start in range(0, len(rows), INSERT_ROWS):
                await session.execute(
                    insert(_APPOINTMENTS), rows[start : start + INSERT_ROWS]
                )
        return session

    def add_appointment(self, values: dict[str, Any]) -> None:
        """Queue an appointment row; it is written at the next :meth:`session`
        or :meth:`commit`."""
        self._pending.append(values)

    @property
    def queued(self) -> int:
        """Appointment rows queued and not written yet. A caller adding many
        writes them every :data:`INSERT_ROWS` (by calling :meth:`session`), so
        that an initial import never holds them all as parameters."""
        return len(self._pending)

    @property
    def is_open(self) -> bool:
        """Whether a transaction is open."""
        return self._session is not None

    async def commit(self) -> None:
        """Write what is queued and commit the open transaction, if any."""
        if self._pending:
            await self.session()
        stack, self._stack, self._session = self._stack, None, None
        if stack is not None:
            await stack.aclose()
            self.commits += 1

    async def rollback(self) -> None:
        """Drop what is queued and roll the open transaction back, if any."""
        self._pending = []
        stack, self._stack, self._session = self._stack, None, None
        if stack is not None:
            # leaving the transaction's context with an error rolls it back
            with contextlib.suppress(_Rollback):
                await stack.__aexit__(_Rollback, _Rollback(), None)


class _Rollback(Exception):
    """Raised into the transaction's context to roll it back."""


# ------------------------------------------------------------------ appointments


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An appointment as the sync sees it."""

    id: uuid.UUID
    version: int
    owner_id: uuid.UUID
    event: CalendarEvent
    updated_at: Any


def _mapped_here(account_id: Any) -> Any:
    """The ids of the appointments mapped to the account (``account_id``: a
    value or a bound parameter)."""
    return select(models.CalendarEventMapping.appointment_id).where(
        models.CalendarEventMapping.calendar_account_id == account_id,
        models.CalendarEventMapping.appointment_id.is_not(None),
    )


async def listing(
    session: AsyncSession,
    account_id: uuid.UUID,
    *,
    export_own: bool,
    cancelled: bool = True,
) -> dict[str, str]:
    """The appointments this calendar account syncs: ``{id: version}``.

    Those mapped to it (without ``cancelled``: but those cancelled in the CRM
    since the last sync, which the engine then sees as deleted), plus, when
    ``export_own``, the acting user's own appointments that are not cancelled
    and that no other of their calendar accounts syncs (those are the ones to
    export).
    """
    rows = await session.execute(
        _listing(export_own, cancelled),
        {"account": account_id, **owner(_ctx(session))},
    )
    return {row_id: str(version) for row_id, version in rows}


@cache
def _listing(export_own: bool, cancelled: bool) -> Any:
    """:func:`listing`'s query, ``{"account", "org", "user"}``."""
    a = models.Appointment
    m = models.CalendarEventMapping
    account = param("account", m.calendar_account_id)
    condition: Any = a.id.in_(_mapped_here(account))
    if not cancelled:
        condition = and_(condition, not_(_cancelled_since_sync(account)))
    if export_own:
        user = param("user", a.user_id)
        elsewhere = exists().where(
            m.appointment_id == a.id,
            m.user_id == user,
            m.calendar_account_id != account,
        )
        condition = or_(
            condition,
            and_(
                a.user_id == user,
                a.status != AppointmentStatus.CANCELLED.value,
                not_(elsewhere),
            ),
        )
    return select(_IdText(a.id), a.version).where(
        a.organization_id == param("org", a.organization_id), condition
    )


def _cancelled_since_sync(account_id: Any) -> Any:
    """Appointments cancelled in the CRM since the account's last sync: the
    appointment changed from the version the mapping recorded (one imported as
    cancelled, e.g. an Outlook meeting its organizer called off, is not)."""
    a = models.Appointment
    m = models.CalendarEventMapping
    return and_(
        a.status == AppointmentStatus.CANCELLED.value,
        exists().where(
            m.calendar_account_id == account_id,
            m.appointment_id == a.id,
            m.crm_version.is_distinct_from(cast(a.version, String)),
        ),
    )


async def cancelled_since_sync(session: AsyncSession, account_id: uuid.UUID) -> int:
    """How many appointments synced by the account were cancelled in the CRM
    since (what ``listing(cancelled=False)`` leaves out of the mapped ones)."""
    a = models.Appointment
    found = await session.scalar(
        select(func.count()).where(
            a.organization_id == _ctx(session).organization_id,
            a.id.in_(_mapped_here(account_id)),
            _cancelled_since_sync(account_id),
        )
    )
    return int(found or 0)


async def uid_index(session: AsyncSession) -> dict[str, tuple[uuid.UUID, int]]:
    """Every appointment of the organization by iCalendar UID: ``(id, version)``."""
    ctx = _ctx(session)
    a = models.Appointment
    rows = await session.execute(
        select(a.ical_uid, a.id, a.version).where(
            a.organization_id == ctx.organization_id
        )
    )
    return {uid: (row_id, version) for uid, row_id, version in rows}


async def uid_lookup(session: AsyncSession, uid: str) -> tuple[uuid.UUID, int] | None:
    """One appointment of the organization by iCalendar UID: ``(id, version)``."""
    a = models.Appointment
    row = (
        await session.execute(
            select(a.id, a.version).where(
                a.organization_id == _ctx(session).organization_id, a.ical_uid == uid
            )
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


async def uid_lookups(
    session: AsyncSession, uids: Sequence[str]
) -> dict[str, tuple[uuid.UUID, int]]:
    """:func:`uid_lookup` for several UIDs at once; the ones not found are
    left out."""
    org = _ctx(session).organization_id
    found: dict[str, tuple[uuid.UUID, int]] = {}
    for start in range(0, len(uids), _CHUNK):
        rows = await session.execute(
            _BY_UIDS, {"org": org, "uids": list(uids[start : start + _CHUNK])}
        )
        for uid, appointment_id, version in rows:
            found.setdefault(uid, (appointment_id, version))
    return found


async def login_address(session: AsyncSession) -> str | None:
    """The acting user's sign-in address (lower case)."""
    found: str | None = await session.scalar(
        _LOGIN_ADDRESS, {"user": _ctx(session).user_id}
    )
    return found.lower() if found else None


def _uuids(ids: Iterable[str]) -> list[uuid.UUID]:
    out: list[uuid.UUID] = []
    for text in ids:
        try:
            out.append(uuid.UUID(text))
        except ValueError:
            continue  # not an appointment id: it does not exist
    return out


async def fetch(session: AsyncSession, ids: Sequence[str]) -> list[StoredEvent]:
    """The appointments with these ids in the organization; unknown ids are left
    out."""
    ctx = _ctx(session)
    wanted = _uuids(ids)
    out: list[StoredEvent] = []
    for start in range(0, len(wanted), _CHUNK):
        rows = await session.scalars(
            select(models.Appointment).where(
                models.Appointment.organization_id == ctx.organization_id,
                models.Appointment.id.in_(wanted[start : start + _CHUNK]),
            )
        )
        out.extend(
            StoredEvent(r.id, r.version, r.user_id, event_of(r), r.updated_at)
            for r in rows
        )
    return out


def event_of(row: models.Appointment) -> CalendarEvent:
    """An appointment's synced fields."""
    recurrence = tuple(row.recurrence or ())
    if not recurrence and row.recurrence_rule:
        recurrence = (f"RRULE:{row.recurrence_rule}",)
    return CalendarEvent(
        ical_uid=row.ical_uid,
        title=row.title,
        span=TimeSpan(row.start_at, row.end_at, row.timezone, row.all_day),
        description=row.description,
        location=row.location,
        attendees=attendees_from_json(row.attendees),
        status=AppointmentStatus(row.status),
        recurrence=recurrence,
        exceptions=exceptions_from_json(row.recurrence_exceptions or [])
        if recurrence
        else (),
    )


def _fill(row: models.Appointment, event: CalendarEvent) -> None:
    # the columns are bounded; a longer provider value is cut rather than
    # refused, so one odd event cannot block a whole calendar
    row.title = (event.title.strip() or "(no title)")[:_TITLE_MAX]
    row.description = event.description
    row.location = event.location[:_LOCATION_MAX] if event.location else None
    row.start_at = event.span.start_at
    row.end_at = event.span.end_at
    row.timezone = event.span.timezone
    row.all_day = event.span.all_day
    row.attendees = attendees_to_json(event.attendees)
    row.status = event.status.value
    row.recurrence = list(event.recurrence)
    rule = next(
        (line[6:] for line in event.recurrence if line.upper().startswith("RRULE:")),
        None,
    )
    row.recurrence_rule = rule[:500] if rule else None
    row.recurrence_exceptions = exceptions_to_json(event.exceptions)
    row.series_end_at = series_end_of(event.span, event.recurrence, event.exceptions)


def insert_event(uow: SyncSession, event: CalendarEvent) -> uuid.UUID:
    """Queue an appointment owned by the acting user for ``event`` (version 1).

    Consecutive inserts reach the database as one multi-row INSERT at the next
    query or commit (``SyncSession``). The caller has checked that the UID is
    free.
    """
    ctx = uow.ctx
    now = models.utcnow()
    row = models.Appointment(ical_uid=event.ical_uid)
    _fill(row, event)
    appointment_id = uuid.uuid4()
    uow.add_appointment(
        {
            "id": appointment_id,
            "organization_id": ctx.organization_id,
            "user_id": ctx.user_id,
            "ical_uid": event.ical_uid,
            "title": row.title,
            "description": row.description,
            "location": row.location,
            "start_at": row.start_at,
            "end_at": row.end_at,
            "timezone": row.timezone,
            "all_day": row.all_day,
            "attendees": row.attendees,
            "status": row.status,
            "recurrence_rule": row.recurrence_rule,
            "recurrence": row.recurrence,
            "recurrence_exceptions": row.recurrence_exceptions,
            "series_end_at": row.series_end_at,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
    )
    return appointment_id


async def read_ahead(
    session: AsyncSession, ids: Sequence[str]
) -> list[models.Appointment]:
    """Read the appointments ``ids`` into the session, so that
    :func:`update_event` and :func:`remove_event` in this same transaction
    find them without a query each. Unknown and malformed ids are skipped.

    The session holds its rows weakly: the caller keeps the returned list
    while it writes. On PostgreSQL the rows stay locked (``FOR UPDATE``, in
    id order) until the transaction ends, so none changes between this read
    and the write that checks its version.
    """
    a = models.Appointment
    wanted = sorted(_uuids(ids))
    org = _ctx(session).organization_id
    rows: list[models.Appointment] = []
    for start in range(0, len(wanted), _CHUNK):
        rows.extend(
            await session.scalars(
                select(a)
                .where(
                    a.organization_id == org,
                    a.id.in_(wanted[start : start + _CHUNK]),
                )
                .order_by(a.id)
                .with_for_update()
                # a row this transaction read before (a CRM fetch) is read
                # again, locked: its version is the one the write checks
                .execution_options(populate_existing=True)
            )
        )
    return rows


async def _current_row(
    session: AsyncSession, appointment_id: str, expected_version: str
) -> models.Appointment:
    ctx = _ctx(session)
    ids = _uuids([appointment_id])
    row = None
    if ids:
        # by primary key: a row this transaction read already (read_ahead)
        # needs no query
        row = await session.get(models.Appointment, ids[0])
    if row is not None and row.organization_id != ctx.organization_id:
        row = None
    if row is None:
        raise NotFound("The appointment no longer exists.")
    if str(row.version) != expected_version:
        raise Conflict("The appointment changed since it was read.")
    return row


def _replies(
    row: models.Appointment, event: CalendarEvent, addresses: frozenset[str]
) -> dict[str, str]:
    """The responses of ``addresses`` in ``event`` that differ from the
    appointment's attendee entries: ``{address: response status}``."""
    current = {
        str(a.get("email", "")).strip().lower(): a.get("response_status")
        for a in row.attendees
    }
    return {
        email: a.response_status.value
        for a in event.attendees
        if (email := a.email.strip().lower()) in addresses
        and email in current
        and current[email] != a.response_status.value
    }


@dataclass(frozen=True, slots=True)
class Updated:
    """What :func:`update_event` did."""

    version: int
    #: another user's appointment: its owner, and the acting user's own
    #: responses still to apply in the owner's name (:func:`apply_replies`)
    owner_id: uuid.UUID | None = None
    replies: Mapping[str, str] = field(default_factory=dict)


async def update_event(
    session: AsyncSession,
    appointment_id: str,
    event: CalendarEvent,
    *,
    expected_version: str,
    own_addresses: frozenset[str] = frozenset(),
) -> Updated:
    """Overwrite the appointment's synced fields if it is still at
    ``expected_version``.

    An appointment another user owns (a meeting both have in their calendars:
    one appointment, case 23) is the owner's to change: nothing is written
    here; the acting user's own response (attendees at ``own_addresses``) is
    returned for :func:`apply_replies`, everything else stays as the owner's
    sync keeps it.

    Raises:
        NotFound: no such appointment in the organization.
        Conflict: it is at another version.
    """
    row = await _current_row(session, appointment_id, expected_version)
    if row.user_id != _ctx(session).user_id:
        return Updated(row.version, row.user_id, _replies(row, event, own_addresses))
    _fill(row, event)
    await session.flush()
    return Updated(row.version)


async def apply_replies(
    db: Database,
    ctx: TenantContext,
    owner_id: uuid.UUID,
    appointment_id: uuid.UUID,
    replies: Mapping[str, str],
) -> None:
    """Record the acting user's own responses on another user's appointment.

    Appointments are written by their owner only (row level security on
    PostgreSQL), so this transaction acts as the owner, and it changes nothing
    but the response status of the attendee entries at the addresses the
    caller's own calendar answered for.
    """
    owner = TenantContext(owner_id, ctx.organization_id, Role.MEMBER)
    async with db.tenant(owner) as session:
        row = await session.scalar(
            select(models.Appointment).where(
                models.Appointment.organization_id == ctx.organization_id,
                models.Appointment.id == appointment_id,
                models.Appointment.user_id == owner_id,
            )
        )
        if row is None:
            return  # gone, or changed hands meanwhile: nothing to record
        row.attendees = [
            {**a, "response_status": replies[email]}
            if (email := str(a.get("email", "")).strip().lower()) in replies
            else a
            for a in row.attendees
        ]


async def remove_event(
    session: AsyncSession,
    appointment_id: str,
    *,
    expected_version: str,
    cancel: bool,
) -> None:
    """Cancel (``cancel``) or delete the appointment if it is still at
    ``expected_version`` (same errors as :func:`update_event`). Another user's
    appointment is left alone: the event left this user's calendar, not the
    owner's (the caller drops the link)."""
    row = await _current_row(session, appointment_id, expected_version)
    if row.user_id != _ctx(session).user_id:
        return
    if cancel:
        row.status = AppointmentStatus.CANCELLED.value
    else:
        await session.delete(row)
    await session.flush()


# ------------------------------------------------------------------ status rows


@dataclass(frozen=True, slots=True)
class MappingState:
    """One status row: both sides of an event when it was last in sync."""

    ical_uid: str
    crm_item_id: str
    crm_version: str | None
    crm_hash: str
    external_event_id: str
    external_version: str | None
    external_hash: str


@dataclass(frozen=True, slots=True)
class CursorState:
    """The calendar side's change-feed cursor and the listing it continues."""

    token: str
    listing: Mapping[str, str]


#: a status row as loaded: the fields of :class:`MappingState`, in its order
#: (a plain tuple: a run loads every row of its account, and the caller makes
#: its own objects of them)
MappingTuple = tuple[str, str, str | None, str, str, str | None, str]


async def load_mappings(
    session: AsyncSession, account_id: uuid.UUID
) -> tuple[list[MappingTuple], CursorState | None]:
    """The account's status rows (:data:`MappingTuple`) and cursor."""
    rows = await session.execute(_STATUS_ROWS, {"account": account_id})
    states: list[MappingTuple] = list(rows)
    account = (
        await session.execute(_CURSOR, {"account": account_id, **owner(_ctx(session))})
    ).first()
    if account is None:
        raise NotFound("Calendar account not found.")
    token, listing = account
    return states, CursorState(token, dict(listing)) if token else None


async def save_mappings(
    session: AsyncSession,
    account_id: uuid.UUID,
    *,
    removed: Iterable[str],
    written: Sequence[MappingState],
    cursor: CursorState | None,
    synced_at: Any,
) -> None:
    """Replace status rows: delete ``removed`` and ``written`` idents, insert
    ``written`` anew, store the cursor. Deletions go first, so an external id
    that moved from one ident to another never clashes."""
    ctx = _ctx(session)
    gone = sorted(set(removed) | {s.ical_uid for s in written})
    for start in range(0, len(gone), _CHUNK):
        await session.execute(
            _DELETE_STATUS_ROWS,
            {"account": account_id, "uids": gone[start : start + _CHUNK]},
        )
    # Core, not ORM: executemany without per-row ORM bookkeeping; in slices,
    # so that an initial sync's rows are not all built as parameters at once
    for start in range(0, len(written), INSERT_ROWS):
        values = [
            {
                "id": uuid.uuid4(),
                "organization_id": ctx.organization_id,
                "user_id": ctx.user_id,
                "calendar_account_id": account_id,
                "appointment_id": next(iter(_uuids([s.crm_item_id])), None),
                "ical_uid": s.ical_uid,
                "crm_item_id": s.crm_item_id,
                "crm_version": s.crm_version,
                "crm_hash": s.crm_hash,
                "external_event_id": s.external_event_id,
                "external_event_etag": s.external_version,
                "external_hash": s.external_hash,
                "sync_status": "synced",
                "last_synced": synced_at,
                "created_at": synced_at,
            }
            for s in written[start : start + INSERT_ROWS]
        ]
        await session.execute(_INSERT_STATUS_ROWS, values)
    # one UPDATE, no read: every run that wrote something ends here
    stored = await session.execute(
        _STORE_CURSOR,
        {
            "account": account_id,
            **owner(ctx),
            "token": cursor.token if cursor else None,
            "listing": dict(cursor.listing) if cursor else {},
        },
    )
    if not getattr(stored, "rowcount", 0):
        raise NotFound("Calendar account not found.")


def _ctx(session: AsyncSession) -> TenantContext:
    return tenant_of(session)


# ---------------------------------------------------------------- prebuilt
# The statements every sync run executes (see crmflow.store.prebuilt).

_A = models.Appointment
_M = models.CalendarEventMapping
_CA = models.CalendarAccount

#: ``{"org", "uids"}``: appointments of the organization by UID
_BY_UIDS = select(_A.ical_uid, _A.id, _A.version).where(
    _A.organization_id == param("org", _A.organization_id),
    _A.ical_uid.in_(param("uids", _A.ical_uid, expanding=True)),
)

#: ``{"user"}``: the user's sign-in address
_LOGIN_ADDRESS = select(models.User.email).where(
    models.User.id == param("user", models.User.id)
)

#: ``{"account"}``: the account's status rows (:data:`MappingTuple`)
_STATUS_ROWS = select(
    _M.ical_uid,
    _M.crm_item_id,
    _M.crm_version,
    _M.crm_hash,
    _M.external_event_id,
    _M.external_event_etag,
    _M.external_hash,
).where(
    _M.calendar_account_id == param("account", _M.calendar_account_id),
    _M.ical_uid != "",
)

#: ``{"account", "org", "user"}``: the account's change-feed cursor (the two
#: columns, not the ORM row: one JSON document fewer to read)
_CURSOR = select(_CA.sync_cursor, _CA.sync_cursor_listing).where(
    _CA.id == param("account", _CA.id), *owned(_CA)
)

#: ``{"account", "uids"}``: status rows to replace or remove
_DELETE_STATUS_ROWS = (
    delete(_M)
    .where(
        _M.calendar_account_id == param("account", _M.calendar_account_id),
        _M.ical_uid.in_(param("uids", _M.ical_uid, expanding=True)),
    )
    .execution_options(synchronize_session=False)
)

#: one dict per row (every column): new status rows
_INSERT_STATUS_ROWS = insert(_MAPPINGS)

#: ``{"account", "org", "user", "token", "listing"}``: store the cursor
_STORE_CURSOR = (
    update(_CA)
    .where(_CA.id == param("account", _CA.id), *owned(_CA))
    .values(
        sync_cursor=param("token", _CA.sync_cursor),
        sync_cursor_listing=param("listing", _CA.sync_cursor_listing),
    )
    .execution_options(synchronize_session=False)
)
