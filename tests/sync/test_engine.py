"""The sync engine against two memory calendars: conformance cases 1-18, 20-22
and 26 of the conformance list in docs/sync.md (test names carry the number).

Side *a* is the CRM, side *b* the calendar. "Writes" are create/update/delete
calls recorded by ``MemoryCalendar``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from crmflow.domain.calendar import CalendarEvent, Listing, Notify
from crmflow.errors import ConfigError
from crmflow.providers.base import (
    AuthError,
    CursorExpired,
    ItemAlreadyExists,
    PreconditionFailed,
    RateLimited,
    TransientProviderError,
)
from crmflow.providers.memory import WRITES, DuplicateCreate, MemoryCalendar, Method
from crmflow.sync import (
    Branch,
    ConflictPolicy,
    DeletePolicy,
    ItemError,
    ReadOnlyPolicy,
    SideName,
    SyncDirection,
    SyncResult,
    WriteKind,
    WriteRecord,
)
from crmflow.sync.errors import (
    BothReadOnly,
    IdentConflict,
    PartialSync,
    StorageEmpty,
    SyncConflict,
)
from crmflow.sync.status import InMemoryStatusRepository, StatusSnapshot

from .helpers import CALENDAR, CRM, Clock, Pair, event, make_pair, synced_pair


def methods(calendar: MemoryCalendar) -> list[Method]:
    return [call.method for call in calendar.calls]


def kinds(result: SyncResult) -> list[tuple[SideName, WriteKind]]:
    return [(w.side, w.kind) for w in result.writes]


# ------------------------------------------------------------------ case 1


async def test_case01_creation_flows_both_ways():
    pair = make_pair()
    crm_id = pair.crm.put(event("from-crm", "Demo"))
    calendar_id = pair.calendar.put(event("from-calendar", "Lunch"))

    result = await pair.sync()

    assert pair.calendar.events()["from-crm"] == event("from-crm", "Demo")
    assert pair.crm.events()["from-calendar"] == event("from-calendar", "Lunch")
    assert kinds(result) == [(CRM, WriteKind.CREATE), (CALENDAR, WriteKind.CREATE)]
    assert [(e.branch, e.source) for e in result.log] == [
        (Branch.CREATED, CALENDAR),
        (Branch.CREATED, CRM),
    ]
    rows = await pair.rows()
    row = rows["from-crm"]
    assert (row.id_a, row.ver_a) == (crm_id, pair.crm.items[crm_id].version)
    new_id = pair.calendar.id_of("from-crm")
    assert (row.id_b, row.ver_b) == (new_id, pair.calendar.items[new_id].version)
    assert row.hash_a == row.hash_b == event("from-crm", "Demo").content_hash()
    assert rows["from-calendar"].id_b == calendar_id
    await pair.assert_in_sync()


class _Expecting(MemoryCalendar):
    """Records each ``expect_creates`` hint: its UIDs and the writes made
    before it."""

    def __init__(self, **knobs: Any) -> None:
        super().__init__(**knobs)
        self.hints: list[tuple[list[str], list[Method]]] = []

    async def expect_creates(self, events: Sequence[CalendarEvent]) -> None:
        writes = [m for m in methods(self) if m in WRITES]
        self.hints.append((sorted(e.ical_uid for e in events), writes))


async def test_each_side_hears_of_its_creates_before_the_first_write():
    clock = Clock()
    pair = Pair(_Expecting(clock=clock), _Expecting(clock=clock))
    pair.crm.put(event("synced"))
    await pair.sync()
    pair.forget_calls()
    pair.crm.put(event("crm-1"))
    pair.crm.put(event("crm-2"))
    pair.calendar.put(event("calendar-1"))
    synced = pair.calendar.id_of("synced")
    pair.calendar.edit(synced, event("synced", "Moved"))  # an update: no hint

    await pair.sync()

    assert isinstance(pair.crm, _Expecting)
    assert isinstance(pair.calendar, _Expecting)
    assert pair.crm.hints[-1] == (["calendar-1"], [])
    assert pair.calendar.hints[-1] == (["crm-1", "crm-2"], [])
    assert len(pair.calendar.hints) == 2  # the first run's, and this one
    await pair.assert_in_sync()


# ------------------------------------------------------------------ case 2


@pytest.mark.parametrize("changed", [CRM, CALENDAR])
async def test_case02_one_sided_update_propagates(changed):
    pair = await synced_pair("x")
    source, target = pair.side(changed), pair.side(changed.other)
    target_version = target.items[target.id_of("x")].version
    source.edit(source.id_of("x"), event("x", "Renamed"))

    result = await pair.sync()

    assert target.events()["x"].title == "Renamed"
    assert [(c.method, c.if_match) for c in target.writes] == [
        (Method.UPDATE, target_version)
    ]
    assert source.writes == []
    assert [(e.branch, e.source) for e in result.log] == [(Branch.UPDATED, changed)]
    row = (await pair.rows())["x"]
    assert row.ver_a == pair.crm.items[pair.crm.id_of("x")].version
    assert row.ver_b == pair.calendar.items[pair.calendar.id_of("x")].version
    await pair.assert_in_sync()


# ------------------------------------------------------------------ case 3


@pytest.mark.parametrize("deleted", [CRM, CALENDAR])
async def test_case03_one_sided_deletion_propagates(deleted):
    pair = await synced_pair("x", "keep")
    source, target = pair.side(deleted), pair.side(deleted.other)
    target_id = target.id_of("x")
    target_version = target.items[target_id].version
    source.remove(source.id_of("x"))

    result = await pair.sync()

    assert "x" not in target.events()
    assert [(c.method, c.remote_ids, c.if_match) for c in target.writes] == [
        (Method.DELETE, (target_id,), target_version)
    ]
    assert [(e.branch, e.source) for e in result.log] == [(Branch.DELETED, deleted)]
    assert set(await pair.rows()) == {"keep"}

    # a later re-creation under the same ident syncs as a fresh create
    source.put(event("x", "Again"))
    result = await pair.sync()
    assert [e.branch for e in result.log] == [Branch.CREATED]
    assert target.events()["x"].title == "Again"
    await pair.assert_in_sync()


# ------------------------------------------------------------------ case 4


@pytest.mark.parametrize("deleted", [CRM, CALENDAR])
async def test_case04_modification_wins_over_deletion_by_default(deleted):
    pair = await synced_pair("x", "other")
    gone, kept = pair.side(deleted), pair.side(deleted.other)
    gone.remove(gone.id_of("x"))
    kept.edit(kept.id_of("x"), event("x", "Still needed"))

    result = await pair.sync()

    assert gone.events()["x"].title == "Still needed"
    assert [(e.branch, e.policy) for e in result.log] == [
        (Branch.DELETE_VS_MODIFY, DeletePolicy.MODIFICATION_WINS)
    ]
    assert [c.method for c in gone.writes] == [Method.CREATE]
    assert kept.writes == []
    await pair.assert_in_sync()


async def test_case04_deletion_wins_when_configured():
    pair = await synced_pair("x", "other")
    pair.crm.remove(pair.crm.id_of("x"))
    pair.calendar.edit(pair.calendar.id_of("x"), event("x", "Edited"))

    result = await pair.sync(deletes=DeletePolicy.DELETION_WINS)

    assert set(pair.calendar.events()) == {"other"} == set(pair.crm.events())
    assert [(e.branch, e.source, e.policy) for e in result.log] == [
        (Branch.DELETE_VS_MODIFY, CRM, DeletePolicy.DELETION_WINS)
    ]
    assert set(await pair.rows()) == {"other"}


# ------------------------------------------------------------------ case 5


async def both_changed(
    crm_title: str = "CRM edit", calendar_title: str = "Calendar edit"
) -> Pair:
    pair = await synced_pair("x", "y")
    pair.crm.edit(pair.crm.id_of("x"), event("x", crm_title))
    pair.calendar.edit(pair.calendar.id_of("x"), event("x", calendar_title))
    return pair


async def test_case05_conflict_without_policy_raises_and_writes_nothing():
    pair = await both_changed()
    rows = await pair.rows()

    with pytest.raises(SyncConflict) as raised:
        await pair.sync()

    conflict = raised.value
    assert (conflict.ident, conflict.crm_id, conflict.calendar_id) == (
        "x",
        pair.crm.id_of("x"),
        pair.calendar.id_of("x"),
    )
    assert "'x'" in str(conflict)
    assert conflict.record.crm.event.title == "CRM edit"
    assert conflict.record.calendar.event.title == "Calendar edit"
    assert pair.crm.writes == [] == pair.calendar.writes
    assert await pair.rows() == rows


async def test_case05_manual_policy_reports_both_versions_every_time():
    pair = await both_changed()
    pair.crm.edit(pair.crm.id_of("y"), event("y", "Unrelated"))
    errors: list[ItemError] = []

    result = await pair.sync(conflicts=ConflictPolicy.MANUAL, on_error=errors.append)

    [record] = result.conflicts
    assert (record.crm.event.title, record.calendar.event.title) == (
        "CRM edit",
        "Calendar edit",
    )
    assert record.crm.version == pair.crm.items[pair.crm.id_of("x")].version
    assert [(e.ident, type(e.error)) for e in errors] == [("x", SyncConflict)]
    assert result.errors == tuple(errors)
    # nothing overwritten; the unrelated change went through
    assert pair.crm.events()["x"].title == "CRM edit"
    assert pair.calendar.events()["x"].title == "Calendar edit"
    assert kinds(result) == [(CALENDAR, WriteKind.UPDATE)]
    # still a conflict next time, until someone decides
    again = await pair.sync(on_error=errors.append)
    assert [c.ident for c in again.conflicts] == ["x"]


@pytest.mark.parametrize(
    ("policy", "winner", "written"),
    [
        (ConflictPolicy.CRM_WINS, "CRM edit", CALENDAR),
        (ConflictPolicy.CALENDAR_WINS, "Calendar edit", CRM),
    ],
)
async def test_case05_side_wins(policy, winner, written):
    pair = await both_changed()

    result = await pair.sync(conflicts=policy)

    assert pair.crm.events()["x"].title == winner == pair.calendar.events()["x"].title
    assert kinds(result) == [(written, WriteKind.UPDATE)]
    assert [(e.branch, e.policy) for e in result.log] == [(Branch.CONFLICT, policy)]
    await pair.assert_in_sync()


@pytest.mark.parametrize("later", [CRM, CALENDAR])
async def test_case05_latest_wins_by_updated_at(later):
    pair = await synced_pair("x")
    # both calendars share one clock: the side edited second changed last
    first, second = pair.side(later.other), pair.side(later)
    first.edit(first.id_of("x"), event("x", "earlier"))
    second.edit(second.id_of("x"), event("x", "later"))

    result = await pair.sync(conflicts=ConflictPolicy.LATEST_WINS)

    assert pair.crm.events()["x"].title == "later" == pair.calendar.events()["x"].title
    assert kinds(result) == [(later.other, WriteKind.UPDATE)]


async def test_case05_custom_resolver_writes_only_the_sides_that_differ():
    pair = await both_changed()

    def keep_calendar_title_crm_location(crm, calendar):
        return replace(calendar.event, location="CRM room")

    result = await pair.sync(
        conflicts=ConflictPolicy.CUSTOM, resolver=keep_calendar_title_crm_location
    )
    assert kinds(result) == [(CRM, WriteKind.UPDATE), (CALENDAR, WriteKind.UPDATE)]
    assert pair.crm.events()["x"] == replace(
        event("x", "Calendar edit"), location="CRM room"
    )
    await pair.assert_in_sync()

    pair.crm.edit(pair.crm.id_of("x"), event("x", "again"))
    pair.calendar.edit(pair.calendar.id_of("x"), event("x", "and again"))
    result = await pair.sync(
        conflicts=ConflictPolicy.CUSTOM, resolver=lambda crm, cal: crm.event
    )
    assert kinds(result) == [(CALENDAR, WriteKind.UPDATE)]
    await pair.assert_in_sync()


async def test_case05_bad_policy_configuration_fails_before_any_call():
    pair = await both_changed()
    with pytest.raises(ConfigError):
        ConflictPolicy.from_config("a wins")
    with pytest.raises(ConfigError):
        await pair.sync(conflicts=ConflictPolicy.CUSTOM)
    assert pair.crm.calls == [] == pair.calendar.calls


# ------------------------------------------------------------------ case 6


async def test_case06_identical_changes_write_nothing_and_refresh_versions():
    pair = await both_changed("Same", "Same")

    result = await pair.sync()

    assert result.writes == ()
    assert [e.branch for e in result.log] == [Branch.IDENTICAL]
    row = (await pair.rows())["x"]
    assert row.ver_a == pair.crm.items[pair.crm.id_of("x")].version
    assert row.ver_b == pair.calendar.items[pair.calendar.id_of("x")].version
    pair.forget_calls()
    await pair.sync()
    assert pair.fetches() == 0


# ------------------------------------------------------------------ case 7


async def test_case07_missing_status_adopts_identical_items():
    pair = make_pair()
    pair.crm.put(event("x", "Same"))
    pair.calendar.put(event("x", "Same"))

    result = await pair.sync()

    assert result.writes == ()
    assert [e.branch for e in result.log] == [Branch.IDENTICAL]
    await pair.assert_in_sync()


async def test_case07_missing_status_with_different_items_is_a_conflict():
    pair = make_pair()
    pair.crm.put(event("x", "Ours"))
    pair.calendar.put(event("x", "Theirs"))

    with pytest.raises(SyncConflict):
        await pair.sync()
    assert pair.crm.writes == [] == pair.calendar.writes


async def test_case07_lost_status_resyncs_without_writes():
    pair = await synced_pair("x", "y")
    pair.status = InMemoryStatusRepository()
    pair.forget_calls()

    result = await pair.sync()

    assert result.writes == ()
    await pair.assert_in_sync()


# ------------------------------------------------------------------ case 8


@pytest.mark.parametrize("incremental", [False, True])
async def test_case08_already_in_sync_makes_list_calls_only(incremental):
    pair = await synced_pair("x", "y", incremental=incremental)
    # the first sync after our own writes reads them back from a change feed
    await pair.sync()
    pair.forget_calls()
    before = (pair.status.text, pair.status.commits)

    result = await pair.sync()

    listing = Method.LIST_CHANGES if incremental else Method.LIST
    assert methods(pair.crm) == [listing] == methods(pair.calendar)
    assert result.log == ()
    assert (pair.status.text, pair.status.commits) == before


# ------------------------------------------------------------------ case 9


async def test_case09_version_churn_is_not_a_change():
    pair = await synced_pair("x")
    pair.crm.touch(pair.crm.id_of("x"))  # new version, same content
    pair.calendar.edit(pair.calendar.id_of("x"), event("x", "Real change"))

    result = await pair.sync()

    assert result.conflicts == ()
    assert kinds(result) == [(CRM, WriteKind.UPDATE)]
    assert pair.crm.events()["x"].title == "Real change"
    await pair.assert_in_sync()
    pair.forget_calls()
    await pair.sync()
    assert pair.fetches() == 0


async def test_case09_churn_alone_is_recorded_once():
    pair = await synced_pair("x")
    pair.calendar.touch(pair.calendar.id_of("x"))

    result = await pair.sync()

    assert [e.branch for e in result.log] == [Branch.METADATA]
    assert result.writes == ()
    row = (await pair.rows())["x"]
    assert row.ver_b == pair.calendar.items[pair.calendar.id_of("x")].version


async def test_case09_flaky_versions_store_the_version_read_with_the_content():
    pair = await synced_pair("x")
    pair.calendar.flaky_versions = True  # a new ETag on every read
    pair.calendar.edit(pair.calendar.id_of("x"), event("x", "Changed"))

    await pair.sync()
    row = (await pair.rows())["x"]
    assert row.ver_b == pair.calendar.items[pair.calendar.id_of("x")].version
    pair.forget_calls()
    result = await pair.sync()

    assert result.log == ()
    assert pair.fetches() == 0


# ------------------------------------------------------------------ case 10


async def test_case10_moved_id_updates_the_status_only():
    pair = await synced_pair("x")
    old_id = pair.calendar.id_of("x")
    pair.calendar.move(old_id, "moved/after/folder-change")

    result = await pair.sync()

    assert result.writes == ()
    assert [e.branch for e in result.log] == [Branch.METADATA]
    assert (await pair.rows())["x"].id_b == "moved/after/folder-change"
    assert pair.crm.calls_of(Method.GET_MANY) == []
    await pair.assert_in_sync()


# ------------------------------------------------------------------ case 11


async def test_case11_duplicate_ident_stops_with_both_ids():
    pair = await synced_pair("x")
    first = pair.calendar.id_of("x")
    second = pair.calendar.put(event("x", "Copy"))
    pair.crm.put(event("other"))

    with pytest.raises(IdentConflict) as raised:
        await pair.sync()

    assert raised.value.remote_ids == tuple(sorted([first, second]))
    assert (raised.value.side, raised.value.ident) == (CALENDAR, "x")
    assert pair.crm.writes == [] == pair.calendar.writes


async def test_case11_other_idents_go_on_with_an_error_callback():
    pair = await synced_pair("x")
    pair.crm.put(event("x", "Copy"))
    pair.crm.put(event("other"))
    errors: list[ItemError] = []

    result = await pair.sync(on_error=errors.append)

    assert [(e.ident, type(e.error)) for e in errors] == [("x", IdentConflict)]
    assert kinds(result) == [(CALENDAR, WriteKind.CREATE)]
    assert [c.ical_uid for c in pair.calendar.writes] == ["other"]


# ------------------------------------------------------------------ case 12


@pytest.mark.parametrize("emptied", [CRM, CALENDAR])
async def test_case12_empty_side_stops_unless_forced(emptied):
    pair = await synced_pair("x", "y")
    side = pair.side(emptied)
    for remote_id in list(side.items):
        side.remove(remote_id)
    rows = await pair.rows()

    with pytest.raises(StorageEmpty) as raised:
        await pair.sync()
    assert raised.value.side is emptied
    assert pair.crm.writes == [] == pair.calendar.writes
    assert await pair.rows() == rows

    result = await pair.sync(force_delete=True)
    assert kinds(result) == [(emptied.other, WriteKind.DELETE)] * 2
    assert pair.crm.items == {} == pair.calendar.items
    assert await pair.rows() == {}


class _Withholding(MemoryCalendar):
    """A side that leaves its items out of the listing on purpose (the CRM's
    appointments cancelled in a calendar that keeps no cancelled events)."""

    async def list(self) -> Listing:
        listing = await super().list()
        return replace(listing, withheld=1)


async def test_case12_a_side_that_withholds_its_items_is_not_empty():
    clock = Clock()
    pair = Pair(
        _Withholding(clock=clock, incremental=False), MemoryCalendar(clock=clock)
    )
    pair.crm.put(event("x"))
    await pair.sync()
    pair.crm.remove(pair.crm.id_of("x"))

    result = await pair.sync()

    assert kinds(result) == [(CALENDAR, WriteKind.DELETE)]
    assert pair.calendar.items == {}
    assert await pair.rows() == {}


async def test_case12_one_withheld_item_does_not_explain_many_missing():
    clock = Clock()
    pair = Pair(
        _Withholding(clock=clock, incremental=False), MemoryCalendar(clock=clock)
    )
    for uid in ("x", "y"):
        pair.crm.put(event(uid))
    await pair.sync()
    pair.forget_calls()
    for uid in ("x", "y"):
        pair.crm.remove(pair.crm.id_of(uid))

    with pytest.raises(StorageEmpty):
        await pair.sync()
    assert pair.calendar.writes == []


# ------------------------------------------------------------------ case 13


async def read_only_calendar() -> Pair:
    pair = await synced_pair("edited", "deleted")
    pair.calendar.read_only = True
    pair.crm.edit(pair.crm.id_of("edited"), event("edited", "CRM change"))
    pair.crm.remove(pair.crm.id_of("deleted"))
    pair.crm.put(event("created"))
    return pair


async def test_case13_revert_undoes_changes_on_the_writable_side():
    pair = await read_only_calendar()
    calendar_before = dict(pair.calendar.items)

    result = await pair.sync()

    assert pair.calendar.writes == []
    assert pair.calendar.items == calendar_before
    assert set(pair.crm.events()) == {"edited", "deleted"}
    assert pair.crm.events()["edited"].title == "Meeting"
    assert {(e.ident, e.branch, e.policy) for e in result.log} == {
        (ident, Branch.REVERTED, ReadOnlyPolicy.REVERT)
        for ident in ("edited", "deleted", "created")
    }
    # the read-only side's unchanged items were fetched in one bulk call
    assert len(pair.calendar.calls_of(Method.GET_MANY)) == 1
    await pair.assert_in_sync()


async def test_case13_ignore_keeps_changes_on_the_writable_side():
    pair = await read_only_calendar()
    calendar_before = dict(pair.calendar.items)

    result = await pair.sync(read_only=ReadOnlyPolicy.IGNORE)

    assert pair.calendar.writes == [] == pair.crm.writes
    assert pair.calendar.items == calendar_before
    assert sorted(result.ignored) == ["created", "deleted", "edited"]
    assert pair.crm.events()["edited"].title == "CRM change"
    # a later change on the read-only side brings the deleted event back
    pair.calendar.edit(
        pair.calendar.id_of("deleted"), event("deleted", "Updated there")
    )
    await pair.sync(read_only=ReadOnlyPolicy.IGNORE)
    assert pair.crm.events()["deleted"].title == "Updated there"


async def test_case13_error_raises_partial_sync():
    pair = await read_only_calendar()

    with pytest.raises(PartialSync) as raised:
        await pair.sync(read_only=ReadOnlyPolicy.ERROR)
    assert raised.value.side is CALENDAR
    assert pair.calendar.writes == [] == pair.crm.writes

    errors: list[ItemError] = []
    await pair.sync(read_only=ReadOnlyPolicy.ERROR, on_error=errors.append)
    assert sorted(e.ident for e in errors) == ["created", "deleted", "edited"]
    assert pair.calendar.writes == []


async def test_case13_both_read_only_refuses_to_run():
    pair = await synced_pair("x")
    pair.crm.read_only = pair.calendar.read_only = True
    with pytest.raises(BothReadOnly):
        await pair.sync()
    pair.crm.read_only = False
    with pytest.raises(BothReadOnly):
        await pair.sync(direction=SyncDirection.EXPORT_ONLY)
    assert pair.crm.calls == [] == pair.calendar.calls


@pytest.mark.parametrize(
    ("direction", "protected"),
    [(SyncDirection.IMPORT_ONLY, CALENDAR), (SyncDirection.EXPORT_ONLY, CRM)],
)
async def test_case13_one_way_directions_treat_a_side_as_read_only(
    direction, protected
):
    pair = await synced_pair("x")
    other = pair.side(protected.other)
    other.edit(other.id_of("x"), event("x", "Local change"))

    await pair.sync(direction=direction)

    assert pair.side(protected).writes == []
    assert other.events()["x"].title == "Meeting"


# ------------------------------------------------------------------ case 14


async def test_case14_a_failing_write_rolls_back_its_ident_only():
    pair = await synced_pair("x")
    pair.crm.edit(pair.crm.id_of("x"), event("x", "Edited"))
    for uid in ("a", "b", "c"):
        pair.crm.put(event(uid))
    pair.calendar.fail_writes = {"b", pair.calendar.id_of("x")}
    rows = await pair.rows()
    errors: list[ItemError] = []

    result = await pair.sync(on_error=errors.append)

    assert sorted(e.ident for e in errors) == ["b", "x"]
    assert all(isinstance(e.error, TransientProviderError) for e in errors)
    assert set(pair.calendar.events()) == {"a", "c", "x"}
    new_rows = await pair.rows()
    assert set(new_rows) == {"a", "c", "x"}
    assert new_rows["x"] == rows["x"]  # the old row, not a half-written one
    assert len(result.log) == 2

    pair.calendar.fail_writes.clear()
    retry = await pair.sync()
    assert sorted(e.ident for e in retry.log) == ["b", "x"]
    await pair.assert_in_sync()


async def test_case14_without_callback_the_error_surfaces_and_the_status_is_consistent():
    pair = make_pair()
    for uid in ("a", "b", "c"):
        pair.crm.put(event(uid))
    pair.calendar.fail_writes = {"b"}

    with pytest.raises(TransientProviderError):
        await pair.sync()

    # "a" was created and recorded; "b" failed; "c" was not reached
    assert set(pair.calendar.events()) == {"a"}
    assert set(await pair.rows()) == {"a"}
    pair.calendar.fail_writes.clear()
    await pair.sync()
    await pair.assert_in_sync()


@pytest.mark.parametrize("error", [RateLimited(retry_after_s=30), AuthError()])
async def test_case14_rate_limits_and_auth_errors_end_the_run_even_with_a_callback(
    error,
):
    pair = make_pair()
    pair.crm.put(event("a"))
    pair.crm.put(event("b"))
    pair.calendar.before_next_write(lambda _id: pair.calendar.fail_next(error))
    errors: list[ItemError] = []
    with pytest.raises(type(error)):
        await pair.sync(on_error=errors.append)
    # "a" was written and recorded, "b" hit the error, nothing after it ran
    assert errors == []
    assert pair.calendar.uids() == ["a"]
    assert set(await pair.rows()) == {"a"}


# ------------------------------------------------------------------ case 15


async def test_case15_a_write_without_version_is_read_back_once():
    pair = make_pair()
    pair.calendar.versions_on_write = False
    pair.crm.put(event("x"))

    await pair.sync()
    row = (await pair.rows())["x"]
    assert row.ver_b is None

    pair.forget_calls()
    result = await pair.sync()
    assert result.writes == ()
    assert result.conflicts == ()
    assert [c.remote_ids for c in pair.calendar.calls_of(Method.GET_MANY)] == [
        (row.id_b,)
    ]
    assert (await pair.rows())["x"].ver_b == pair.calendar.items[row.id_b].version

    pair.forget_calls()
    await pair.sync()
    assert pair.fetches() == 0


async def test_case15_an_update_after_a_versionless_write_reads_first():
    # custom merge writes the CRM (no version back), then the calendar answers
    # 412: the re-plan must read the CRM item before writing on top of it
    pair = await synced_pair("x")
    pair.crm.versions_on_write = False
    pair.crm.edit(pair.crm.id_of("x"), event("x", "A"))
    pair.calendar.edit(pair.calendar.id_of("x"), event("x", "B"))
    calendar_id = pair.calendar.id_of("x")
    pair.calendar.before_next_write(
        lambda _id: pair.calendar.edit(calendar_id, event("x", "C"))
    )

    def join(crm, calendar):
        return replace(crm.event, title=f"{crm.event.title}+{calendar.event.title}")

    result = await pair.sync(conflicts=ConflictPolicy.CUSTOM, resolver=join)

    assert pair.crm.events()["x"].title == "A+B+C"
    assert pair.calendar.events()["x"].title == "A+B+C"
    crm_reads = [c.remote_ids for c in pair.crm.calls_of(Method.GET_MANY)]
    assert crm_reads[-1] == (pair.crm.id_of("x"),)
    assert all(
        c.if_match is not None for c in pair.crm.writes if c.method is Method.UPDATE
    )
    assert len(result.log) == 1
    await pair.assert_in_sync()


# ------------------------------------------------------------------ case 16


@pytest.mark.parametrize(("limit", "calls"), [(None, [30]), (20, [20, 10])])
async def test_case16_changed_items_are_fetched_in_bulk(limit, calls):
    pair = make_pair(get_many_limit=limit)
    for n in range(30):
        pair.calendar.put(event(f"e{n:02}"))

    await pair.sync()

    assert [len(c.remote_ids) for c in pair.calendar.calls_of(Method.GET_MANY)] == calls
    assert pair.crm.calls_of(Method.GET_MANY) == []
    await pair.assert_in_sync()


# ------------------------------------------------------------------ case 17


async def test_case17_stale_precondition_replans_into_a_conflict():
    pair = await synced_pair("x")
    pair.crm.edit(pair.crm.id_of("x"), event("x", "CRM edit"))
    calendar_id = pair.calendar.id_of("x")
    listed_version = pair.calendar.items[calendar_id].version
    # someone edits the calendar after we listed it, before we write
    pair.calendar.before_next_write(
        lambda _id: pair.calendar.edit(calendar_id, event("x", "Concurrent edit"))
    )
    errors: list[ItemError] = []

    result = await pair.sync(on_error=errors.append)

    assert [(c.method, c.if_match) for c in pair.calendar.writes] == [
        (Method.UPDATE, listed_version)
    ]
    assert [type(e.error) for e in errors] == [SyncConflict]
    assert result.conflicts[0].calendar.event.title == "Concurrent edit"
    assert pair.calendar.events()["x"].title == "Concurrent edit"  # not overwritten


async def test_case17_stale_precondition_retries_with_the_fresh_version():
    pair = await synced_pair("x")
    pair.crm.edit(pair.crm.id_of("x"), event("x", "CRM edit"))
    calendar_id = pair.calendar.id_of("x")
    pair.calendar.before_next_write(lambda _id: pair.calendar.touch(calendar_id))

    result = await pair.sync(conflicts=ConflictPolicy.CRM_WINS)

    first, second = pair.calendar.writes
    assert first.if_match != second.if_match
    assert second.if_match is not None
    assert [c.remote_ids for c in pair.calendar.calls_of(Method.GET_MANY)] == [
        (calendar_id,)
    ]
    assert [e.branch for e in result.log] == [Branch.UPDATED]
    await pair.assert_in_sync()


async def test_case17_stale_delete_turns_into_delete_vs_modify():
    pair = await synced_pair("x", "other")
    pair.crm.remove(pair.crm.id_of("x"))
    calendar_id = pair.calendar.id_of("x")
    pair.calendar.before_next_write(
        lambda _id: pair.calendar.edit(calendar_id, event("x", "Edited meanwhile"))
    )

    result = await pair.sync()

    assert pair.crm.events()["x"].title == "Edited meanwhile"
    assert [e.branch for e in result.log] == [Branch.DELETE_VS_MODIFY]
    await pair.assert_in_sync()


async def test_case17_update_of_an_item_deleted_meanwhile_recreates_it():
    pair = await synced_pair("x")
    pair.crm.edit(pair.crm.id_of("x"), event("x", "CRM edit"))
    calendar_id = pair.calendar.id_of("x")
    pair.calendar.before_next_write(lambda _id: pair.calendar.remove(calendar_id))

    await pair.sync()

    assert [c.method for c in pair.calendar.writes] == [Method.UPDATE, Method.CREATE]
    assert pair.calendar.events()["x"].title == "CRM edit"
    await pair.assert_in_sync()


async def test_case17_delete_of_an_item_already_gone_is_done():
    pair = await synced_pair("x", "other")
    pair.crm.remove(pair.crm.id_of("x"))
    calendar_id = pair.calendar.id_of("x")
    pair.calendar.before_next_write(lambda _id: pair.calendar.remove(calendar_id))

    result = await pair.sync()

    assert kinds(result) == [(CALENDAR, WriteKind.DELETE)]
    assert set(await pair.rows()) == {"other"}


async def test_case17_an_item_that_keeps_changing_is_left_for_the_next_sync():
    pair = await synced_pair("x")
    pair.crm.edit(pair.crm.id_of("x"), event("x", "CRM edit"))
    calendar_id = pair.calendar.id_of("x")

    def churn(_id):
        pair.calendar.touch(calendar_id)
        pair.calendar.before_next_write(churn)

    pair.calendar.before_next_write(churn)
    errors: list[ItemError] = []

    await pair.sync(on_error=errors.append)

    assert [type(e.error) for e in errors] == [PreconditionFailed]
    assert "kept changing" in str(errors[0].error)
    assert all(c.if_match is not None for c in pair.calendar.writes)


# ------------------------------------------------------------------ case 18

ODD_UIDS = ["ünïcødé-✓", "a/b?c=d&e#f%20g h", "line\nbreak", "CaseUID", "caseuid", "\t"]


async def test_case18_odd_identifiers_round_trip():
    clock_pair = make_pair()
    crm = MemoryCalendar(
        clock=clock_pair.crm.clock, id_factory=lambda e, n: f"{e.ical_uid}/✓/{n}"
    )
    calendar = MemoryCalendar(
        clock=clock_pair.crm.clock, id_factory=lambda e, n: f"?{e.ical_uid}#{n}"
    )
    pair = Pair(crm, calendar)
    for uid in ODD_UIDS:
        pair.crm.put(event(uid, f"T {uid}"))

    await pair.sync()
    assert sorted(pair.calendar.events()) == sorted(ODD_UIDS)
    assert pair.calendar.id_of("line\nbreak").startswith("?line\nbreak#")
    await pair.assert_in_sync()

    for uid in ODD_UIDS[:3]:
        pair.calendar.edit(pair.calendar.id_of(uid), event(uid, "changed"))
    pair.crm.remove(pair.crm.id_of("caseuid"))
    await pair.sync()

    assert sorted(pair.crm.events()) == sorted(set(ODD_UIDS) - {"caseuid"})
    assert pair.crm.events()["CaseUID"].title == "T CaseUID"
    assert [pair.crm.events()[u].title for u in ODD_UIDS[:3]] == ["changed"] * 3
    await pair.assert_in_sync()
    pair.forget_calls()
    await pair.sync()
    assert pair.fetches() == 0


# ------------------------------------------------------------------ case 20


async def test_case20_inbound_change_is_not_echoed_back():
    pair = await synced_pair("x", incremental=True)
    await pair.sync()  # settle the change feeds
    pair.calendar.edit(pair.calendar.id_of("x"), event("x", "From the calendar"))
    await pair.sync()
    assert [c.method for c in pair.crm.writes] == [Method.UPDATE]
    pair.forget_calls()

    # the next pass (and a webhook-triggered one) sees its own write: nothing to do
    for _ in range(2):
        result = await pair.sync()
        assert result.writes == ()
    assert pair.fetches() == 0
    assert [c.method for c in pair.crm.calls + pair.calendar.calls] == [
        Method.LIST_CHANGES
    ] * 4


async def test_case20_outbound_write_does_not_come_back_as_an_inbound_change():
    pair = await synced_pair("x")
    pair.crm.edit(pair.crm.id_of("x"), event("x", "From the CRM"))
    await pair.sync()
    pair.forget_calls()

    result = await pair.sync()  # as after the provider's push notification

    assert result.writes == ()
    assert pair.fetches() == 0


# ------------------------------------------------------------------ case 21


async def test_case21_lost_reply_on_create_does_not_duplicate():
    pair = make_pair()
    pair.crm.put(event("x"))
    pair.calendar.lose_write_replies = 1

    with pytest.raises(TransientProviderError):
        await pair.sync()
    assert pair.calendar.uids() == ["x"]
    assert await pair.rows() == {}

    result = await pair.sync()
    assert result.writes == ()
    assert pair.calendar.uids() == ["x"]
    await pair.assert_in_sync()


class CrashingStatus(InMemoryStatusRepository):
    """A status whose next commit dies (the worker crashed before it)."""

    crash = True

    async def commit(self, snapshot: StatusSnapshot) -> None:
        if self.crash:
            self.crash = False
            raise RuntimeError("worker died")
        await super().commit(snapshot)


async def test_case21_crash_before_the_status_commit_does_not_duplicate():
    pair = make_pair()
    pair.status = CrashingStatus()
    pair.crm.put(event("x"))
    pair.calendar.put(event("y"))

    with pytest.raises(RuntimeError, match="worker died"):
        await pair.sync()
    assert pair.status.text is None

    result = await pair.sync()
    assert result.writes == ()
    await pair.assert_in_sync()


@pytest.mark.parametrize("mode", list(DuplicateCreate))
async def test_case21_retried_create_adopts_the_existing_item(mode):
    pair = make_pair()
    pair.calendar.duplicate_create = mode
    pair.crm.put(event("x"))
    # the create succeeds, its reply is lost, and the listing lags behind
    pair.calendar.lose_write_replies = 1
    with pytest.raises(TransientProviderError):
        await pair.sync()
    created = pair.calendar.id_of("x")
    pair.calendar.hidden.add(created)
    if mode is DuplicateCreate.RAISE:
        # the listing catches up between our listing and our retried create
        pair.calendar.before_next_write(lambda _id: pair.calendar.reveal(created))

    result = await pair.sync()

    creates = pair.calendar.calls_of(Method.CREATE)
    assert len(creates) == 2
    assert creates[0].idempotency_key == creates[1].idempotency_key
    assert pair.calendar.uids() == ["x"]
    assert [e.branch for e in result.log] == [Branch.IDENTICAL]
    assert (await pair.rows())["x"].id_b == created


async def test_case21_an_unfindable_duplicate_is_reported():
    pair = make_pair(duplicate_create=DuplicateCreate.RAISE)
    pair.crm.put(event("x"))
    pair.calendar.lose_write_replies = 1
    with pytest.raises(TransientProviderError):
        await pair.sync()
    pair.calendar.hidden.add(pair.calendar.id_of("x"))
    errors: list[ItemError] = []

    await pair.sync(on_error=errors.append)

    assert [type(e.error) for e in errors] == [ItemAlreadyExists]
    assert pair.calendar.uids() == ["x"]
    pair.calendar.clear_faults()
    await pair.sync()
    await pair.assert_in_sync()


# ------------------------------------------------------------------ case 22


async def test_case22_expired_cursor_falls_back_to_a_full_listing_and_reconciles():
    pair = await synced_pair("keep", "gone", incremental=True)
    await pair.sync()
    pair.calendar.remove(pair.calendar.id_of("gone"))
    pair.calendar.put(event("new"))
    pair.calendar.expire_cursors()
    pair.forget_calls()

    result = await pair.sync()

    assert result.cursor_reset == {CALENDAR}
    assert methods(pair.calendar)[:2] == [Method.LIST_CHANGES, Method.LIST]
    assert sorted(pair.crm.uids()) == [
        "keep",
        "new",
    ]  # no duplicate, no spurious delete
    await pair.assert_in_sync()
    cursor = (await pair.status.load()).cursor_b
    assert cursor is not None
    assert cursor.token == (await pair.calendar.list()).cursor

    pair.forget_calls()
    again = await pair.sync()
    assert again.cursor_reset == frozenset()
    assert methods(pair.calendar) == [Method.LIST_CHANGES]


async def test_case22_a_failing_full_listing_does_not_loop():
    pair = await synced_pair("x", incremental=True)
    pair.calendar.expire_cursors()
    pair.calendar.fail_next(CursorExpired(), times=2)
    before = pair.status.text

    with pytest.raises(CursorExpired):
        await pair.sync()

    assert methods(pair.calendar) == [Method.LIST_CHANGES, Method.LIST]
    assert pair.status.text == before


# ------------------------------------------------------------------ case 26


async def test_case26_every_sync_write_asks_for_no_notifications():
    pair = await synced_pair("upd", "del")
    pair.crm.put(event("new-crm"))
    pair.calendar.put(event("new-cal"))
    pair.calendar.edit(pair.calendar.id_of("upd"), event("upd", "Changed"))
    pair.crm.remove(pair.crm.id_of("del"))

    await pair.sync()

    writes = [c for c in pair.crm.calls + pair.calendar.calls if c.method in WRITES]
    assert {c.method for c in writes} == set(WRITES)
    assert {c.notify for c in writes} == {Notify.NONE}


# ------------------------------------------------------------------ results


async def test_result_lists_writes_in_order():
    pair = make_pair()
    pair.crm.put(event("x"))
    result = await pair.sync()
    assert result.writes == (
        WriteRecord(CALENDAR, WriteKind.CREATE, pair.calendar.id_of("x")),
    )
    assert result.errors == ()
    assert result.ignored == ()
