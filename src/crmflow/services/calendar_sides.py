"""The CRM side of a sync pair and its status, over the database.

* :class:`CrmCalendar` — the acting user's appointments as a ``CalendarProvider``
  (remote id = appointment id, version = the row's version counter);
* :class:`DbStatusRepository` — the engine's status in
  ``calendar_event_mappings`` plus the calendar account's cursor columns;
* :class:`CheckpointedCalendar` — wraps the provider's calendar: before each of
  its calls the run's open transaction is committed, so the run never waits
  for a provider inside a database transaction while consecutive CRM writes
  still share one (see ``store/appointment_sync.py``). The one request made
  ahead (:meth:`~CheckpointedCalendar.prefetch_changes`, the change feed)
  runs while the run reads its status and the CRM side, and is waited for
  after the commit like any other. It also reports progress.

All three share one :class:`~crmflow.store.appointment_sync.SyncSession`; the
engine's final status commit commits the CRM writes of the last group together
with the status rows and the cursor, so a cursor is never saved ahead of the
changes it covers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Sequence

from crmflow.domain.calendar import (
    CalendarEvent,
    CalendarProvider,
    Capability,
    Changes,
    Listing,
    Notify,
    RemoteEvent,
    Written,
)
from crmflow.domain.lease import Lease
from crmflow.errors import Conflict, NotFound
from crmflow.providers.base import (
    ItemNotFound,
    PreconditionFailed,
    UnsupportedOperation,
)
from crmflow.store import appointment_sync as store
from crmflow.store.appointment_sync import CursorState, MappingState, SyncSession
from crmflow.store.calendar_accounts import CalendarAccountStore
from crmflow.sync.status import (
    SideCursor,
    StatusRow,
    StatusSnapshot,
    SyncStatusRepository,
)

#: UIDs a run looks up one by one before it loads the organization's index
UID_LOOKUPS = 32

#: ``(stage, done, total)``; total None when unknown
Progress = Callable[[str, int, int | None], None]


class CrmCalendar(CalendarProvider):
    """The appointments one calendar account syncs, as side *a* of the pair.

    Lists the appointments mapped to the account and, with ``export_own``, the
    user's own appointments no other of their calendars syncs. A create whose
    UID an appointment of the organization has already is answered with that
    appointment (``adopted``): one meeting seen by two users is one appointment.
    A deletion from the calendar cancels the appointment (``cancel``) or deletes
    it. Without ``list_cancelled`` (a calendar that cannot hold a cancelled
    event: Google, Graph) an appointment cancelled in the CRM since the last
    sync is not listed, so the engine sees the cancellation as a deletion and
    deletes the event; the appointment itself stays, cancelled. Of another user's appointment only the acting user's own response
    (their attendee entry at ``own_addresses``) is taken; its owner's sync keeps
    the rest, and an event leaving this user's calendar leaves it alone.
    """

    def __init__(
        self,
        uow: SyncSession,
        account_id: uuid.UUID,
        *,
        export_own: bool,
        cancel: bool,
        list_cancelled: bool = True,
        own_addresses: frozenset[str] = frozenset(),
        progress: Progress | None = None,
    ) -> None:
        self._uow = uow
        self._own = frozenset(a.strip().lower() for a in own_addresses)
        self._account_id = account_id
        self._export_own = export_own
        self._cancel = cancel
        self._list_cancelled = list_cancelled
        self._progress = progress
        #: the organization's appointments by UID, once loaded; before that,
        #: the UIDs looked up one by one and the ones created by this run
        self._uids: dict[str, tuple[uuid.UUID, int]] | None = None
        self._known: dict[str, tuple[uuid.UUID, int] | None] = {}
        #: UIDs looked up ahead by :meth:`expect_creates`, good while the
        #: transaction that read them is open (another run may add one after)
        self._expected: dict[str, tuple[uuid.UUID, int] | None] = {}
        self._expected_at = -1
        #: the rows :meth:`expect_changes` read (the session keeps them only
        #: while someone else does)
        self._read_ahead: Sequence[object] = ()
        self.writes = 0
        #: responses to record on other users' appointments after the run:
        #: ``(owner, appointment, {address: status})`` (``store.apply_replies``)
        self.replies: list[tuple[uuid.UUID, uuid.UUID, dict[str, str]]] = []

    @property
    def capabilities(self) -> frozenset[Capability]:
        return frozenset(
            {Capability.RETURNS_VERSION_ON_WRITE, Capability.CANCELLED_EVENTS}
        )

    async def list(self) -> Listing:
        session = await self._uow.session()
        items = await store.listing(
            session,
            self._account_id,
            export_own=self._export_own,
            cancelled=self._list_cancelled,
        )
        # only an empty listing needs the count: cancelling every synced
        # appointment is no sudden emptiness of the CRM (case 12)
        withheld = (
            await store.cancelled_since_sync(session, self._account_id)
            if not items and not self._list_cancelled
            else 0
        )
        return Listing(items, withheld=withheld)

    async def list_changes(self, cursor: str) -> Changes:
        raise UnsupportedOperation("The CRM side has no change feed; list it.")

    async def get_many(self, remote_ids: Sequence[str]) -> Sequence[RemoteEvent]:
        session = await self._uow.session()
        return [
            RemoteEvent(str(s.id), str(s.version), s.event, s.updated_at)
            for s in await store.fetch(session, remote_ids)
        ]

    def _wrote(self) -> None:
        self.writes += 1
        if self._progress is not None:
            self._progress("Saving appointments", self.writes, None)

    async def create(
        self, event: CalendarEvent, *, idempotency_key: str, notify: Notify
    ) -> Written:
        found = await self._by_uid(event.ical_uid)
        if found is not None:
            return Written(str(found[0]), str(found[1]), adopted=True)
        appointment_id = store.insert_event(self._uow, event)
        if self._uow.queued >= store.INSERT_ROWS:
            await self._uow.session()  # writes them
        (self._known if self._uids is None else self._uids)[event.ical_uid] = (
            appointment_id,
            1,
        )
        self._wrote()
        return Written(str(appointment_id), "1")

    async def expect_creates(self, events: Sequence[CalendarEvent]) -> None:
        """Look the UIDs of the events to come up at once: one query for an
        incremental run's few, the organization's whole UID index for more
        than :data:`UID_LOOKUPS`."""
        if self._uids is not None:
            return
        wanted = sorted({e.ical_uid for e in events} - self._known.keys())
        if not wanted:
            return
        session = await self._uow.session()
        if len(self._known) + len(wanted) > UID_LOOKUPS:
            self._uids = await store.uid_index(session)
            self._uids.update({k: v for k, v in self._known.items() if v is not None})
            return
        found = await store.uid_lookups(session, wanted)
        self._expected = {uid: found.get(uid) for uid in wanted}
        self._expected_at = self._uow.commits

    async def expect_changes(self, remote_ids: Sequence[str]) -> None:
        """Read the appointments to update or delete at once (in the open
        transaction, where the writes that follow without a provider call in
        between find them)."""
        self._read_ahead = await store.read_ahead(await self._uow.session(), remote_ids)

    async def _by_uid(self, uid: str) -> tuple[uuid.UUID, int] | None:
        """The organization's appointment with this UID, if any.

        A run that creates a few appointments (the usual incremental one)
        looks each UID up, or takes :meth:`expect_creates`' answer while the
        transaction that read it is still open; one that creates many (an
        initial import) loads the organization's whole UID index once, after
        :data:`UID_LOOKUPS` single look-ups.
        """
        if self._uids is not None:
            return self._uids.get(uid)
        if uid in self._known:
            return self._known[uid]
        if (
            uid in self._expected
            and self._uow.is_open
            and self._uow.commits == self._expected_at
        ):
            # read in this very transaction: as good as a look-up now
            self._known[uid] = self._expected.pop(uid)
            return self._known[uid]
        session = await self._uow.session()
        if len(self._known) < UID_LOOKUPS:
            self._known[uid] = await store.uid_lookup(session, uid)
            return self._known[uid]
        self._uids = await store.uid_index(session)
        # created by this run and maybe not flushed: uid_index saw them anyway
        # (session() writes pending rows), but keep them for certainty
        self._uids.update({k: v for k, v in self._known.items() if v is not None})
        return self._uids.get(uid)

    async def update(
        self, remote_id: str, event: CalendarEvent, *, if_match: str, notify: Notify
    ) -> str | None:
        session = await self._uow.session()
        try:
            updated = await store.update_event(
                session,
                remote_id,
                event,
                expected_version=if_match,
                own_addresses=self._own,
            )
        except (NotFound, Conflict) as exc:
            raise _port_error(exc) from None
        if updated.owner_id is not None:
            if updated.replies:
                self.replies.append(
                    (updated.owner_id, uuid.UUID(remote_id), dict(updated.replies))
                )
        else:
            self._wrote()
        return str(updated.version)

    async def delete(self, remote_id: str, *, if_match: str, notify: Notify) -> None:
        session = await self._uow.session()
        try:
            await store.remove_event(
                session, remote_id, expected_version=if_match, cancel=self._cancel
            )
        except (NotFound, Conflict) as exc:
            raise _port_error(exc) from None
        self._wrote()


def _port_error(exc: NotFound | Conflict) -> Exception:
    if isinstance(exc, NotFound):
        return ItemNotFound(str(exc))
    return PreconditionFailed(str(exc))


class LeaseLost(Conflict):
    """Another run took over this run's calendar account: its lease ran out."""


class LeaseKeeper:
    """Keeps a run's lease (:class:`~crmflow.domain.lease.Lease`) while the
    run goes on: :meth:`keep` is called before each commit of the run's
    transaction (by :class:`CheckpointedCalendar` before each provider call,
    by :class:`DbStatusRepository` with the status) and renews the lease
    inside that transaction when it is due, or raises :class:`LeaseLost` if
    another run took the account, before this run commits anything more.
    """

    def __init__(
        self,
        account_id: uuid.UUID,
        lease: Lease,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._account_id = account_id
        self.lease = lease
        self._clock = clock

    async def keep(self, uow: SyncSession) -> None:
        """Renew the lease in the run's transaction (``uow``) if it is time.

        Raises:
            LeaseLost: another run holds the account now.
        """
        now = self._clock()
        if not self.lease.due(now):
            return
        until = self.lease.renewal(now)
        session = await uow.session()
        if not await CalendarAccountStore(session).renew_lease(
            self._account_id, self.lease.held, until
        ):
            raise LeaseLost(
                "This sync ran so long that its hold on the calendar ran out and "
                "another sync of it started; this one stopped without saving its "
                "last changes, which the other one picks up."
            )
        self.lease.renewed(until)


class DbStatusRepository(SyncStatusRepository):
    """The pair's status in ``calendar_event_mappings`` (one row per ident) and
    the account's cursor columns.

    :meth:`commit` writes only the rows that changed since :meth:`load` and then
    commits the run's transaction (with the CRM writes not yet committed);
    with ``defer_commit`` it leaves that transaction open for the owner of
    ``uow`` to commit (the service, together with the run's outcome).
    ``forget_cursor`` loads no cursor: the next listing is a full one (a
    ``full`` sync), and whatever it lacks counts as deleted.
    """

    def __init__(
        self,
        uow: SyncSession,
        account_id: uuid.UUID,
        *,
        synced_at: object,
        forget_cursor: bool = False,
        lease: LeaseKeeper | None = None,
        defer_commit: bool = False,
    ) -> None:
        self._uow = uow
        self._account_id = account_id
        self._synced_at = synced_at
        self._defer_commit = defer_commit
        self._forget_cursor = forget_cursor
        self._lease = lease
        self._loaded = StatusSnapshot()

    async def load(self) -> StatusSnapshot:
        session = await self._uow.session()
        states, cursor = await store.load_mappings(session, self._account_id)
        # the tuples' fields are StatusRow's, in its order (ident, CRM side,
        # calendar side)
        rows = {state[0]: StatusRow(*state) for state in states}
        side = None
        if cursor is not None and not self._forget_cursor:
            side = SideCursor(cursor.token, cursor.listing)
        self._loaded = StatusSnapshot(rows=rows, cursor_b=side)
        return self._loaded

    async def commit(self, snapshot: StatusSnapshot) -> None:
        old = self._loaded.rows
        new = snapshot.rows
        written = [
            MappingState(
                row.ident,
                row.id_a,
                row.ver_a,
                row.hash_a,
                row.id_b,
                row.ver_b,
                row.hash_b,
            )
            for ident, row in new.items()
            if old.get(ident) != row
        ]
        cursor = snapshot.cursor_b
        if self._lease is not None:
            # the status is written only while the lease is this run's
            await self._lease.keep(self._uow)
        session = await self._uow.session()
        await store.save_mappings(
            session,
            self._account_id,
            removed=[ident for ident in old if ident not in new],
            written=written,
            cursor=CursorState(cursor.token, cursor.listing) if cursor else None,
            synced_at=self._synced_at,
        )
        if not self._defer_commit:
            await self._uow.commit()
        self._loaded = snapshot


class CheckpointedCalendar(CalendarProvider):
    """A provider calendar whose every call first commits the run's open
    database transaction (see the module doc), and that reports progress."""

    def __init__(
        self,
        inner: CalendarProvider,
        uow: SyncSession,
        progress: Progress | None = None,
        lease: LeaseKeeper | None = None,
    ) -> None:
        self._inner = inner
        self._uow = uow
        self._progress = progress
        self._lease = lease
        self._listed: int | None = None
        self._fetched = 0
        #: the cursor and the request of :meth:`prefetch_changes`, until taken
        self._prefetch: tuple[str, asyncio.Future[Changes]] | None = None

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._inner.capabilities

    @property
    def get_many_limit(self) -> int | None:
        return self._inner.get_many_limit

    async def _checkpoint(self) -> None:
        if self._lease is not None:
            await self._lease.keep(self._uow)
        await self._uow.commit()

    def _report(self, stage: str, done: int, total: int | None) -> None:
        if self._progress is not None:
            self._progress(stage, done, total)

    async def list(self) -> Listing:
        # a full listing instead: the change feed asked ahead is not wanted
        await self.discard_prefetch()
        await self._checkpoint()
        self._report("Listing calendar events", 0, None)
        listing = await self._inner.list()
        self._listed = len(listing.items)
        self._report("Listing calendar events", self._listed, self._listed)
        return listing

    def prefetch_changes(self, cursor: str) -> None:
        """Start ``list_changes(cursor)`` on the provider now, without a
        checkpoint, and let the first :meth:`list_changes` with that cursor
        take its result.

        The change feed is the run's first provider request, and on an
        incremental run the largest wait: the provider answers it while the
        run reads its status and the CRM side (their transaction stays open
        until :meth:`list_changes` commits it, as usual). A read, so starting
        it early writes nothing anywhere. The caller must end with
        :meth:`discard_prefetch`; :meth:`list`, or :meth:`list_changes` with
        another cursor, cancels it at once.

        Raises:
            RuntimeError: a change feed asked ahead is still pending.
        """
        if self._prefetch is not None:
            raise RuntimeError("A change feed was already requested ahead.")
        task = asyncio.ensure_future(self._inner.list_changes(cursor))
        self._prefetch = (cursor, task)

    async def discard_prefetch(self) -> None:
        """Cancel a prefetched change feed no :meth:`list_changes` took, and
        drop whatever it raised (nothing used it)."""
        if self._prefetch is None:
            return
        _, task = self._prefetch
        self._prefetch = None
        # cancel() also marks an error it already ended with as retrieved, so
        # asyncio does not report it as lost (before any await: nothing can
        # come between)
        task.cancel()
        # wait without taking its outcome: a cancellation of this task still
        # propagates, the request's own does not
        await asyncio.wait({task})

    async def list_changes(self, cursor: str) -> Changes:
        if self._prefetch is not None and self._prefetch[0] != cursor:
            await self.discard_prefetch()
        await self._checkpoint()
        if self._prefetch is not None:
            _, task = self._prefetch
            self._prefetch = None
            # its result or its error, as if the request were made now
            return await task
        return await self._inner.list_changes(cursor)

    async def get_many(self, remote_ids: Sequence[str]) -> Sequence[RemoteEvent]:
        await self._checkpoint()
        found = await self._inner.get_many(remote_ids)
        self._fetched += len(remote_ids)
        self._report("Reading calendar events", self._fetched, self._listed)
        return found

    async def create(
        self, event: CalendarEvent, *, idempotency_key: str, notify: Notify
    ) -> Written:
        await self._checkpoint()
        return await self._inner.create(
            event, idempotency_key=idempotency_key, notify=notify
        )

    async def update(
        self, remote_id: str, event: CalendarEvent, *, if_match: str, notify: Notify
    ) -> str | None:
        await self._checkpoint()
        return await self._inner.update(
            remote_id, event, if_match=if_match, notify=notify
        )

    async def delete(self, remote_id: str, *, if_match: str, notify: Notify) -> None:
        await self._checkpoint()
        await self._inner.delete(remote_id, if_match=if_match, notify=notify)
