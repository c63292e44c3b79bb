"""Calendar accounts, their sync log and their conflicts, for the acting user.

Every query is scoped to the acting user in the acting organization (the
tables are ``personal``; PostgreSQL's row level security says the same).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from functools import cache
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crmflow.domain.calendar import RemoteEvent
from crmflow.domain.calendar_accounts import (
    CalendarAccountInfo,
    ConflictInfo,
    ConflictStatus,
    DeleteMode,
    Direction,
    ExportScope,
    Resolution,
    RunStatus,
    Strategy,
    SyncError,
    SyncRunInfo,
    SyncType,
)
from crmflow.domain.integrations import ProviderKey
from crmflow.errors import NotFound, ValidationFailed
from crmflow.store import leases, models
from crmflow.store.calendar_json import event_from_json, event_to_json
from crmflow.store.db import tenant_of
from crmflow.store.prebuilt import owned, owner, param

#: the error of a run that never finished (see ``acquire_lease``)
INTERRUPTED = (
    "This sync stopped before it finished (the process running it ended); "
    "the next sync carried on from what it had saved."
)

#: the columns a user may change on an account
EDITABLE = frozenset(
    {"name", "direction", "strategy", "export_scope", "delete_mode", "is_enabled"}
)


def _account_info(
    row: models.CalendarAccount, mapped: int = 0, conflicts: int = 0
) -> CalendarAccountInfo:
    return CalendarAccountInfo(
        id=row.id,
        user_id=row.user_id,
        integration_id=row.integration_id,
        provider=ProviderKey(row.provider),
        external_calendar_id=row.external_calendar_id,
        name=row.name,
        direction=Direction(row.sync_direction),
        strategy=Strategy(row.conflict_strategy),
        export_scope=ExportScope(row.export_scope),
        delete_mode=DeleteMode(row.delete_mode),
        is_enabled=row.is_enabled,
        last_synced_at=row.last_synced_at,
        last_sync_status=RunStatus(row.last_sync_status)
        if row.last_sync_status
        else None,
        last_error=row.last_error,
        created_at=row.created_at,
        mapped_events=mapped,
        open_conflicts=conflicts,
        next_sync_at=row.next_sync_at,
        sync_failures=row.sync_failures,
    )


def _run_info(row: models.CalendarSyncLog) -> SyncRunInfo:
    return SyncRunInfo(
        id=row.id,
        calendar_account_id=row.calendar_account_id,
        sync_type=SyncType(row.sync_type),
        direction=Direction(row.sync_direction),
        status=RunStatus(row.status),
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration_ms=row.duration_ms,
        events_imported=row.events_imported,
        events_exported=row.events_exported,
        events_updated=row.events_updated,
        events_deleted=row.events_deleted,
        conflicts=row.conflicts,
        errors=tuple(
            SyncError(
                e.get("message", ""),
                e.get("ical_uid"),
                e.get("title"),
                e.get("code"),
                e.get("retry_after_s"),
            )
            for e in row.errors
        ),
    )


def _conflict_info(row: models.CalendarSyncConflict) -> ConflictInfo:
    return ConflictInfo(
        id=row.id,
        calendar_account_id=row.calendar_account_id,
        ical_uid=row.ical_uid,
        appointment_id=row.appointment_id,
        external_event_id=row.external_event_id,
        crm_event=event_from_json(row.crm_event),
        crm_updated_at=row.crm_updated_at,
        calendar_event=event_from_json(row.calendar_event),
        calendar_updated_at=row.calendar_updated_at,
        status=ConflictStatus(row.status),
        resolution=Resolution(row.resolution) if row.resolution else None,
        created_at=row.created_at,
        resolved_at=row.resolved_at,
    )


class CalendarAccountStore:
    """The acting user's calendar accounts, runs and conflicts."""

    def __init__(self, session: AsyncSession) -> None:
        self._s = session
        self._ctx = tenant_of(session)
        self._owner = owner(self._ctx)

    def _mine(self, model: Any) -> list[Any]:
        return [
            model.organization_id == self._ctx.organization_id,
            model.user_id == self._ctx.user_id,
        ]

    async def _row(self, account_id: uuid.UUID) -> models.CalendarAccount:
        row = await self._s.scalar(_ROW, {"account": account_id, **self._owner})
        if row is None:
            raise NotFound("Calendar account not found.")
        return row

    # ------------------------------------------------------------ accounts

    async def all(self) -> list[CalendarAccountInfo]:
        """The user's calendar accounts, by name."""
        m = models.CalendarEventMapping
        c = models.CalendarSyncConflict
        mapped = dict(
            (
                await self._s.execute(
                    select(m.calendar_account_id, func.count())
                    .where(*self._mine(m))
                    .group_by(m.calendar_account_id)
                )
            ).all()
        )
        open_ = dict(
            (
                await self._s.execute(
                    select(c.calendar_account_id, func.count())
                    .where(*self._mine(c), c.status == ConflictStatus.OPEN.value)
                    .group_by(c.calendar_account_id)
                )
            ).all()
        )
        rows = await self._s.scalars(
            select(models.CalendarAccount)
            .where(*self._mine(models.CalendarAccount))
            .order_by(models.CalendarAccount.name, models.CalendarAccount.id)
        )
        return [_account_info(r, mapped.get(r.id, 0), open_.get(r.id, 0)) for r in rows]

    async def get(
        self, account_id: uuid.UUID, *, counts: bool = True
    ) -> CalendarAccountInfo:
        """Raises NotFound for unknown ids and other users' accounts.

        ``counts=False`` leaves ``mapped_events`` and ``open_conflicts`` at 0
        (two queries fewer, for the sync and push paths that never show them).
        """
        row = await self._row(account_id)
        if not counts:
            return _account_info(row)
        m = models.CalendarEventMapping
        c = models.CalendarSyncConflict
        mapped = await self._s.scalar(
            select(func.count()).where(*self._mine(m), m.calendar_account_id == row.id)
        )
        conflicts = await self._s.scalar(
            select(func.count()).where(
                *self._mine(c),
                c.calendar_account_id == row.id,
                c.status == ConflictStatus.OPEN.value,
            )
        )
        return _account_info(row, mapped or 0, conflicts or 0)

    async def get_with_cursor(
        self, account_id: uuid.UUID
    ) -> tuple[CalendarAccountInfo, str | None]:
        """The account as ``get(counts=False)`` reads it, and its stored
        change-feed cursor (None: the next sync lists in full), from the same
        row: a run starts its first calendar request with that cursor while
        it reads its status.

        Raises:
            NotFound: as :meth:`get`.
        """
        row = await self._row(account_id)
        return _account_info(row), row.sync_cursor or None

    async def find(
        self, integration_id: uuid.UUID, external_calendar_id: str
    ) -> CalendarAccountInfo | None:
        """The account of that calendar, if the user syncs it already."""
        row = await self._s.scalar(
            select(models.CalendarAccount).where(
                *self._mine(models.CalendarAccount),
                models.CalendarAccount.integration_id == integration_id,
                models.CalendarAccount.external_calendar_id == external_calendar_id,
            )
        )
        return None if row is None else _account_info(row)

    async def create(
        self,
        *,
        integration_id: uuid.UUID,
        provider: ProviderKey,
        external_calendar_id: str,
        name: str,
        direction: Direction,
        strategy: Strategy,
        export_scope: ExportScope,
        delete_mode: DeleteMode,
    ) -> CalendarAccountInfo:
        """Add a calendar account. With ``export_scope`` OWN it becomes the one
        calendar the user's own appointments go to (any other loses the scope)."""
        if export_scope is ExportScope.OWN:
            await self._clear_export_scope()
        row = models.CalendarAccount(
            organization_id=self._ctx.organization_id,
            user_id=self._ctx.user_id,
            integration_id=integration_id,
            provider=provider.value,
            external_calendar_id=external_calendar_id,
            name=name[:500],
            sync_direction=direction.value,
            conflict_strategy=strategy.value,
            export_scope=export_scope.value,
            delete_mode=delete_mode.value,
        )
        self._s.add(row)
        await self._s.flush()
        return _account_info(row)

    async def _clear_export_scope(self, keep: uuid.UUID | None = None) -> None:
        stmt = (
            update(models.CalendarAccount)
            .where(
                *self._mine(models.CalendarAccount),
                models.CalendarAccount.export_scope == ExportScope.OWN.value,
            )
            .values(export_scope=ExportScope.NONE.value)
            .execution_options(synchronize_session=False)
        )
        if keep is not None:
            stmt = stmt.where(models.CalendarAccount.id != keep)
        await self._s.execute(stmt)

    async def update(
        self, account_id: uuid.UUID, changes: Mapping[str, Any]
    ) -> CalendarAccountInfo:
        """Change the editable settings (:data:`EDITABLE`).

        Raises:
            NotFound: unknown account.
            ValidationFailed: an unknown setting, or an empty name.
        """
        unknown = set(changes) - EDITABLE
        if unknown:
            raise ValidationFailed(
                "These settings cannot be changed: " + ", ".join(sorted(unknown))
            )
        row = await self._row(account_id)
        if "name" in changes:
            name = str(changes["name"]).strip()
            if not name:
                raise ValidationFailed("The calendar needs a name.")
            row.name = name[:500]
        if "direction" in changes:
            row.sync_direction = Direction(changes["direction"]).value
        if "strategy" in changes:
            row.conflict_strategy = Strategy(changes["strategy"]).value
        if "delete_mode" in changes:
            row.delete_mode = DeleteMode(changes["delete_mode"]).value
        if "is_enabled" in changes:
            if changes["is_enabled"] and row.integration_id is None:
                raise ValidationFailed(
                    "This calendar's connection was removed; connect the account "
                    "again and add the calendar anew."
                )
            row.is_enabled = bool(changes["is_enabled"])
        if "export_scope" in changes:
            scope = ExportScope(changes["export_scope"])
            if scope is ExportScope.OWN:
                await self._clear_export_scope(keep=row.id)
            row.export_scope = scope.value
        await self._s.flush()
        return await self.get(account_id)

    async def delete(self, account_id: uuid.UUID) -> None:
        """Remove the account with its mappings, log and conflicts; the
        appointments stay."""
        row = await self._row(account_id)
        await self._s.delete(row)
        await self._s.flush()

    # ------------------------------------------------------------ leases

    async def acquire_lease(
        self, account_id: uuid.UUID, now: dt.datetime, until: dt.datetime
    ) -> bool:
        """Take the account's sync lease unless a live one is held.

        A lease that ran out instead of being given back belonged to a run
        that never finished (its process was killed, its machine went
        down): that run's log row, still ``running``, is closed here as
        failed with a message saying so. The run taking the lease carries
        on from what the killed one committed. (A run that only stalled
        that long is closed too: it stops at its next commit, see
        ``services.calendar_sides.LeaseKeeper``, and its own outcome
        overwrites the row.)
        """
        account = models.CalendarAccount
        taken = await self._s.execute(
            _FREE_LEASE, {"account": account_id, "until": until, **self._owner}
        )
        if getattr(taken, "rowcount", 0) == 1:
            return True  # the usual case: one statement
        taken = await self._s.execute(
            update(account)
            .where(
                account.id == account_id,
                *self._mine(account),
                account.sync_lease_until < now,
            )
            .values(sync_lease_until=until)
            .execution_options(synchronize_session=False)
        )
        if getattr(taken, "rowcount", 0) != 1:
            return False
        log = models.CalendarSyncLog
        await self._s.execute(
            update(log)
            .where(
                log.calendar_account_id == account_id,
                *self._mine(log),
                log.status == RunStatus.RUNNING.value,
            )
            .values(
                status=RunStatus.FAILED.value,
                errors=[{"message": INTERRUPTED, "code": "interrupted"}],
                # when it was found stopped; how long it ran is unknown
                finished_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        return True

    async def renew_lease(
        self, account_id: uuid.UUID, held: dt.datetime, until: dt.datetime
    ) -> bool:
        """Move the lease that ends at ``held`` on to ``until``; False when it
        is no longer that one (it ran out and another run took the account)."""
        account = models.CalendarAccount
        return await leases.renew(
            self._s,
            account,
            [account.id == account_id, *self._mine(account)],
            held,
            until,
        )

    # ------------------------------------------------------------ sync log

    async def start_run(
        self, account_id: uuid.UUID, sync_type: SyncType, direction: Direction
    ) -> SyncRunInfo:
        """A ``running`` log row."""
        row = models.CalendarSyncLog(
            organization_id=self._ctx.organization_id,
            user_id=self._ctx.user_id,
            calendar_account_id=account_id,
            sync_type=sync_type.value,
            sync_direction=direction.value,
            status=RunStatus.RUNNING.value,
            errors=[],
        )
        self._s.add(row)
        await self._s.flush()
        return _run_info(row)

    async def finish_run(
        self,
        run: SyncRunInfo,
        now: dt.datetime,
        *,
        release: Sequence[dt.datetime] | None = None,
    ) -> SyncRunInfo:
        """Write the run's outcome to its log row and to its account.

        ``run`` is the :meth:`start_run` entry with the outcome filled in;
        two UPDATEs, no reads (every run ends here). With ``release``, the
        account's UPDATE also gives the lease back if it still ends at one of
        those instants (a run whose lease another run took over leaves that
        one alone).
        """
        duration = max(0, int((now - run.started_at).total_seconds() * 1000))
        written = await self._s.execute(
            _FINISH_LOG,
            {
                "run": run.id,
                **self._owner,
                "status": run.status.value,
                "imported": run.events_imported,
                "exported": run.events_exported,
                "updated": run.events_updated,
                "deleted": run.events_deleted,
                "conflicts": run.conflicts,
                "errors": [
                    {
                        "message": e.message,
                        "ical_uid": e.ical_uid,
                        "title": e.title,
                        "code": e.code,
                        **(
                            {"retry_after_s": e.retry_after_s}
                            if e.retry_after_s
                            else {}
                        ),
                    }
                    for e in run.errors
                ],
                "now": now,
                "duration": duration,
            },
        )
        if getattr(written, "rowcount", 0) != 1:
            raise NotFound("Sync run not found.")
        if run.calendar_account_id is not None:
            synced = run.status is not RunStatus.FAILED
            values: dict[str, Any] = {
                "account": run.calendar_account_id,
                **self._owner,
                "status": run.status.value,
                "error": run.errors[0].message if run.errors else None,
            }
            if synced:
                values["now"] = now
            if release:
                values["release"] = list(release)
            await self._s.execute(_account_outcome(synced, bool(release)), values)
        return replace(run, finished_at=now, duration_ms=duration)

    async def runs(
        self, account_id: uuid.UUID | None = None, *, limit: int = 50
    ) -> list[SyncRunInfo]:
        """The latest runs, newest first."""
        stmt = select(models.CalendarSyncLog).where(*self._mine(models.CalendarSyncLog))
        if account_id is not None:
            stmt = stmt.where(models.CalendarSyncLog.calendar_account_id == account_id)
        rows = await self._s.scalars(
            stmt.order_by(
                models.CalendarSyncLog.started_at.desc(), models.CalendarSyncLog.id
            ).limit(max(1, min(limit, 500)))
        )
        return [_run_info(r) for r in rows]

    # ------------------------------------------------------------ conflicts

    async def record_conflicts(
        self,
        account_id: uuid.UUID,
        found: Iterable[tuple[RemoteEvent, RemoteEvent]],
        now: dt.datetime,
    ) -> None:
        """Open (or refresh) a conflict per ``(crm, calendar)`` pair; a new
        version clears an earlier choice, which was made on other content."""
        c = models.CalendarSyncConflict
        for crm, calendar in found:
            uid = crm.event.ical_uid
            row = await self._s.scalar(
                select(c).where(
                    *self._mine(c),
                    c.calendar_account_id == account_id,
                    c.ical_uid == uid,
                )
            )
            if row is None:
                row = c(
                    organization_id=self._ctx.organization_id,
                    user_id=self._ctx.user_id,
                    calendar_account_id=account_id,
                    ical_uid=uid,
                )
                self._s.add(row)
            elif (row.crm_version, row.calendar_version) != (
                crm.version,
                calendar.version,
            ) or row.status != ConflictStatus.OPEN.value:
                row.resolution = None
                row.created_at = now
            row.appointment_id = next(iter(_uuid(crm.remote_id)), None)
            row.external_event_id = calendar.remote_id
            row.crm_version = crm.version
            row.crm_event = event_to_json(crm.event)
            row.crm_updated_at = crm.updated_at
            row.calendar_version = calendar.version
            row.calendar_event = event_to_json(calendar.event)
            row.calendar_updated_at = calendar.updated_at
            row.status = ConflictStatus.OPEN.value
            row.resolved_at = None
        await self._s.flush()

    async def close_conflicts(
        self, account_id: uuid.UUID, keep_open: Iterable[str], now: dt.datetime
    ) -> None:
        """Mark resolved every open conflict of the account except ``keep_open``
        (its event is in sync again: resolved by a choice or by an edit)."""
        c = models.CalendarSyncConflict
        still = set(keep_open)
        rows = await self._s.scalars(
            select(c).where(
                *self._mine(c),
                c.calendar_account_id == account_id,
                c.status == ConflictStatus.OPEN.value,
            )
        )
        for row in rows:
            if row.ical_uid not in still:
                row.status = ConflictStatus.RESOLVED.value
                row.resolved_at = now
        await self._s.flush()

    async def conflicts(
        self,
        *,
        account_id: uuid.UUID | None = None,
        status: ConflictStatus | None = ConflictStatus.OPEN,
        limit: int = 100,
    ) -> list[ConflictInfo]:
        """Conflicts, newest first."""
        c = models.CalendarSyncConflict
        stmt = select(c).where(*self._mine(c))
        if account_id is not None:
            stmt = stmt.where(c.calendar_account_id == account_id)
        if status is not None:
            stmt = stmt.where(c.status == status.value)
        rows = await self._s.scalars(
            stmt.order_by(c.created_at.desc(), c.id).limit(max(1, min(limit, 500)))
        )
        return [_conflict_info(r) for r in rows]

    async def conflict(self, conflict_id: uuid.UUID) -> ConflictInfo:
        """Raises NotFound for unknown ids and other users' conflicts."""
        c = models.CalendarSyncConflict
        row = await self._s.scalar(select(c).where(*self._mine(c), c.id == conflict_id))
        if row is None:
            raise NotFound("Conflict not found.")
        return _conflict_info(row)

    async def choose(
        self, conflict_id: uuid.UUID, resolution: Resolution
    ) -> ConflictInfo:
        """Record a person's choice; the next sync of the account applies it.

        Raises:
            NotFound: unknown conflict.
            ValidationFailed: it is resolved already.
        """
        c = models.CalendarSyncConflict
        row = await self._s.scalar(select(c).where(*self._mine(c), c.id == conflict_id))
        if row is None:
            raise NotFound("Conflict not found.")
        if row.status != ConflictStatus.OPEN.value:
            raise ValidationFailed("This conflict is resolved already.")
        row.resolution = resolution.value
        await self._s.flush()
        return _conflict_info(row)

    async def open_conflicts(
        self, account_id: uuid.UUID
    ) -> dict[str, tuple[str, str, Resolution | None]]:
        """The account's open conflicts: ``{uid: (crm version, calendar
        version, the person's choice or None)}``."""
        rows = await self._s.execute(
            _OPEN_CONFLICTS, {"account": account_id, **self._owner}
        )
        return {
            uid: (crm, calendar, Resolution(choice) if choice else None)
            for uid, crm, calendar, choice in rows
        }


def _uuid(text: str) -> list[uuid.UUID]:
    try:
        return [uuid.UUID(text)]
    except ValueError:
        return []


# ---------------------------------------------------------------- prebuilt
# The statements every sync run executes (see crmflow.store.prebuilt).

_ACCOUNT = models.CalendarAccount
_LOG = models.CalendarSyncLog
_CONFLICT = models.CalendarSyncConflict

#: ``{"account", "org", "user"}``: the ORM row of one of the user's accounts
_ROW = select(_ACCOUNT).where(
    _ACCOUNT.id == param("account", _ACCOUNT.id), *owned(_ACCOUNT)
)

#: ``{"account", "org", "user", "until"}``: take a lease nobody holds
_FREE_LEASE = (
    update(_ACCOUNT)
    .where(
        _ACCOUNT.id == param("account", _ACCOUNT.id),
        *owned(_ACCOUNT),
        _ACCOUNT.sync_lease_until.is_(None),
    )
    .values(sync_lease_until=param("until", _ACCOUNT.sync_lease_until))
    .execution_options(synchronize_session=False)
)

#: ``{"run", "org", "user", "status", "imported", "exported", "updated",
#: "deleted", "conflicts", "errors", "now", "duration"}``: a run's outcome
_FINISH_LOG = (
    update(_LOG)
    .where(_LOG.id == param("run", _LOG.id), *owned(_LOG))
    .values(
        status=param("status", _LOG.status),
        events_imported=param("imported", _LOG.events_imported),
        events_exported=param("exported", _LOG.events_exported),
        events_updated=param("updated", _LOG.events_updated),
        events_deleted=param("deleted", _LOG.events_deleted),
        conflicts=param("conflicts", _LOG.conflicts),
        errors=param("errors", _LOG.errors),
        finished_at=param("now", _LOG.finished_at),
        duration_ms=param("duration", _LOG.duration_ms),
    )
    .execution_options(synchronize_session=False)
)


@cache
def _account_outcome(synced: bool, release: bool) -> Any:
    """``{"account", "org", "user", "status", "error"}``, ``"now"`` when
    ``synced`` (the run did not fail: it is the last sync), ``"release"``
    when ``release`` (the lease's end instants this run held: given back if
    the account still has one of them)."""
    values: dict[str, Any] = {
        "last_sync_status": param("status", _ACCOUNT.last_sync_status),
        "last_error": param("error", _ACCOUNT.last_error),
    }
    if synced:
        values["last_synced_at"] = param("now", _ACCOUNT.last_synced_at)
    if release:
        # only a lease this run held: one another run took over stays
        values["sync_lease_until"] = case(
            (
                _ACCOUNT.sync_lease_until.in_(
                    param("release", _ACCOUNT.sync_lease_until, expanding=True)
                ),
                None,
            ),
            else_=_ACCOUNT.sync_lease_until,
        )
    return (
        update(_ACCOUNT)
        .where(_ACCOUNT.id == param("account", _ACCOUNT.id), *owned(_ACCOUNT))
        .values(**values)
        .execution_options(synchronize_session=False)
    )


#: ``{"account", "org", "user"}``: the account's open conflicts
_OPEN_CONFLICTS = select(
    _CONFLICT.ical_uid,
    _CONFLICT.crm_version,
    _CONFLICT.calendar_version,
    _CONFLICT.resolution,
).where(
    *owned(_CONFLICT),
    _CONFLICT.calendar_account_id == param("account", _CONFLICT.calendar_account_id),
    _CONFLICT.status == ConflictStatus.OPEN.value,
)
