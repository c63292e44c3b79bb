"""Runs one sync of a pair: list, fetch, plan, write, record.

:func:`sync_pair` does, in order:

1. refuse when both sides are read-only (``BothReadOnly``);
2. list each side, from its change feed when it is ``INCREMENTAL`` and a cursor
   is stored, else in full; an expired cursor falls back to one full listing,
   and whatever that listing lacks counts as deleted (case 22);
3. stop when one side suddenly lists nothing while the status is not empty
   (``StorageEmpty``, case 12), unless ``force_delete``;
4. fetch, in bulk, what is new or listed at a new version (case 16); nothing
   else is fetched (case 8);
5. plan (``plan.py``), fetch in bulk what reverts need, then settle each ident:
   apply its writes, each conditional on the version just seen. A stale version
   (412) or a vanished item means re-read that item and decide again, never a
   blind overwrite (case 17); a create that finds the item already there adopts
   it (case 21). An ident whose writes fail keeps its old status row, so the
   next sync tries again (per-ident rollback, case 14);
6. commit the new status as one snapshot, also when the run stops early.

Every write is a sync write (``Notify.NONE``: no invitations, case 26), and the
status stores the version and content hash each write produced, so the next run
recognises its own writes and does not echo them back (case 20).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from crmflow.domain.calendar import CalendarProvider, Capability, Notify, RemoteEvent
from crmflow.errors import CrmflowError
from crmflow.providers.base import (
    AuthError,
    CursorExpired,
    ItemAlreadyExists,
    ItemNotFound,
    PreconditionFailed,
    RateLimited,
)
from crmflow.sync.errors import (
    BothReadOnly,
    IdentConflict,
    PartialSync,
    StorageEmpty,
    SyncConflict,
)
from crmflow.sync.plan import (
    Action,
    Branch,
    ConflictPolicy,
    ConflictRecord,
    Create,
    Decision,
    DeletePolicy,
    IdentClash,
    Ignored,
    ItemState,
    NeedsFetch,
    ReadOnlyPolicy,
    Refused,
    Resolver,
    Rules,
    SideView,
    SyncDirection,
    Update,
    Write,
    build_view,
    decide,
    ids_to_fetch,
    plan,
    storage_empty,
)
from crmflow.sync.status import (
    SideCursor,
    SideName,
    StatusRow,
    StatusSnapshot,
    SyncStatusRepository,
)

CRM = SideName.CRM
CALENDAR = SideName.CALENDAR

#: how often one ident may be decided again in one run (after a stale version, a
#: re-read, an adopted create) before it is left to the next sync
MAX_ATTEMPTS = 4


class WriteKind(enum.StrEnum):
    """What a write did."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """One write the engine made."""

    side: SideName
    kind: WriteKind
    remote_id: str


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One applied action: a row of the sync log."""

    ident: str
    #: the row of the decision table it came from
    branch: Branch
    #: the side whose change caused it (None: both or neither)
    source: SideName | None
    #: empty for actions that only updated the status
    writes: tuple[WriteRecord, ...]
    #: the policy that chose the writes (conflict, delete-vs-modify, read-only)
    policy: ConflictPolicy | DeletePolicy | ReadOnlyPolicy | None


@dataclass(frozen=True, slots=True)
class ItemError:
    """An ident that could not be synced in this run; its status row is unchanged
    and the next sync tries again."""

    ident: str
    error: CrmflowError


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one run did."""

    #: applied actions, in order (one sync-log row each)
    log: tuple[LogEntry, ...] = ()
    #: events changed differently on both sides under the manual policy
    conflicts: tuple[ConflictRecord, ...] = ()
    #: idents skipped because of an error (given to ``on_error`` as they happened)
    errors: tuple[ItemError, ...] = ()
    #: idents left alone because the read-only policy is ``ignore``
    ignored: tuple[str, ...] = ()
    #: sides whose cursor had expired and that were listed in full (case 22)
    cursor_reset: frozenset[SideName] = frozenset()

    @property
    def writes(self) -> tuple[WriteRecord, ...]:
        """Every write, in order."""
        return tuple(w for entry in self.log for w in entry.writes)


async def sync_pair(
    crm: CalendarProvider,
    calendar: CalendarProvider,
    status: SyncStatusRepository,
    *,
    conflicts: ConflictPolicy = ConflictPolicy.MANUAL,
    resolver: Resolver | None = None,
    deletes: DeletePolicy = DeletePolicy.MODIFICATION_WINS,
    read_only: ReadOnlyPolicy = ReadOnlyPolicy.REVERT,
    direction: SyncDirection = SyncDirection.TWO_WAY,
    force_delete: bool = False,
    on_error: Callable[[ItemError], None] | None = None,
) -> SyncResult:
    """Sync the CRM side and a calendar side in both directions, once.

    Args:
        crm: side *a*, the CRM appointments (``CalendarProvider`` over the store).
        calendar: side *b*, the provider calendar.
        status: this pair's status; read once, committed once.
        conflicts: both sides changed an event differently (case 5).
        resolver: the merge for ``ConflictPolicy.CUSTOM``.
        deletes: one side deleted what the other modified (case 4).
        read_only: a change needs a write to a read-only side (case 13).
        direction: ``IMPORT_ONLY``/``EXPORT_ONLY`` treat the calendar/CRM side
            as read-only.
        force_delete: carry out deletions even when one side suddenly lists
            nothing (case 12).
        on_error: called with each ident that fails (a write error,
            ``SyncConflict``, ``IdentConflict``, ``PartialSync``); the run goes
            on with the other idents. Without it the first such error is raised
            once the status of what was done is committed. ``AuthError`` and
            ``RateLimited`` always end the run (the next idents would fail too).

    Returns:
        What was written, what conflicts remain, what failed.

    Raises:
        ConfigError: ``CUSTOM`` without ``resolver`` or the other way round.
        BothReadOnly: neither side may be written.
        StorageEmpty: see ``force_delete``; nothing was written.
        ProviderError: listing or fetching failed; nothing was written.
        SyncError, ProviderError: the first ident error, when ``on_error`` is None.
    """
    rules = Rules(conflicts, deletes, read_only, resolver)
    sides = (
        _Side(CRM, crm, _is_read_only(crm, CRM, direction)),
        _Side(CALENDAR, calendar, _is_read_only(calendar, CALENDAR, direction)),
    )
    if sides[0].read_only and sides[1].read_only:
        raise BothReadOnly()
    return await _Run(sides, status, rules, force_delete, on_error).run()


def _is_read_only(
    provider: CalendarProvider, name: SideName, direction: SyncDirection
) -> bool:
    if Capability.READ_ONLY in provider.capabilities:
        return True
    if direction is SyncDirection.IMPORT_ONLY:
        return name is CALENDAR
    return direction is SyncDirection.EXPORT_ONLY and name is CRM


@dataclass
class _Side:
    """One side during a run; ``items`` follows every write and re-read."""

    name: SideName
    provider: CalendarProvider
    read_only: bool
    items: dict[str, ItemState] = field(default_factory=dict)
    clashes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: ``Listing.withheld`` of this run's listing (0 for a change feed)
    withheld: int = 0

    def view(self) -> SideView:
        return SideView(self.name, self.read_only, self.items, self.clashes)


class _Run:
    def __init__(
        self,
        sides: tuple[_Side, _Side],
        status: SyncStatusRepository,
        rules: Rules,
        force_delete: bool,
        on_error: Callable[[ItemError], None] | None,
    ) -> None:
        self.crm, self.calendar = sides
        self.status = status
        self.rules = rules
        self.force_delete = force_delete
        self.on_error = on_error
        self.old = StatusSnapshot()
        #: the status being built: starts as the old one, an ident's row is
        #: replaced only when all its writes succeeded
        self.rows: dict[str, StatusRow] = {}
        self.log: list[LogEntry] = []
        self.conflicts: list[ConflictRecord] = []
        self.errors: list[ItemError] = []
        self.ignored: list[str] = []
        self.reset: set[SideName] = set()

    def side(self, name: SideName) -> _Side:
        return self.crm if name is CRM else self.calendar

    async def run(self) -> SyncResult:
        self.old = await self.status.load()
        crm_listing, crm_cursor = await self._list(self.crm)
        calendar_listing, calendar_cursor = await self._list(self.calendar)
        if not self.force_delete:
            empty = storage_empty(self.old.rows, crm_listing, calendar_listing)
            # withheld items explain an empty listing only when they account
            # for everything synced before (not one cancellation among many
            # deletions)
            if empty is not None and self.side(empty).withheld < len(self.old.rows):
                raise StorageEmpty(empty, synced=len(self.old.rows))
        for side, listing in (
            (self.crm, crm_listing),
            (self.calendar, calendar_listing),
        ):
            fetched = await self._fetch(
                side, ids_to_fetch(self.old.rows, side.name, listing)
            )
            view = build_view(
                self.old.rows, side.name, listing, fetched, read_only=side.read_only
            )
            side.items = dict(view.items)
            side.clashes = dict(view.clashes)
        decisions = plan(
            self.old.rows, self.crm.view(), self.calendar.view(), self.rules
        )
        decisions = await self._prefetch(decisions)
        await self._expect_writes(decisions)

        self.rows = dict(self.old.rows)
        try:
            for decision in decisions:
                await self._settle(decision)
        finally:
            # also after an error: rows of unfinished idents are the old ones,
            # so this snapshot is consistent (case 14)
            new = StatusSnapshot(self.rows, crm_cursor, calendar_cursor)
            if new != self.old:
                await self.status.commit(new)
        return SyncResult(
            log=tuple(self.log),
            conflicts=tuple(self.conflicts),
            errors=tuple(self.errors),
            ignored=tuple(self.ignored),
            cursor_reset=frozenset(self.reset),
        )

    # -------------------------------------------------------------- reading

    async def _list(self, side: _Side) -> tuple[dict[str, str], SideCursor | None]:
        """The side's listing, and the cursor to store for next time."""
        provider = side.provider
        incremental = Capability.INCREMENTAL in provider.capabilities
        cursor = self.old.cursor(side.name)
        if incremental and cursor is not None:
            try:
                changes = await provider.list_changes(cursor.token)
            except CursorExpired:
                # the provider forgot our position: list everything, once (a
                # failure of that listing ends the run, it does not loop); items
                # it lacks are deletions like any other (case 22)
                self.reset.add(side.name)
            else:
                listing = dict(cursor.listing)
                listing.update(changes.changed)
                for remote_id in changes.deleted:
                    listing.pop(remote_id, None)
                return listing, SideCursor(changes.cursor, listing)
        full = await provider.list()
        side.withheld = full.withheld
        listing = dict(full.items)
        if incremental and full.cursor is not None:
            return listing, SideCursor(full.cursor, listing)
        return listing, None

    async def _fetch(self, side: _Side, remote_ids: Sequence[str]) -> list[RemoteEvent]:
        """Bulk fetch, split only where the side limits the batch (case 16)."""
        if not remote_ids:
            return []
        limit = side.provider.get_many_limit or len(remote_ids)
        items: list[RemoteEvent] = []
        for start in range(0, len(remote_ids), limit):
            items.extend(
                await side.provider.get_many(remote_ids[start : start + limit])
            )
        return items

    async def _reread(self, side: _Side, wanted: Sequence[tuple[str, str]]) -> None:
        """Fetch ``(ident, remote id)`` pairs again and put what they hold now
        into the side's state."""
        fetched = {
            item.remote_id: item
            for item in await self._fetch(side, [remote_id for _, remote_id in wanted])
        }
        for ident, remote_id in wanted:
            item = fetched.get(remote_id)
            if item is not None and item.event.ical_uid == ident:
                side.items[ident] = ItemState.of(item)
            else:
                # gone, or it carries another UID now: absent under this ident
                side.items.pop(ident, None)

    async def _find(self, side: _Side, ident: str) -> bool:
        """Look for an item with UID ``ident`` among the side's unknown ids."""
        listing = (await side.provider.list()).items
        known = {state.remote_id for state in side.items.values()}
        unknown = sorted(remote_id for remote_id in listing if remote_id not in known)
        for item in await self._fetch(side, unknown):
            if item.event.ical_uid == ident:
                side.items[ident] = ItemState.of(item)
                return True
        return False

    async def _prefetch(self, decisions: Sequence[Decision]) -> tuple[Decision, ...]:
        """Fetch in bulk what the first plan needs (reverts from an unchanged
        read-only side), then decide those idents again."""
        wanted = [d for d in decisions if isinstance(d, NeedsFetch)]
        if not wanted:
            return tuple(decisions)
        for side in (self.crm, self.calendar):
            pairs = [(d.ident, d.remote_id) for d in wanted if d.side is side.name]
            if pairs:
                await self._reread(side, pairs)
        redecided = (
            self._decide(d.ident) if isinstance(d, NeedsFetch) else d for d in decisions
        )
        return tuple(d for d in redecided if d is not None)

    async def _expect_writes(self, decisions: Sequence[Decision]) -> None:
        """Tell each side which events the plan creates on it and which items
        it updates or deletes there (one bulk read there instead of one per
        write)."""
        for side in (self.crm, self.calendar):
            writes = [
                write
                for d in decisions
                if isinstance(d, Action) and (write := d.write(side.name)) is not None
            ]
            events = [w.event for w in writes if isinstance(w, Create)]
            if events:
                await side.provider.expect_creates(events)
            changed = [w.remote_id for w in writes if not isinstance(w, Create)]
            if changed:
                await side.provider.expect_changes(changed)

    def _decide(self, ident: str) -> Decision | None:
        return decide(
            ident,
            self.old.rows.get(ident),
            self.crm.view(),
            self.calendar.view(),
            self.rules,
        )

    # -------------------------------------------------------------- writing

    async def _settle(self, first: Decision) -> None:
        """Carry one ident through: apply, re-read and decide again as needed."""
        ident = first.ident
        # None: nothing (left) to do, e.g. a re-read found both sides in sync
        decision: Decision | None = first
        attempts = 0
        try:
            while decision is not None:
                if attempts == MAX_ATTEMPTS:
                    raise PreconditionFailed(
                        f"The event {ident!r} kept changing while it was synced; "
                        "the next sync tries again."
                    )
                attempts += 1
                if isinstance(decision, Ignored):
                    self.ignored.append(ident)
                    return
                if isinstance(decision, ConflictRecord):
                    self.conflicts.append(decision)
                    raise SyncConflict(decision)
                if isinstance(decision, Refused):
                    raise PartialSync(decision.side, ident)
                if isinstance(decision, IdentClash):
                    raise IdentConflict(decision.side, ident, decision.remote_ids)
                if isinstance(decision, NeedsFetch):
                    await self._reread(
                        self.side(decision.side), [(ident, decision.remote_id)]
                    )
                elif await self._apply(decision):
                    return
                decision = self._decide(ident)
        except CrmflowError as exc:
            failure = ItemError(ident, exc)
            self.errors.append(failure)
            if self.on_error is None or isinstance(exc, AuthError | RateLimited):
                raise
            self.on_error(failure)

    async def _apply(self, action: Action) -> bool:
        """Run the action's writes and record the ident's new row.

        Returns:
            False when the world changed under a write and the ident must be
            decided again; the writes made so far are in the sides' state.
        """
        ident = action.ident
        records: list[WriteRecord] = []
        for name, write in action.writes():
            record = await self._write(self.side(name), ident, write)
            if record is None:
                return False
            records.append(record)
        in_crm = self.crm.items.get(ident)
        in_calendar = self.calendar.items.get(ident)
        if in_crm is not None and in_calendar is not None:
            self.rows[ident] = StatusRow(
                ident,
                in_crm.remote_id,
                in_crm.version,
                in_crm.content_hash,
                in_calendar.remote_id,
                in_calendar.version,
                in_calendar.content_hash,
            )
        else:
            self.rows.pop(ident, None)
        self.log.append(
            LogEntry(ident, action.branch, action.source, tuple(records), action.policy)
        )
        return True

    async def _write(self, side: _Side, ident: str, write: Write) -> WriteRecord | None:
        """One conditional write; None when the ident must be decided again."""
        provider = side.provider
        if isinstance(write, Create):
            try:
                written = await provider.create(
                    write.event,
                    idempotency_key=write.idempotency_key,
                    notify=Notify.NONE,
                )
            except ItemAlreadyExists:
                # it exists but was not listed (listing lag, another worker, an
                # earlier try whose reply was lost): find it by UID (case 21)
                if await self._find(side, ident):
                    return None
                raise
            if written.adopted:
                # an earlier try made it; its content is unknown: read it (case 21)
                await self._reread(side, [(ident, written.remote_id)])
                return None
            side.items[ident] = ItemState(
                written.remote_id,
                written.version,
                write.event.content_hash(),
                write.event,
            )
            return WriteRecord(side.name, WriteKind.CREATE, written.remote_id)
        try:
            if isinstance(write, Update):
                version = await provider.update(
                    write.remote_id,
                    write.event,
                    if_match=write.if_match,
                    notify=Notify.NONE,
                )
                side.items[ident] = ItemState(
                    write.remote_id, version, write.event.content_hash(), write.event
                )
                return WriteRecord(side.name, WriteKind.UPDATE, write.remote_id)
            await provider.delete(
                write.remote_id, if_match=write.if_match, notify=Notify.NONE
            )
        except ItemNotFound:
            if isinstance(write, Update):
                # gone before we could update it: re-read (it is absent now)
                # and decide again; a modification may re-create it (case 4)
                await self._reread(side, [(ident, write.remote_id)])
                return None
            # a delete found it gone already: that is what it wanted
        except PreconditionFailed:
            # changed since we read it (412): re-read it and decide again,
            # never write without a precondition (case 17)
            await self._reread(side, [(ident, write.remote_id)])
            return None
        side.items.pop(ident, None)
        return WriteRecord(side.name, WriteKind.DELETE, write.remote_id)
