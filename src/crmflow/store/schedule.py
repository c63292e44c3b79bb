"""The sync schedule across every tenant: what is due, claiming it, recording
how it went, and an overview for operators.

These queries look at every organization's calendars and mailboxes, so they
run on a session that row level security does not narrow: the migration
(owner) role's database on PostgreSQL, the one database file on SQLite. They
read and write scheduling columns only (``next_sync_at``, ``sync_failures``);
the syncs themselves run as the account's user, in that user's tenant
context, through the services.

Claiming is one conditional UPDATE ("still due?"), so two schedulers that
see the same due account never both run it: the loser's UPDATE matches no
row. The claim moves ``next_sync_at`` past the run's lease, so a scheduler
that dies mid-run leaves the account to be picked up again later.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, and_, bindparam, case, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.schedule import MAX_FAILURES, Schedule, is_failing
from crmflow.domain.tenancy import Role, TenantContext
from crmflow.store import models


class SyncKind(enum.StrEnum):
    """What a scheduled job syncs."""

    CALENDAR = "calendar"
    MAIL = "mail"


#: the PostgreSQL notification channel told when an announced change made an
#: account due (``crmflow worker`` listens; delivered when the transaction
#: commits)
DUE_CHANNEL = "crmflow_due"

_TABLES: dict[SyncKind, Any] = {
    SyncKind.CALENDAR: models.CalendarAccount,
    SyncKind.MAIL: models.EmailAccount,
}


def _prebuilt(build: Any) -> dict[SyncKind, Any]:
    """One statement per kind, built once with bound parameters for what
    changes between calls. The hot paths (a claim per run, a due mark per
    push notification, many a second under load) then skip building the
    statement and working out its cache key, which cost more CPU than
    running it on SQLite."""
    return {kind: build(table) for kind, table in _TABLES.items()}


@dataclass(frozen=True, slots=True)
class DueAccount:
    """An account whose scheduled sync is due, and whom to act as."""

    kind: SyncKind
    account_id: uuid.UUID
    user_id: uuid.UUID
    organization_id: uuid.UUID
    role: Role
    #: failed scheduled runs in a row so far
    failures: int
    #: due because a push notification came in
    pushed: bool = False

    @property
    def ctx(self) -> TenantContext:
        """The account owner's tenant context (the sync runs as them)."""
        return TenantContext(self.user_id, self.organization_id, self.role)


@dataclass(frozen=True, slots=True)
class AccountSchedule:
    """One account's place in the schedule (``crmflow jobs status``, the UI)."""

    kind: SyncKind
    account_id: uuid.UUID
    user_email: str
    name: str
    last_synced_at: dt.datetime | None
    next_sync_at: dt.datetime | None
    failures: int
    last_error: str | None

    @property
    def failing(self) -> bool:
        return is_failing(self.failures)


@dataclass(frozen=True, slots=True)
class ScheduleStats:
    """The schedule at a glance (metrics)."""

    #: accounts due now
    due: int
    #: how long the longest-waiting due account has waited, in seconds
    lag_s: float
    #: accounts that failed MAX_FAILURES times in a row or more
    failing: int


def _aware(value: dt.datetime) -> dt.datetime:
    # aggregates bypass the column type: SQLite hands back naive UTC
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class ExpiringToken:
    """An OAuth integration whose access token is about to end."""

    ctx: TenantContext
    provider: ProviderKey
    kind: IntegrationKind


class ScheduleStore:
    """Scheduling reads and writes on an unscoped session (see the module).

    Its UPDATEs leave the session's loaded objects as they are (no
    ``synchronize_session``, as in the other stores' hot UPDATEs): its callers
    load no account objects, and working out which loaded objects match
    costs every such statement CPU for nothing.
    """

    def __init__(self, session: AsyncSession) -> None:
        self._s = session

    @staticmethod
    def _syncable(table: Any) -> list[Any]:
        found = [table.integration_id.is_not(None)]
        if table is models.CalendarAccount:
            found.append(table.is_enabled.is_(True))
        return found

    @staticmethod
    def _due_at(table: Any, now: dt.datetime) -> Any:
        return and_(
            or_(table.next_sync_at.is_(None), table.next_sync_at <= now),
            or_(table.sync_lease_until.is_(None), table.sync_lease_until < now),
        )

    @staticmethod
    def _owned(table: Any) -> Any:
        """Syncable accounts of active users, with what a run needs to act
        as their owner."""
        return (
            select(
                table.id,
                table.user_id,
                table.organization_id,
                table.next_sync_at,
                table.sync_failures,
                table.sync_pushed,
                models.UserOrganization.role,
            )
            .join(
                models.UserOrganization,
                and_(
                    models.UserOrganization.user_id == table.user_id,
                    models.UserOrganization.organization_id == table.organization_id,
                ),
            )
            .join(models.User, models.User.id == table.user_id)
            .where(*ScheduleStore._syncable(table), models.User.is_active.is_(True))
        )

    async def due(self, now: dt.datetime, *, limit: int) -> list[DueAccount]:
        """Accounts due at ``now``, longest waiting first (never synced first)."""
        found: list[tuple[dt.datetime | None, DueAccount]] = []
        for kind in _TABLES:
            rows = await self._s.execute(_DUE[kind], {"now": now, "limit": limit})
            for row in rows:
                found.append(
                    (
                        row.next_sync_at,
                        DueAccount(
                            kind,
                            row.id,
                            row.user_id,
                            row.organization_id,
                            Role(row.role),
                            row.sync_failures,
                            bool(row.sync_pushed),
                        ),
                    )
                )
        found.sort(key=lambda item: (item[0] is not None, item[0] or now))
        return [due for _at, due in found[:limit]]

    async def claim(
        self,
        kind: SyncKind,
        account_id: uuid.UUID,
        now: dt.datetime,
        until: dt.datetime,
    ) -> bool:
        """Take a due account for one run (False: someone else took it)."""
        result = await self._s.execute(
            _CLAIM[kind], {"account": account_id, "now": now, "until": until}
        )
        return bool(getattr(result, "rowcount", 0))

    async def finish(
        self,
        kind: SyncKind,
        account_id: uuid.UUID,
        *,
        ok: bool,
        schedule: Schedule,
        now: dt.datetime,
        rand: float,
        not_before: dt.datetime | None = None,
    ) -> dt.datetime:
        """Record a scheduled run's outcome; returns when the account is due
        next by its schedule.

        ``not_before``: a failed run is not tried again before this instant
        (the provider's ``Retry-After``), even when the back-off is shorter.

        A push notification that came in while a successful run was under
        way (it may have missed the change) keeps the account due now, and
        on PostgreSQL wakes the workers: one UPDATE decides, so the
        notification's own UPDATE is never overwritten. After a failed run
        the back-off (or ``not_before``) holds even then: the retry syncs
        that change too, and pushes never turn failures into a hot loop.
        """
        failures = 0
        if not ok:
            # the back-off grows with the failures in a row: read them (a
            # success needs no read, it starts the count again)
            before = await self._s.scalar(_FAILURES[kind], {"account": account_id})
            if before is None:  # removed meanwhile
                return schedule.after_success(now, rand)
            failures = before + 1
        when = (
            schedule.after_success(now, rand)
            if ok
            else schedule.after_failure(now, failures, rand)
        )
        if not ok and not_before is not None and not_before > when:
            when = not_before
        params = {"account": account_id, "now": now, "when": when}
        if not ok:
            await self._s.execute(_FAILED[kind], {**params, "failures": failures})
            return when
        if not self._postgres:
            await self._s.execute(_SUCCEEDED[kind], params)
            return when
        pushed = await self._s.scalar(_SUCCEEDED_RETURNING[kind], params)
        if pushed:
            # the notifications of that push found the account leased and
            # did nothing; this one has it claimed now
            await self._notify()
        return when

    @property
    def _postgres(self) -> bool:
        return self._s.get_bind().dialect.name == "postgresql"

    async def _notify(self) -> None:
        """Wake the workers when this transaction commits (PostgreSQL)."""
        # one per transaction: PostgreSQL folds identical notifications
        await self._s.execute(
            text("SELECT pg_notify(:channel, '')"), {"channel": DUE_CHANNEL}
        )

    async def due_now(
        self, kind: SyncKind, account_id: uuid.UUID, now: dt.datetime
    ) -> bool:
        """Make an account due now because a change was announced (a push
        notification, an IMAP IDLE wake-up): its run is logged as a webhook
        run, and on PostgreSQL the workers hear of it when this commits.

        False when an earlier announcement made it due already and no run
        has claimed it since: that one's wake-up is on its way, so a burst
        of notifications costs the workers one claim, not one each. (While
        a scheduled run holds the account, :meth:`finish` wakes the workers
        again; after a manual run the periodic enqueue, within
        ``ENQUEUE_EVERY_S``, or the in-process runner's next look does.)

        An account whose last runs failed keeps its back-off (or the
        provider's ``Retry-After``): the announcement only marks it pushed,
        the retry syncs the change too, and pushes never turn a failing
        account into a retry loop. Its first announcement still returns
        True on SQLite (the in-process runner looks and finds nothing due);
        on PostgreSQL it wakes no worker.
        """
        params = {"account": account_id, "now": now}
        if not self._postgres:
            result = await self._s.execute(_DUE_NOW[kind], params)
            return bool(getattr(result, "rowcount", 0))
        failures = await self._s.scalar(_DUE_NOW_RETURNING[kind], params)
        if failures is None or failures > 0:
            return False
        await self._notify()
        return True

    async def mailboxes(self) -> list[DueAccount]:
        """Every connected mailbox of an active user, whom to act as."""
        table = models.EmailAccount
        rows = await self._s.execute(self._owned(table).order_by(table.created_at))
        return [
            DueAccount(
                SyncKind.MAIL,
                row.id,
                row.user_id,
                row.organization_id,
                Role(row.role),
                row.sync_failures,
            )
            for row in rows
        ]

    async def stats(self, now: dt.datetime) -> ScheduleStats:
        """How many accounts are due and failing, and the longest wait."""
        due = failing = 0
        oldest: dt.datetime | None = None
        for table in _TABLES.values():
            row = (
                await self._s.execute(
                    select(
                        func.count(),
                        func.min(func.coalesce(table.next_sync_at, table.created_at)),
                    ).where(*self._syncable(table), self._due_at(table, now))
                )
            ).one()
            due += int(row[0])
            if row[1] is not None:
                since = _aware(row[1])
                oldest = since if oldest is None else min(oldest, since)
            failing += int(
                await self._s.scalar(
                    select(func.count()).where(
                        *self._syncable(table), table.sync_failures >= MAX_FAILURES
                    )
                )
                or 0
            )
        lag = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
        return ScheduleStats(due=due, lag_s=lag, failing=failing)

    async def expiring_tokens(
        self, before: dt.datetime, *, limit: int
    ) -> list[ExpiringToken]:
        """Connected OAuth integrations whose access token ends before
        ``before`` and that hold a refresh token, soonest first."""
        table = models.UserIntegration
        rows = await self._s.execute(
            select(
                table.user_id,
                table.organization_id,
                table.provider,
                table.kind,
                models.UserOrganization.role,
            )
            .join(
                models.UserOrganization,
                and_(
                    models.UserOrganization.user_id == table.user_id,
                    models.UserOrganization.organization_id == table.organization_id,
                ),
            )
            .join(models.User, models.User.id == table.user_id)
            .where(
                table.refresh_token.is_not(None),
                table.status == "connected",
                table.expires_at.is_not(None),
                table.expires_at < before,
                models.User.is_active.is_(True),
            )
            .order_by(table.expires_at)
            .limit(limit)
        )
        return [
            ExpiringToken(
                TenantContext(r.user_id, r.organization_id, Role(r.role)),
                ProviderKey(r.provider),
                IntegrationKind(r.kind),
            )
            for r in rows
        ]

    async def overview(self) -> list[AccountSchedule]:
        """Every syncable account with its schedule, soonest first."""
        out: list[AccountSchedule] = []
        for kind, table in _TABLES.items():
            name = (
                table.name if table is models.CalendarAccount else table.email_address
            )
            rows = await self._s.execute(
                select(
                    table.id,
                    name.label("name"),
                    models.User.email,
                    table.last_synced_at,
                    table.next_sync_at,
                    table.sync_failures,
                    table.last_error,
                )
                .join(models.User, models.User.id == table.user_id)
                .where(*self._syncable(table))
            )
            out += [
                AccountSchedule(
                    kind,
                    r.id,
                    r.email,
                    r.name,
                    r.last_synced_at,
                    r.next_sync_at,
                    r.sync_failures,
                    r.last_error,
                )
                for r in rows
            ]
        out.sort(
            key=lambda a: (
                a.next_sync_at is not None,
                a.next_sync_at or dt.datetime.min.replace(tzinfo=dt.UTC),
            )
        )
        return out


def _now(table: Any) -> Any:
    return bindparam("now", type_=table.next_sync_at.type)


def _due_query(table: Any) -> Any:
    return (
        ScheduleStore._owned(table)
        .where(ScheduleStore._due_at(table, _now(table)))
        .order_by(table.next_sync_at.is_not(None), table.next_sync_at)
        .limit(bindparam("limit", type_=Integer))
    )


def _claim(table: Any) -> Any:
    return (
        update(table)
        .where(
            table.id == bindparam("account", type_=table.id.type),
            ScheduleStore._due_at(table, _now(table)),
        )
        .values(
            next_sync_at=bindparam("until", type_=table.next_sync_at.type),
            sync_pushed=False,
        )
        .execution_options(synchronize_session=False)
    )


def _finished(table: Any, *, ok: bool) -> Any:
    account = table.id == bindparam("account", type_=table.id.type)
    when = bindparam("when", type_=table.next_sync_at.type)
    if not ok:
        return (
            update(table)
            .where(account)
            .values(
                next_sync_at=when,
                sync_failures=bindparam("failures", type_=table.sync_failures.type),
            )
            .execution_options(synchronize_session=False)
        )
    return (
        update(table)
        .where(account)
        .values(
            # a push that came in meanwhile keeps it due now
            next_sync_at=case((table.sync_pushed.is_(True), _now(table)), else_=when),
            sync_failures=0,
        )
        .execution_options(synchronize_session=False)
    )


def _due_now(table: Any) -> Any:
    now = _now(table)
    return (
        update(table)
        .where(
            table.id == bindparam("account", type_=table.id.type),
            or_(
                table.sync_pushed.is_not(True),
                table.next_sync_at.is_(None),
                and_(table.next_sync_at > now, table.sync_failures == 0),
            ),
        )
        .values(
            next_sync_at=case((table.sync_failures > 0, table.next_sync_at), else_=now),
            sync_pushed=True,
        )
        .execution_options(synchronize_session=False)
    )


#: ``{"now", "limit"}``: the due accounts of a kind, longest waiting first
_DUE = _prebuilt(_due_query)
#: ``{"account", "now", "until"}``: take one for a run if it is still due
_CLAIM = _prebuilt(_claim)
#: ``{"account", "now"}``: an announced change makes it due (:meth:`ScheduleStore.due_now`)
_DUE_NOW = _prebuilt(_due_now)
_DUE_NOW_RETURNING = {
    kind: statement.returning(_TABLES[kind].sync_failures)
    for kind, statement in _DUE_NOW.items()
}
#: ``{"account"}``: the failed runs in a row before this one
_FAILURES = _prebuilt(
    lambda table: select(table.sync_failures).where(
        table.id == bindparam("account", type_=table.id.type)
    )
)
#: ``{"account", "now", "when"}``: a run worked (:meth:`ScheduleStore.finish`)
_SUCCEEDED = _prebuilt(lambda table: _finished(table, ok=True))
_SUCCEEDED_RETURNING = {
    kind: statement.returning(_TABLES[kind].sync_pushed)
    for kind, statement in _SUCCEEDED.items()
}
#: ``{"account", "now", "when", "failures"}``: a run failed
_FAILED = _prebuilt(lambda table: _finished(table, ok=False))
