"""The planner: pure decisions, no I/O.

Input: the old status rows, and per side what it holds now (a :class:`SideView`
built by :func:`build_view` from the side's listing and the items fetched because
they are new or at a new version). Output: one :class:`Decision` per ident that
needs something (:func:`plan`, :func:`decide`). The engine applies them and calls
:func:`decide` again for an ident whose world changed under it (a 412, a lost
race on create, a re-read).

The decision table is vdirsyncer's (``sync/__init__.py`` ``_get_actions``;
sync-peers.md §2.3), with content hashes deciding what "changed" means:

======== ======== ================ ================== =====================================
in CRM   in cal.  CRM changed      calendar changed   decision
======== ======== ================ ================== =====================================
yes      yes      same content on both sides          record ids/versions, no write
yes      yes      yes              no                 update calendar from CRM
yes      yes      no               yes                update CRM from calendar
yes      yes      yes              yes                conflict -> :class:`ConflictPolicy`
yes      no       new (no status)  --                 create in calendar
yes      no       yes, cancelled   (deleted)          forget the status row (CRM side only)
yes      no       yes              (deleted)          :class:`DeletePolicy`
yes      no       no               (deleted)          delete from CRM
no       yes      (symmetric)
no       no       --               --                 forget the status row
======== ======== ================ ================== =====================================

A side "changed" an ident when the status has no row for it, or when the side's
content hash differs from the row's. An id or version that moved without a
content change is not a change (only recorded: cases 9 and 10). Writes aimed at a
read-only side are then turned into a revert, dropped, or refused
(:class:`ReadOnlyPolicy`, case 13).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from crmflow.domain.calendar import CalendarEvent, EventStatus, RemoteEvent
from crmflow.errors import ConfigError
from crmflow.sync.status import SideName, StatusRow

CRM = SideName.CRM
CALENDAR = SideName.CALENDAR


# ------------------------------------------------------------------ policies


class ConflictPolicy(enum.StrEnum):
    """What to do when both sides changed an event differently (case 5).

    Stored as ``calendar_accounts.conflict_strategy``.
    """

    #: write nothing; report a :class:`ConflictRecord` with both versions
    #: (``SyncConflict``) and ask again on every sync until someone decides
    MANUAL = "manual"
    #: the CRM's version overwrites the calendar's
    CRM_WINS = "crm_wins"
    #: the calendar's version overwrites the CRM's
    CALENDAR_WINS = "calendar_wins"
    #: the version changed last wins, by ``RemoteEvent.updated_at``. The two
    #: timestamps come from two clocks (the CRM database, the provider's
    #: servers), so clock skew decides close calls (Odoo's comment on its
    #: identical rule: "dangerous if google server time and odoo server time are
    #: different"). Ties and missing timestamps go to the CRM.
    LATEST_WINS = "latest_wins"
    #: a :data:`Resolver` merges the two versions; code only, not a setting
    CUSTOM = "custom"

    @classmethod
    def from_config(cls, value: str) -> ConflictPolicy:
        """The policy a setting names.

        Raises:
            ConfigError: not one of ``manual``, ``crm_wins``, ``calendar_wins``,
                ``latest_wins`` (``custom`` needs code, not a setting).
        """
        for policy in cls:
            if policy is not cls.CUSTOM and policy.value == value:
                return policy
        names = ", ".join(p.value for p in cls if p is not cls.CUSTOM)
        raise ConfigError(f"Unknown conflict policy {value!r}; use one of: {names}.")


class DeletePolicy(enum.StrEnum):
    """What wins when one side deleted an event the other side modified (case 4)."""

    #: the modified event is re-created where it was deleted (vdirsyncer's rule)
    MODIFICATION_WINS = "modification_wins"
    #: the deletion is carried out on the other side too
    DELETION_WINS = "deletion_wins"


class ReadOnlyPolicy(enum.StrEnum):
    """What to do with a change that would need a write to a read-only side
    (vdirsyncer's ``partial_sync``; case 13)."""

    #: undo the change on the writable side, so both sides match the read-only one
    REVERT = "revert"
    #: leave the change on the writable side only; it is looked at again on every
    #: sync (a later change on the read-only side may bring a deleted event back)
    IGNORE = "ignore"
    #: report ``PartialSync`` for the event and write nothing for it
    ERROR = "error"


class SyncDirection(enum.StrEnum):
    """Which sides the engine may write (``calendar_accounts.sync_direction``)."""

    TWO_WAY = "two_way"
    #: calendar -> CRM: the calendar side is treated as read-only
    IMPORT_ONLY = "import_only"
    #: CRM -> calendar: the CRM side is treated as read-only
    EXPORT_ONLY = "export_only"


#: merges the CRM's and the calendar's version of a conflicting event; must be
#: pure. The result's ``ical_uid`` is ignored (the ident stays). None leaves the
#: conflict to a person, as the manual policy does (a :class:`ConflictRecord`).
Resolver = Callable[[RemoteEvent, RemoteEvent], CalendarEvent | None]


@dataclass(frozen=True, slots=True)
class Rules:
    """The policies of one sync run.

    Raises:
        ConfigError: ``CUSTOM`` without a resolver, or a resolver without ``CUSTOM``.
    """

    conflicts: ConflictPolicy = ConflictPolicy.MANUAL
    deletes: DeletePolicy = DeletePolicy.MODIFICATION_WINS
    read_only: ReadOnlyPolicy = ReadOnlyPolicy.REVERT
    resolver: Resolver | None = None

    def __post_init__(self) -> None:
        if (self.conflicts is ConflictPolicy.CUSTOM) != (self.resolver is not None):
            raise ConfigError(
                "The custom conflict policy needs a resolver, and a resolver is "
                "used only with the custom conflict policy."
            )


# ------------------------------------------------------------------ side state


@dataclass(frozen=True, slots=True)
class ItemState:
    """What one side holds for an ident right now."""

    remote_id: str
    #: None right after a write that returned no version
    version: str | None
    content_hash: str
    #: the content, when it was fetched or written in this run (None: listed at
    #: the version the status records, so not fetched)
    event: CalendarEvent | None = None
    updated_at: dt.datetime | None = None

    @classmethod
    def of(cls, item: RemoteEvent) -> ItemState:
        """The state of a fetched item."""
        return cls(
            item.remote_id,
            item.version,
            item.event.content_hash(),
            item.event,
            item.updated_at,
        )


@dataclass(frozen=True, slots=True)
class SideView:
    """One side in one run: its items by ident, and the idents it holds twice."""

    name: SideName
    read_only: bool
    items: Mapping[str, ItemState]
    #: ident -> the remote ids that all carry it (case 11)
    clashes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


# ------------------------------------------------------------------ decisions


@dataclass(frozen=True, slots=True)
class Create:
    """Create the event on the target side."""

    event: CalendarEvent
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class Update:
    """Overwrite the target's item if it is still at ``if_match``."""

    remote_id: str
    if_match: str
    event: CalendarEvent


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete the target's item if it is still at ``if_match``."""

    remote_id: str
    if_match: str


Write = Create | Update | Delete


class Branch(enum.StrEnum):
    """Which row of the decision table an action comes from (the sync log says it)."""

    #: new on one side (no status row): created on the other (case 1)
    CREATED = "created"
    #: changed on one side only: copied to the other (case 2)
    UPDATED = "updated"
    #: deleted on one side, untouched on the other: deleted there too (case 3)
    DELETED = "deleted"
    #: deleted on one side, modified on the other: :class:`DeletePolicy` (case 4)
    DELETE_VS_MODIFY = "delete_vs_modify"
    #: changed differently on both sides: :class:`ConflictPolicy` (case 5)
    CONFLICT = "conflict"
    #: both sides hold the same content already: recorded, no write (cases 6, 7)
    IDENTICAL = "identical"
    #: only ids or versions moved: recorded, no write (cases 9, 10)
    METADATA = "metadata"
    #: gone from both sides: the status row is dropped
    GONE = "gone"
    #: the writable side was set back to the read-only side's state (case 13)
    REVERTED = "reverted"


@dataclass(frozen=True, slots=True)
class Action:
    """Writes for one ident (none, one, or one per side) and the row they lead to.

    After the writes the ident's status row holds both sides' states, or is
    dropped when neither side has the event.
    """

    ident: str
    branch: Branch
    #: the side whose change caused this (None: both or neither)
    source: SideName | None = None
    write_crm: Write | None = None
    write_calendar: Write | None = None
    #: the policy that chose these writes, for the sync log (case 4)
    policy: ConflictPolicy | DeletePolicy | ReadOnlyPolicy | None = None

    def write(self, side: SideName) -> Write | None:
        """The write aimed at ``side``."""
        return self.write_crm if side is CRM else self.write_calendar

    def writes(self) -> tuple[tuple[SideName, Write], ...]:
        """The writes in the order they run: CRM first."""
        pairs = ((CRM, self.write_crm), (CALENDAR, self.write_calendar))
        return tuple((side, w) for side, w in pairs if w is not None)


@dataclass(frozen=True, slots=True)
class ConflictRecord:
    """Both versions of an event changed differently on both sides (policy manual)."""

    ident: str
    crm: RemoteEvent
    calendar: RemoteEvent


@dataclass(frozen=True, slots=True)
class NeedsFetch:
    """The decision needs the content or the version of this item: read it, then
    decide again."""

    ident: str
    side: SideName
    remote_id: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A write to the read-only ``side`` was needed; policy error (``PartialSync``)."""

    ident: str
    side: SideName


@dataclass(frozen=True, slots=True)
class Ignored:
    """A write to the read-only ``side`` was needed; policy ignore: nothing happens
    and the status row stays as it was."""

    ident: str
    side: SideName


@dataclass(frozen=True, slots=True)
class IdentClash:
    """Several items of ``side`` carry the ident (``IdentConflict``, case 11)."""

    ident: str
    side: SideName
    remote_ids: tuple[str, ...]


Decision = Action | ConflictRecord | NeedsFetch | Refused | Ignored | IdentClash

#: decisions that end in an error; planned first, so that without an error
#: callback the sync stops before it writes anything
_FAILING = (IdentClash, Refused, ConflictRecord)


# ------------------------------------------------------------------ listing -> view


def storage_empty(
    rows: Mapping[str, StatusRow],
    crm_listing: Mapping[str, str],
    calendar_listing: Mapping[str, str],
) -> SideName | None:
    """The side that suddenly lists nothing while the other still lists items
    and the status is not empty (vdirsyncer's ``StorageEmpty``; case 12)."""
    if rows and crm_listing and not calendar_listing:
        return CALENDAR
    if rows and calendar_listing and not crm_listing:
        return CRM
    return None


def _by_remote_id(
    rows: Mapping[str, StatusRow], side: SideName
) -> dict[str, StatusRow]:
    """The status rows by their remote id on ``side``.

    The attributes are read directly, not through ``StatusRow.remote_id``:
    this runs over every row of every sync, unchanged rows included."""
    if side is CRM:
        return {row.id_a: row for row in rows.values()}
    return {row.id_b: row for row in rows.values()}


def ids_to_fetch(
    rows: Mapping[str, StatusRow], side: SideName, listing: Mapping[str, str]
) -> tuple[str, ...]:
    """The ids of ``side`` whose content is needed: unknown to the status (new or
    moved), or listed at another version than recorded (vdirsyncer
    ``prepare_new_status``). An id listed at its recorded version is not fetched
    (case 8)."""
    by_id = _by_remote_id(rows, side)
    crm = side is CRM
    wanted = []
    for remote_id, version in listing.items():
        row = by_id.get(remote_id)
        if row is None or (row.ver_a if crm else row.ver_b) != version:
            wanted.append(remote_id)
    return tuple(sorted(wanted))


def build_view(
    rows: Mapping[str, StatusRow],
    side: SideName,
    listing: Mapping[str, str],
    fetched: Iterable[RemoteEvent],
    *,
    read_only: bool,
) -> SideView:
    """What ``side`` holds, by ident.

    Ids listed at their recorded version keep the status row's ident and hash.
    Fetched items are placed by their ``ical_uid``; an id fetched that way under
    a known ident is a move (case 10). Listed ids missing from ``fetched`` were
    deleted between listing and fetching and count as absent.
    """
    by_id = _by_remote_id(rows, side)
    crm = side is CRM
    items: dict[str, ItemState] = {}
    #: idents held by more than one item, with all their items
    held_twice: dict[str, list[ItemState]] = {}

    def place(ident: str, state: ItemState) -> None:
        if ident in held_twice:
            held_twice[ident].append(state)
        elif ident in items:
            held_twice[ident] = [items.pop(ident), state]
        else:
            items[ident] = state

    for remote_id, version in listing.items():
        row = by_id.get(remote_id)
        if row is not None and (row.ver_a if crm else row.ver_b) == version:
            place(
                row.ident,
                ItemState(remote_id, version, row.hash_a if crm else row.hash_b),
            )
    for item in fetched:
        place(item.event.ical_uid, ItemState.of(item))
    return SideView(
        name=side,
        read_only=read_only,
        items=items,
        clashes={
            ident: tuple(sorted(s.remote_id for s in states))
            for ident, states in held_twice.items()
        },
    )


# ------------------------------------------------------------------ the table


def plan(
    rows: Mapping[str, StatusRow], crm: SideView, calendar: SideView, rules: Rules
) -> tuple[Decision, ...]:
    """A decision for every ident that needs one, failing ones first, then by ident."""
    idents = set(rows) | set(crm.items) | set(calendar.items)
    idents |= set(crm.clashes) | set(calendar.clashes)
    decisions: list[Decision] = []
    crm_items, calendar_items = crm.items, calendar.items
    for ident in idents:
        old = rows.get(ident)
        in_crm = crm_items.get(ident)
        in_calendar = calendar_items.get(ident)
        if (
            old is not None
            and in_crm is not None
            and in_calendar is not None
            and in_crm.content_hash == in_calendar.content_hash
            and in_crm.remote_id == old.id_a
            and in_crm.version == old.ver_a
            and in_calendar.remote_id == old.id_b
            and in_calendar.version == old.ver_b
            and ident not in crm.clashes
            and ident not in calendar.clashes
        ):
            # in sync and untouched since the last sync (the first row of the
            # table, case 8), checked inline: most idents of a run are these
            continue
        decision: Decision | None
        if ident in crm.clashes:
            decision = IdentClash(ident, CRM, crm.clashes[ident])
        elif ident in calendar.clashes:
            decision = IdentClash(ident, CALENDAR, calendar.clashes[ident])
        else:
            decision = decide(ident, old, crm, calendar, rules)
        if decision is not None:
            decisions.append(decision)
    return tuple(
        sorted(decisions, key=lambda d: (not isinstance(d, _FAILING), d.ident))
    )


def decide(
    ident: str,
    old: StatusRow | None,
    crm: SideView,
    calendar: SideView,
    rules: Rules,
) -> Decision | None:
    """The decision for one ident, or None when it is in sync and untouched."""
    decision = _table(
        ident, old, crm.items.get(ident), calendar.items.get(ident), rules
    )
    if isinstance(decision, Action):
        return _guard_read_only(decision, old, crm, calendar, rules)
    return decision


def _changed(state: ItemState, old: StatusRow | None, side: SideName) -> bool:
    return old is None or state.content_hash != old.content_hash(side)


def _as_recorded(state: ItemState, old: StatusRow, side: SideName) -> bool:
    return (state.remote_id, state.version) == (old.remote_id(side), old.version(side))


def _table(
    ident: str,
    old: StatusRow | None,
    in_crm: ItemState | None,
    in_calendar: ItemState | None,
    rules: Rules,
) -> Decision | None:
    if in_crm is not None and in_calendar is not None:
        if in_crm.content_hash == in_calendar.content_hash:
            if (
                old is not None
                and _as_recorded(in_crm, old, CRM)
                and _as_recorded(in_calendar, old, CALENDAR)
            ):
                # in sync and untouched since the last sync: nothing (case 8)
                return None
            if (
                old is not None
                and not _changed(in_crm, old, CRM)
                and not _changed(in_calendar, old, CALENDAR)
            ):
                # an id or version moved, the content did not: record (cases 9, 10)
                return Action(ident, Branch.METADATA)
            # both changed to the same content, or found equal without a status
            # row (first sync, lost status, a create whose reply was lost): adopt
            # without writing (cases 6, 7, 21)
            return Action(ident, Branch.IDENTICAL)
        crm_changed = _changed(in_crm, old, CRM)
        calendar_changed = _changed(in_calendar, old, CALENDAR)
        if crm_changed and not calendar_changed:
            # changed in the CRM only: copy it to the calendar (case 2)
            return _copy(ident, Branch.UPDATED, CRM, in_crm, in_calendar, old)
        if calendar_changed and not crm_changed:
            # changed in the calendar only: copy it to the CRM (case 2)
            return _copy(ident, Branch.UPDATED, CALENDAR, in_calendar, in_crm, old)
        # changed differently on both sides, or different without a status row
        # (cases 5, 7): the conflict policy decides
        return _resolve(ident, old, in_crm, in_calendar, rules)
    if in_crm is not None:
        return _one_sided(ident, old, CRM, in_crm, rules)
    if in_calendar is not None:
        return _one_sided(ident, old, CALENDAR, in_calendar, rules)
    # gone from both sides: drop the status row
    return Action(ident, Branch.GONE)


def _cancelled(state: ItemState) -> bool:
    return state.event is not None and state.event.status is EventStatus.CANCELLED


def _one_sided(
    ident: str, old: StatusRow | None, side: SideName, state: ItemState, rules: Rules
) -> Decision:
    """``side`` holds the ident, the other side does not."""
    if (
        side is CRM
        and old is not None
        and _cancelled(state)
        and _changed(state, old, side)
    ):
        # cancelled in the CRM since the last sync, deleted in the calendar:
        # both say the event is off. A cancelled copy would only bring back an
        # event someone deleted, as when a run that imported the deletion as a
        # cancellation stopped before recording it. Forgetting the row is
        # final on this side only: the CRM lists no unmapped cancelled
        # appointment (a calendar may list cancelled events, so one there
        # keeps the usual rules: Outlook's meetings called off, CalDAV's)
        return Action(ident, Branch.GONE)
    if old is None:
        # new on this side: create it on the other (case 1)
        return _copy(ident, Branch.CREATED, side, state, None, old)
    if _changed(state, old, side):
        if rules.deletes is DeletePolicy.MODIFICATION_WINS:
            # deleted there, modified here: re-create it there (case 4)
            return _copy(
                ident, Branch.DELETE_VS_MODIFY, side, state, None, old, rules.deletes
            )
        # deleted there, modified here, the deletion wins: delete here (case 4)
        return _delete(
            ident, Branch.DELETE_VS_MODIFY, side.other, side, state, rules.deletes
        )
    # deleted there, untouched here: delete it here too (case 3)
    return _delete(ident, Branch.DELETED, side.other, side, state)


def _resolve(
    ident: str,
    old: StatusRow | None,
    in_crm: ItemState,
    in_calendar: ItemState,
    rules: Rules,
) -> Decision:
    policy = rules.conflicts
    if policy is ConflictPolicy.CRM_WINS:
        return _copy(ident, Branch.CONFLICT, CRM, in_crm, in_calendar, old, policy)
    if policy is ConflictPolicy.CALENDAR_WINS:
        return _copy(ident, Branch.CONFLICT, CALENDAR, in_calendar, in_crm, old, policy)
    if policy is ConflictPolicy.LATEST_WINS:
        if (
            in_crm.updated_at is not None
            and in_calendar.updated_at is not None
            and in_calendar.updated_at > in_crm.updated_at
        ):
            return _copy(
                ident, Branch.CONFLICT, CALENDAR, in_calendar, in_crm, old, policy
            )
        # the CRM changed last, at the same time, or a timestamp is missing
        return _copy(ident, Branch.CONFLICT, CRM, in_crm, in_calendar, old, policy)
    # manual and custom need both versions in full
    crm_item = _remote(ident, CRM, in_crm)
    if isinstance(crm_item, NeedsFetch):
        return crm_item
    calendar_item = _remote(ident, CALENDAR, in_calendar)
    if isinstance(calendar_item, NeedsFetch):
        return calendar_item
    resolved = (
        None if rules.resolver is None else rules.resolver(crm_item, calendar_item)
    )
    if resolved is None:
        # manual (or a resolver that declines): write nothing, hand both
        # versions to a person
        return ConflictRecord(ident, crm_item, calendar_item)
    # custom: write the merge to each side that differs from it
    merged = replace(resolved, ical_uid=ident)
    merged_hash = merged.content_hash()
    return Action(
        ident,
        Branch.CONFLICT,
        write_crm=None
        if merged_hash == in_crm.content_hash
        else Update(crm_item.remote_id, crm_item.version, merged),
        write_calendar=None
        if merged_hash == in_calendar.content_hash
        else Update(calendar_item.remote_id, calendar_item.version, merged),
        policy=policy,
    )


def _remote(ident: str, side: SideName, state: ItemState) -> RemoteEvent | NeedsFetch:
    if state.event is None or state.version is None:
        return NeedsFetch(ident, side, state.remote_id)
    return RemoteEvent(state.remote_id, state.version, state.event, state.updated_at)


def idempotency_key(ident: str, old: StatusRow | None, target: SideName) -> str:
    """The key for creating ``ident`` on ``target``: 40 hex characters.

    The same for every retry while the ident's status row is unchanged (a failed
    or crashed create keeps the row), different for a re-creation after a
    deletion (the row then names the deleted item), so a provider that keeps
    deleted ids (Google answers 409 for them) is not asked to reuse one.
    """
    basis: list[str | None] = ["crmflow-sync/1", ident, str(target)]
    if old is not None:
        basis += [old.remote_id(target), old.version(target)]
    return hashlib.sha256(json.dumps(basis).encode()).hexdigest()[:40]


def _copy(
    ident: str,
    branch: Branch,
    source: SideName,
    state: ItemState,
    target_state: ItemState | None,
    old: StatusRow | None,
    policy: ConflictPolicy | DeletePolicy | ReadOnlyPolicy | None = None,
) -> Decision:
    """Make the other side hold ``state``'s content."""
    if state.event is None:
        return NeedsFetch(ident, source, state.remote_id)
    target = source.other
    write: Write
    if target_state is None:
        write = Create(state.event, idempotency_key(ident, old, target))
    elif target_state.version is None:
        # our own write returned no version: read it before writing on top of it
        return NeedsFetch(ident, target, target_state.remote_id)
    else:
        write = Update(target_state.remote_id, target_state.version, state.event)
    return _action(ident, branch, source, target, write, policy)


def _delete(
    ident: str,
    branch: Branch,
    source: SideName,
    target: SideName,
    state: ItemState,
    policy: ConflictPolicy | DeletePolicy | ReadOnlyPolicy | None = None,
) -> Decision:
    """Delete ``state`` from ``target`` (conditional on its version)."""
    if state.version is None:
        return NeedsFetch(ident, target, state.remote_id)
    return _action(
        ident, branch, source, target, Delete(state.remote_id, state.version), policy
    )


def _action(
    ident: str,
    branch: Branch,
    source: SideName,
    target: SideName,
    write: Write,
    policy: ConflictPolicy | DeletePolicy | ReadOnlyPolicy | None,
) -> Action:
    if target is CRM:
        return Action(ident, branch, source, write_crm=write, policy=policy)
    return Action(ident, branch, source, write_calendar=write, policy=policy)


def _guard_read_only(
    action: Action,
    old: StatusRow | None,
    crm: SideView,
    calendar: SideView,
    rules: Rules,
) -> Decision:
    for read_only, writable in ((crm, calendar), (calendar, crm)):
        if not read_only.read_only or action.write(read_only.name) is None:
            continue
        if rules.read_only is ReadOnlyPolicy.ERROR:
            # refuse: report PartialSync, write nothing for this ident
            return Refused(action.ident, read_only.name)
        if rules.read_only is ReadOnlyPolicy.IGNORE:
            # leave the change where it is; the old row makes us look again
            return Ignored(action.ident, read_only.name)
        # revert: set the writable side back to what the read-only side holds
        return _revert(action, old, read_only, writable)
    return action


def _revert(
    action: Action, old: StatusRow | None, read_only: SideView, writable: SideView
) -> Decision:
    ident = action.ident
    policy = ReadOnlyPolicy.REVERT
    if isinstance(action.write(read_only.name), Create):
        # created on the writable side only: delete it there again
        state = writable.items[ident]
        return _delete(
            ident, Branch.REVERTED, read_only.name, writable.name, state, policy
        )
    # updated or deleted on the writable side: restore the read-only side's item
    kept = read_only.items[ident]
    return _copy(
        ident,
        Branch.REVERTED,
        read_only.name,
        kept,
        writable.items.get(ident),
        old,
        policy,
    )
