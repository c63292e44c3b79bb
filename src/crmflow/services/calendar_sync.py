"""The calendar sync service: what the API, the CLI, the UI and the jobs call.

:class:`CalendarSync` lets a user choose calendars of their connected
integrations (``calendar_accounts``), change how each syncs, run a sync, read
the sync log and settle conflicts. One run (:meth:`CalendarSync.sync`):

1. takes the account's lease (one sync at a time per calendar account, across
   processes; a second caller gets :class:`SyncInProgress`) and writes a
   ``running`` row to ``calendar_sync_log``;
2. builds the two sides: the CRM (``calendar_sides.CrmCalendar``) and the
   provider's calendar (Google, Graph or CalDAV adapter, with a token from the
   connections service that refreshes itself);
3. runs the engine (``crmflow.sync.sync_pair``) with the account's direction
   and conflict strategy; a person's choices on the Conflicts page are applied
   while both versions are still the ones they saw;
4. records the outcome: counts, errors in words, conflicts waiting for a
   person, the account's last sync; releases the lease.

Step 1 shares its transaction with the engine's first reads (unless the
change feed is requested ahead, see :meth:`CalendarSync._run`), and a
successful run's last CRM writes and status share theirs with step 4 (one
``SyncSession`` for the run; the run never waits for a provider inside a
transaction).

Errors about single events do not stop a run (status ``partial``; the next
run retries them). A failure of the whole run (the grant is gone, the provider
is down, a calendar that suddenly lists nothing) is recorded as ``failed`` with
a message that says what to do; the run's summary is returned either way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from crmflow.connections.service import Integrations
from crmflow.domain.calendar import (
    CalendarEvent,
    CalendarProvider,
    Capability,
    RemoteEvent,
)
from crmflow.domain.calendar_accounts import (
    CalendarAccountInfo,
    CalendarChoice,
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
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.lease import Lease
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import TenantContext
from crmflow.errors import (
    UNEXPECTED_FAILURE,
    Conflict,
    CrmflowError,
    NotFound,
    ValidationFailed,
)
from crmflow.metrics import record_sync
from crmflow.providers import google, microsoft
from crmflow.providers.base import AuthError, RateLimited, TransientProviderError
from crmflow.providers.caldav import CalDAVCalendar
from crmflow.services.calendar_sides import (
    CheckpointedCalendar,
    CrmCalendar,
    DbStatusRepository,
    LeaseKeeper,
    LeaseLost,
    Progress,
)
from crmflow.services.push import PushChannels
from crmflow.store.appointment_sync import SyncSession, apply_replies, login_address
from crmflow.store.calendar_accounts import CalendarAccountStore
from crmflow.store.integrations import (
    IntegrationInfo,
    IntegrationStore,
    IntegrationTokens,
)
from crmflow.sync import (
    ConflictPolicy,
    DeletePolicy,
    ReadOnlyPolicy,
    SyncDirection,
    SyncResult,
    sync_pair,
)
from crmflow.sync.engine import ItemError, WriteKind
from crmflow.sync.errors import StorageEmpty, SyncConflict
from crmflow.sync.status import SideName

#: how long a run may hold its account's lease before another run may take it
#: over (a crashed process must not block the account for ever)
LEASE = dt.timedelta(minutes=15)

_CALENDAR_PROVIDERS = frozenset(
    {ProviderKey.GOOGLE, ProviderKey.MICROSOFT, ProviderKey.CALDAV, ProviderKey.APPLE}
)
_NAMES = {
    ProviderKey.GOOGLE: "Google",
    ProviderKey.MICROSOFT: "Outlook",
    ProviderKey.CALDAV: "CalDAV",
    ProviderKey.APPLE: "iCloud",
}


class SyncInProgress(Conflict):
    """A sync of this calendar is running already; try again when it ends."""


#: see ``CalendarSync.sync``: ``(session, run)``, in the outcome's transaction
WithOutcome = Callable[[AsyncSession, SyncRunInfo], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Begun:
    """What a run's first transaction took and read (:meth:`CalendarSync._begin`)."""

    account: CalendarAccountInfo
    lease: LeaseKeeper
    #: the run's log row, ``running``
    run: SyncRunInfo
    #: whether the account had open conflicts when the run began
    open_conflicts: bool
    #: a person's choices on open conflicts: ``{uid: (crm, calendar, choice)}``
    choices: dict[str, tuple[str, str, Resolution]]
    info: IntegrationInfo
    tokens: IntegrationTokens | None
    password: Secret | None
    #: the user's own addresses (their attendee entries)
    addresses: frozenset[str]
    #: the calendar side's stored change-feed cursor (None: none stored)
    cursor: str | None = None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CalendarSync:
    """Calendar accounts and their syncs, for the acting user."""

    def __init__(
        self,
        integrations: Integrations,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._integrations = integrations
        self._deps = integrations.deps
        self._clock = clock

    # ------------------------------------------------------------ calendars

    async def _integration(
        self, ctx: TenantContext, integration_id: uuid.UUID
    ) -> IntegrationInfo:
        async with self._deps.db.tenant(ctx) as session:
            info = await IntegrationStore(session, self._deps.vault).get(integration_id)
        if info.kind is not IntegrationKind.CALENDAR or (
            info.provider not in _CALENDAR_PROVIDERS
        ):
            raise ValidationFailed(
                "This integration is not a calendar; connect a Google, Outlook, "
                "iCloud or CalDAV calendar."
            )
        return info

    def _token(
        self,
        ctx: TenantContext,
        info: IntegrationInfo,
        loaded: IntegrationTokens | None = None,
    ) -> Callable[[], Awaitable[Secret]]:
        return self._integrations.token_source(
            ctx, info.kind, info.provider, loaded=loaded
        )

    def _google_root(self) -> str:
        return str(self._deps.settings.google_api_url).rstrip("/") + "/calendar/v3/"

    def _graph_root(self) -> str:
        return str(self._deps.settings.microsoft_graph_url).rstrip("/") + "/v1.0"

    async def calendars(
        self, ctx: TenantContext, integration_id: uuid.UUID
    ) -> list[CalendarChoice]:
        """The calendars the integration offers, main calendar first.

        Raises:
            NotFound: unknown integration (or another user's).
            ValidationFailed: not a calendar integration.
            AuthError: the user must reconnect; ProviderError: the provider failed.
        """
        return await self._choices(ctx, await self._integration(ctx, integration_id))

    async def _choices(
        self, ctx: TenantContext, info: IntegrationInfo
    ) -> list[CalendarChoice]:
        transport = self._integrations.api_transport
        if info.provider is ProviderKey.GOOGLE:
            return await google.list_calendars(
                self._google_root(), self._token(ctx, info), transport=transport
            )
        if info.provider is ProviderKey.MICROSOFT:
            return await microsoft.list_calendars(
                self._graph_root(), self._token(ctx, info), transport=transport
            )
        found = [
            CalendarChoice(id=str(c["url"]), name=str(c.get("name") or c["url"]))
            for c in info.settings.get("calendars", [])
            if "VEVENT" in (c.get("components") or ["VEVENT"])
        ]
        return [replace(c, primary=i == 0) for i, c in enumerate(found)]

    async def accounts(self, ctx: TenantContext) -> list[CalendarAccountInfo]:
        """The user's synced calendars."""
        async with self._deps.db.tenant(ctx) as session:
            return await CalendarAccountStore(session).all()

    async def account(
        self, ctx: TenantContext, account_id: uuid.UUID
    ) -> CalendarAccountInfo:
        """One synced calendar (NotFound for others')."""
        async with self._deps.db.tenant(ctx) as session:
            return await CalendarAccountStore(session).get(account_id)

    async def add_account(
        self,
        ctx: TenantContext,
        integration_id: uuid.UUID,
        external_calendar_id: str,
        *,
        direction: Direction = Direction.TWO_WAY,
        strategy: Strategy = Strategy.MANUAL,
        export_scope: ExportScope | None = None,
        delete_mode: DeleteMode = DeleteMode.CANCEL,
    ) -> CalendarAccountInfo:
        """Start syncing a calendar of the integration.

        A read-only calendar is synced import-only. ``export_scope`` defaults to
        ``own`` for the user's first calendar that can receive exports and
        ``none`` after that (the user's appointments go to one calendar).

        Raises:
            NotFound: the integration, or the calendar in it, does not exist.
            ValidationFailed: not a calendar integration.
            Conflict: the calendar is synced already.
        """
        info = await self._integration(ctx, integration_id)
        choices = {c.id: c for c in await self._choices(ctx, info)}
        choice = choices.get(external_calendar_id)
        if choice is None:
            raise NotFound(
                "That calendar is not in this account (any more); choose one of "
                "the listed calendars."
            )
        if choice.read_only:
            direction = Direction.IMPORT_ONLY
        async with self._deps.db.tenant(ctx) as session:
            store = CalendarAccountStore(session)
            if await store.find(integration_id, external_calendar_id) is not None:
                raise Conflict(f"The calendar {choice.name!r} is synced already.")
            if export_scope is None:
                exporting = any(
                    a.export_scope is ExportScope.OWN for a in await store.all()
                )
                export_scope = (
                    ExportScope.NONE
                    if exporting or direction is Direction.IMPORT_ONLY
                    else ExportScope.OWN
                )
            return await store.create(
                integration_id=integration_id,
                provider=info.provider,
                external_calendar_id=external_calendar_id,
                name=choice.name,
                direction=direction,
                strategy=strategy,
                export_scope=export_scope,
                delete_mode=delete_mode,
            )

    async def update_account(
        self, ctx: TenantContext, account_id: uuid.UUID, changes: dict[str, Any]
    ) -> CalendarAccountInfo:
        """Change a synced calendar's settings (see ``CalendarAccountStore``)."""
        async with self._deps.db.tenant(ctx) as session:
            return await CalendarAccountStore(session).update(account_id, changes)

    async def remove_account(self, ctx: TenantContext, account_id: uuid.UUID) -> None:
        """Stop syncing a calendar. Its appointments stay in the CRM and its
        events stay in the calendar; only the link between them goes, and
        its push channels are stopped at the provider (best effort)."""
        await PushChannels(self._integrations, clock=self._clock).release(
            ctx, account_id
        )
        async with self._deps.db.tenant(ctx) as session:
            await CalendarAccountStore(session).delete(account_id)

    # ------------------------------------------------------------ log, conflicts

    async def runs(
        self,
        ctx: TenantContext,
        account_id: uuid.UUID | None = None,
        *,
        limit: int = 50,
    ) -> list[SyncRunInfo]:
        """The sync log, newest first."""
        async with self._deps.db.tenant(ctx) as session:
            return await CalendarAccountStore(session).runs(account_id, limit=limit)

    async def conflicts(
        self,
        ctx: TenantContext,
        *,
        status: ConflictStatus | None = ConflictStatus.OPEN,
        account_id: uuid.UUID | None = None,
    ) -> list[ConflictInfo]:
        """Conflicts waiting for a person (or all, with ``status=None``)."""
        async with self._deps.db.tenant(ctx) as session:
            return await CalendarAccountStore(session).conflicts(
                account_id=account_id, status=status
            )

    async def conflict(
        self, ctx: TenantContext, conflict_id: uuid.UUID
    ) -> ConflictInfo:
        """One conflict (NotFound for others')."""
        async with self._deps.db.tenant(ctx) as session:
            return await CalendarAccountStore(session).conflict(conflict_id)

    async def resolve(
        self, ctx: TenantContext, conflict_id: uuid.UUID, resolution: Resolution
    ) -> tuple[ConflictInfo, SyncRunInfo]:
        """Keep one version and sync the calendar now, which writes it to the
        other side. If either version changed since the conflict was shown, the
        conflict stays open with the new versions (nothing is overwritten).

        Raises:
            NotFound: unknown conflict; ValidationFailed: resolved already;
            SyncInProgress: the calendar is syncing (the choice is kept and
            applied by that or the next run).
        """
        async with self._deps.db.tenant(ctx) as session:
            chosen = await CalendarAccountStore(session).choose(conflict_id, resolution)
        run = await self.sync(ctx, chosen.calendar_account_id)
        return await self.conflict(ctx, conflict_id), run

    # ------------------------------------------------------------ syncing

    async def sync_all(
        self, ctx: TenantContext, *, sync_type: SyncType = SyncType.MANUAL
    ) -> list[SyncRunInfo]:
        """Sync every enabled calendar of the user, one after the other; a
        calendar that is syncing already is left to that run (no entry)."""
        runs: list[SyncRunInfo] = []
        for account in await self.accounts(ctx):
            if not account.is_enabled or account.integration_id is None:
                continue
            try:
                runs.append(await self.sync(ctx, account.id, sync_type=sync_type))
            except SyncInProgress:
                continue
        return runs

    async def sync(
        self,
        ctx: TenantContext,
        account_id: uuid.UUID,
        *,
        sync_type: SyncType = SyncType.MANUAL,
        confirm_mass_delete: bool = False,
        progress: Progress | None = None,
        with_outcome: WithOutcome | None = None,
    ) -> SyncRunInfo:
        """Sync one calendar account once; returns the run's log entry.

        ``sync_type`` ``full`` lists both sides in full instead of following
        the change feed. ``confirm_mass_delete`` carries out deletions even
        when one side suddenly lists nothing.

        ``with_outcome`` is awaited with the session of the transaction that
        records the run's outcome and with the finished run, before that
        transaction commits: what it writes lands with the outcome or not at
        all (the scheduler's next due time, without a transaction of its
        own). It is not called when the run could not start (the errors
        below) or its outcome could not be recorded (this raises then).

        Raises:
            NotFound: unknown account (or another user's).
            ValidationFailed: the account is paused or its connection is gone.
            SyncInProgress: another run of this account holds the lease.
        """
        now = self._clock()
        # One unit of work carries the run. Its first transaction takes the
        # lease, opens the log row and reads what the calendar side needs;
        # without a stored cursor it goes on with the engine's first reads
        # (the status, the CRM listing) until the first calendar request
        # commits it (with one, it is committed before the change feed is
        # requested, see _run); its last one holds the last CRM writes, the
        # status, the outcome and the lease's release.
        # Each transaction saved is a BEGIN, a COMMIT and, on SQLite, a
        # thread round trip per statement. The transaction is write-locked:
        # on SQLite a read-then-write transaction that raced another run's
        # lease would fail ("database is locked") instead of seeing the lease
        # taken.
        uow = SyncSession(self._deps.db, ctx)
        try:
            begun = await self._begin(uow, account_id, sync_type, now)
        except BaseException:
            await uow.rollback()
            raise
        account, info = begun.account, begun.info
        result: SyncResult | None = None
        failure: SyncError | None = None
        try:
            result = await self._run(
                ctx,
                account,
                self._calendar_side(ctx, account, info, begun.tokens, begun.password),
                begun.addresses,
                sync_type,
                begun.choices,
                confirm_mass_delete,
                progress,
                begun.lease,
                uow,
                None if sync_type is SyncType.FULL else begun.cursor,
            )
        except CrmflowError as exc:
            failure = _failure(exc, account)
        finally:
            run = await self._finish(uow, begun, result, failure, with_outcome)
        record_sync(
            "calendar",
            info.provider.value,
            run.status.value,
            (run.duration_ms or 0) / 1000,
            {
                "imported": run.events_imported,
                "exported": run.events_exported,
                "updated": run.events_updated,
                "deleted": run.events_deleted,
            },
            run.conflicts,
        )
        return run

    async def _begin(
        self,
        uow: SyncSession,
        account_id: uuid.UUID,
        sync_type: SyncType,
        now: dt.datetime,
    ) -> _Begun:
        """A run's first steps, in the first transaction of ``uow`` (left
        open): the account, the lease, the log row, the open conflicts and
        what the calendar side needs (the integration with its tokens, a
        password, the user's own addresses).

        Raises:
            NotFound, ValidationFailed, SyncInProgress: as :meth:`sync`.
        """
        session = await uow.session()
        store = CalendarAccountStore(session)
        account, cursor = await store.get_with_cursor(account_id)
        if not account.is_enabled or account.integration_id is None:
            raise ValidationFailed(
                f"Syncing the calendar {account.name!r} is switched off"
                + (
                    "; connect its account again in Settings -> Integrations."
                    if account.integration_id is None
                    else "; switch it on under Manage calendars."
                )
            )
        lease = LeaseKeeper(account_id, Lease.taken(now, LEASE), self._clock)
        if not await store.acquire_lease(account_id, now, lease.lease.held):
            raise SyncInProgress(
                f"The calendar {account.name!r} is being synced right now; "
                "its result appears in the sync log in a moment."
            )
        run = await store.start_run(account_id, sync_type, account.direction)
        open_conflicts = await store.open_conflicts(account_id)
        # with the tokens, so the first request needs no transaction of its
        # own for its access token (tokens the keys cannot open: the run's
        # first request reports it, as a failed run), and the password of a
        # credential connection (without one the run fails, saying to
        # connect again)
        info, tokens, password = await IntegrationStore(
            session, self._deps.vault
        ).get_with_secrets(account.integration_id)
        if info.provider in (ProviderKey.GOOGLE, ProviderKey.MICROSOFT):
            password = None
        # where this user answers invitations: their own attendee entries
        addresses = frozenset(
            a.strip().lower()
            for a in (
                await login_address(session),
                info.email,
                str(info.settings.get("username") or ""),
            )
            if a and "@" in a
        )
        return _Begun(
            account=account,
            lease=lease,
            run=run,
            open_conflicts=bool(open_conflicts),
            choices={
                uid: (crm, calendar, choice)
                for uid, (crm, calendar, choice) in open_conflicts.items()
                if choice is not None
            },
            info=info,
            tokens=tokens,
            password=password,
            addresses=addresses,
            cursor=cursor,
        )

    async def _finish(
        self,
        uow: SyncSession,
        begun: _Begun,
        result: SyncResult | None,
        failure: SyncError | None,
        with_outcome: WithOutcome | None,
    ) -> SyncRunInfo:
        """Record the run's outcome and release its lease, in the run's open
        transaction (a successful run's last writes and status commit with
        it) or a new one; ``with_outcome`` as for :meth:`sync`.

        If this fails (a cancellation at shutdown, a database error), the
        open transaction goes too: a successful run's last CRM writes and
        status are redone by the next run, the lease runs out and the next
        run closes the log row as ``interrupted``.
        """
        account_id = begun.account.id
        # the first transaction (the lease and the log row) was rolled back
        # with the failure that ended the run (a cancelled statement, a lost
        # connection): there is no lease to give back and no row to finish
        lost_begin = uow.commits == 0 and not uow.is_open
        try:
            session = await uow.session()
            store = CalendarAccountStore(session)
            started = begun.run
            if lost_begin:
                started = replace(
                    begun.run,
                    id=(
                        await store.start_run(
                            account_id, begun.run.sync_type, begun.run.direction
                        )
                    ).id,
                )
            if result is not None:
                await store.record_conflicts(
                    account_id,
                    ((c.crm, c.calendar) for c in result.conflicts),
                    self._clock(),
                )
            # only runs open conflicts, one at a time (the lease): with none
            # open at the start there is nothing else to close
            if result is not None and begun.open_conflicts:
                await store.close_conflicts(
                    account_id,
                    {c.ident for c in result.conflicts}
                    | {e.ident for e in result.errors},
                    self._clock(),
                )
            # the log's times are the database's (real) clock, not the
            # injectable one, so durations are real
            run = await store.finish_run(
                _summary(started, result, failure),
                _utcnow(),
                # the lease goes back with the outcome, unless it never landed
                release=None if lost_begin else begun.lease.lease.values(),
            )
            if with_outcome is not None:
                await with_outcome(session, run)
            await uow.commit()
        except BaseException:
            await uow.rollback()
            raise
        return run

    def _calendar_side(
        self,
        ctx: TenantContext,
        account: CalendarAccountInfo,
        info: IntegrationInfo,
        tokens: IntegrationTokens | None,
        password: Secret | None,
    ) -> CalendarProvider:
        transport = self._integrations.api_transport
        if info.provider is ProviderKey.GOOGLE:
            return google.GoogleCalendar(
                self._google_root(),
                account.external_calendar_id,
                self._token(ctx, info, tokens),
                transport=transport,
            )
        if info.provider is ProviderKey.MICROSOFT:
            return microsoft.GraphCalendar(
                self._graph_root(),
                account.external_calendar_id,
                self._token(ctx, info, tokens),
                transport=transport,
            )
        if password is None:
            raise ValidationFailed(
                "This calendar connection has no password; connect it again in "
                "Settings -> Integrations."
            )
        username = str(info.settings.get("username") or info.account_id or "")
        return CalDAVCalendar(
            account.external_calendar_id,
            username,
            password,
            extra_ca_file=self._deps.settings.extra_ca_file,
            # the retry policy of every provider call, over a connection pool
            # that trusts CRMFLOW_EXTRA_CA_FILE too
            transport=self._integrations.api_transport,
        )

    async def _run(
        self,
        ctx: TenantContext,
        account: CalendarAccountInfo,
        provider: CalendarProvider,
        own_addresses: frozenset[str],
        sync_type: SyncType,
        choices: dict[str, tuple[str, str, Resolution]],
        confirm_mass_delete: bool,
        progress: Progress | None,
        lease: LeaseKeeper,
        uow: SyncSession,
        cursor: str | None,
    ) -> SyncResult:
        """Run the engine in the run's unit of work ``uow``.

        A successful run returns with its last transaction open (its last CRM
        writes and the status), for the caller to record the outcome in it
        and commit; a failed one has committed what the engine recorded (or,
        having lost the lease, rolled back what it wrote since its last
        commit).

        With a stored ``cursor``, the calendar's change feed is requested
        before the engine starts, so the provider works on it while the run
        reads its status and the CRM side (see
        :meth:`CheckpointedCalendar.prefetch_changes`).
        """
        # a CalDAV side keeps one HTTP client for the run, closed at its end
        connection = (
            provider
            if isinstance(provider, CalDAVCalendar)
            else contextlib.nullcontext()
        )
        calendar = CheckpointedCalendar(provider, uow, progress, lease)
        crm = CrmCalendar(
            uow,
            account.id,
            export_own=account.export_scope is ExportScope.OWN
            and account.direction is not Direction.IMPORT_ONLY,
            cancel=account.delete_mode is DeleteMode.CANCEL,
            list_cancelled=Capability.CANCELLED_EVENTS in provider.capabilities,
            own_addresses=own_addresses,
            progress=progress,
        )
        status = DbStatusRepository(
            uow,
            account.id,
            synced_at=self._clock(),
            forget_cursor=sync_type is SyncType.FULL,
            lease=lease,
            # committed by the caller, with the run's outcome
            defer_commit=True,
        )
        policy = ConflictPolicy.from_config(account.strategy.value)
        resolver = None
        if choices and policy is ConflictPolicy.MANUAL:
            policy, resolver = ConflictPolicy.CUSTOM, _chosen(choices)
        errors: list[ItemError] = []
        try:
            async with connection:
                if (
                    cursor is not None
                    and Capability.INCREMENTAL in calendar.capabilities
                ):
                    # the lease and the log row are committed before a request
                    # goes out: a run killed from here on is in the log as
                    # interrupted, and its lease runs out
                    await uow.commit()
                    calendar.prefetch_changes(cursor)
                try:
                    result = await sync_pair(
                        crm,
                        calendar,
                        status,
                        conflicts=policy,
                        resolver=resolver,
                        deletes=DeletePolicy.MODIFICATION_WINS,
                        # a one-way account leaves changes on its receiving side alone
                        # instead of reverting them (reverting would delete the events
                        # it never sends)
                        read_only=ReadOnlyPolicy.IGNORE,
                        direction=SyncDirection(account.direction.value),
                        force_delete=confirm_mass_delete,
                        on_error=errors.append,
                    )
                finally:
                    # a request the engine never took (it stopped first)
                    await calendar.discard_prefetch()
            # the last CRM writes and the status are kept only while the
            # lease is ours
            await lease.keep(uow)
        except LeaseLost:
            # another run holds the account: what this one wrote in the CRM
            # since its last commit is not to be kept
            await uow.rollback()
            raise
        except BaseException as stopped:
            # what the engine recorded before it stopped is kept (it is
            # consistent: case 14), while the lease is ours
            try:
                await lease.keep(uow)
                await uow.commit()
            except LeaseLost:
                await uow.rollback()
                raise
            except BaseException:
                # the transaction went with what stopped the run (a cancelled
                # statement, a lost connection): that is the error to report
                await uow.rollback()
                raise stopped from None
            raise
        if crm.replies:
            # the user's own answers to other users' meetings (case 23),
            # recorded after the run's transaction (on SQLite it holds the
            # write lock), in the owner's name
            await uow.commit()
            for owner_id, appointment_id, replies in crm.replies:
                await apply_replies(
                    self._deps.db, ctx, owner_id, appointment_id, replies
                )
        return result


def _chosen(
    choices: dict[str, tuple[str, str, Resolution]],
) -> Callable[[RemoteEvent, RemoteEvent], CalendarEvent | None]:
    """A resolver applying a person's choice while both versions are the ones
    they saw; anything else stays a conflict."""

    def resolve(crm: RemoteEvent, calendar: RemoteEvent) -> CalendarEvent | None:
        choice = choices.get(crm.event.ical_uid)
        if choice is None or (choice[0], choice[1]) != (crm.version, calendar.version):
            return None
        return crm.event if choice[2] is Resolution.KEEP_CRM else calendar.event

    return resolve


def _summary(
    run: SyncRunInfo, result: SyncResult | None, failure: SyncError | None
) -> SyncRunInfo:
    if result is None:
        return replace(
            run,
            status=RunStatus.FAILED,
            errors=(failure,) if failure else (SyncError(UNEXPECTED_FAILURE),),
        )
    counts = {"imported": 0, "exported": 0, "updated": 0, "deleted": 0}
    for write in result.writes:
        if write.kind is WriteKind.CREATE:
            counts["imported" if write.side is SideName.CRM else "exported"] += 1
        elif write.kind is WriteKind.UPDATE:
            counts["updated"] += 1
        else:
            counts["deleted"] += 1
    errors = tuple(
        SyncError(str(e.error), e.ident)
        for e in result.errors
        if not isinstance(e.error, SyncConflict)
    )
    if failure is not None:
        errors = (failure, *errors)
    status = (
        RunStatus.FAILED
        if failure is not None
        else RunStatus.PARTIAL
        if errors
        else RunStatus.SUCCESS
    )
    return replace(
        run,
        status=status,
        events_imported=counts["imported"],
        events_exported=counts["exported"],
        events_updated=counts["updated"],
        events_deleted=counts["deleted"],
        conflicts=len(result.conflicts),
        errors=errors,
    )


def _failure(exc: CrmflowError, account: CalendarAccountInfo) -> SyncError:
    """A whole run's failure in words the user can act on."""
    name = _NAMES.get(account.provider, "The calendar")
    if isinstance(exc, StorageEmpty):
        side = "the CRM" if exc.side is SideName.CRM else f"the {name} calendar"
        return SyncError(
            f"Nothing was synced: {side} suddenly lists no events although "
            f"{exc.synced} were synced before. If the events were "
            "deleted on purpose, sync again and confirm the deletion; otherwise "
            "check the calendar.",
            code="mass_delete",
        )
    if isinstance(exc, AuthError):
        return SyncError(
            f"{name} no longer accepts crmflow's access to {account.name!r}: "
            "reconnect the account in Settings -> Integrations. " + str(exc),
            code="reconnect",
        )
    if isinstance(exc, RateLimited):
        return SyncError(
            f"{name} asked crmflow to slow down; nothing was lost and the next "
            f"sync continues where this one stopped. ({exc})",
            code="rate_limited",
            retry_after_s=exc.retry_after_s,
        )
    if isinstance(exc, TransientProviderError):
        return SyncError(
            f"{name} could not be reached or asked us to slow down; nothing was "
            f"lost and the next sync continues where this one stopped. ({exc})"
        )
    return SyncError(str(exc))
