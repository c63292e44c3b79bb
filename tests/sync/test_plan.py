"""Table tests for the pure planner (``crmflow.sync.plan``): one row per branch."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from crmflow.domain.calendar import CalendarEvent, EventStatus, RemoteEvent
from crmflow.errors import ConfigError
from crmflow.sync.plan import (
    Action,
    Branch,
    ConflictPolicy,
    ConflictRecord,
    Create,
    Delete,
    DeletePolicy,
    IdentClash,
    Ignored,
    ItemState,
    NeedsFetch,
    ReadOnlyPolicy,
    Refused,
    Rules,
    SideView,
    Update,
    build_view,
    decide,
    idempotency_key,
    ids_to_fetch,
    plan,
    storage_empty,
)
from crmflow.sync.status import SideName, StatusRow

from .helpers import event

CRM, CALENDAR = SideName.CRM, SideName.CALENDAR
OLD, NEW, OTHER = event("x", "Old"), event("x", "New"), event("x", "Other")
CANCELLED = event("x", "New", status=EventStatus.CANCELLED)
H_OLD, H_NEW, H_OTHER = OLD.content_hash(), NEW.content_hash(), OTHER.content_hash()
ROW = StatusRow("x", "a1", "va1", H_OLD, "b1", "vb1", H_OLD)
EARLY = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
LATE = EARLY + dt.timedelta(hours=1)


def listed(side: SideName, version: str | None = None) -> ItemState:
    """Listed at the recorded (or given) version, not fetched."""
    return ItemState(ROW.remote_id(side), version or ROW.version(side), H_OLD)


def fetched(
    side: SideName,
    content: CalendarEvent = NEW,
    version: str | None = "v2",
    remote_id: str | None = None,
    updated_at: dt.datetime | None = None,
) -> ItemState:
    return ItemState(
        remote_id or ROW.remote_id(side),
        version,
        content.content_hash(),
        content,
        updated_at,
    )


def views(
    crm: ItemState | None,
    calendar: ItemState | None,
    *,
    ro_crm: bool = False,
    ro_calendar: bool = False,
) -> tuple[SideView, SideView]:
    return (
        SideView(CRM, ro_crm, {"x": crm} if crm else {}),
        SideView(CALENDAR, ro_calendar, {"x": calendar} if calendar else {}),
    )


def key(target: SideName, old: StatusRow | None = ROW) -> str:
    return idempotency_key("x", old, target)


def remote(state: ItemState) -> RemoteEvent:
    assert state.event is not None
    assert state.version is not None
    return RemoteEvent(state.remote_id, state.version, state.event, state.updated_at)


def merge_titles(crm: RemoteEvent, calendar: RemoteEvent) -> CalendarEvent:
    return replace(
        crm.event, ical_uid="ignored", title=f"{crm.event.title}+{calendar.event.title}"
    )


MERGED = replace(NEW, title="New+Other")

# (name, old row, CRM state, calendar state, rules, read-only CRM/calendar, expected)
TABLE = [
    # both present, same content
    (
        "in sync, untouched: nothing",
        ROW,
        listed(CRM),
        listed(CALENDAR),
        Rules(),
        (False, False),
        None,
    ),
    (
        "version churn without content change: record (case 9)",
        ROW,
        fetched(CRM, OLD),
        listed(CALENDAR),
        Rules(),
        (False, False),
        Action("x", Branch.METADATA),
    ),
    (
        "moved id: record (case 10)",
        ROW,
        listed(CRM),
        fetched(CALENDAR, OLD, "vb1", remote_id="b2"),
        Rules(),
        (False, False),
        Action("x", Branch.METADATA),
    ),
    (
        "both changed identically: record (case 6)",
        ROW,
        fetched(CRM),
        fetched(CALENDAR),
        Rules(),
        (False, False),
        Action("x", Branch.IDENTICAL),
    ),
    (
        "no status, equal: adopt (case 7)",
        None,
        fetched(CRM),
        fetched(CALENDAR),
        Rules(),
        (False, False),
        Action("x", Branch.IDENTICAL),
    ),
    # one side changed
    (
        "changed in the CRM: update the calendar (case 2)",
        ROW,
        fetched(CRM),
        listed(CALENDAR),
        Rules(),
        (False, False),
        Action("x", Branch.UPDATED, CRM, write_calendar=Update("b1", "vb1", NEW)),
    ),
    (
        "changed in the calendar: update the CRM (case 2)",
        ROW,
        listed(CRM),
        fetched(CALENDAR),
        Rules(),
        (False, False),
        Action("x", Branch.UPDATED, CALENDAR, write_crm=Update("a1", "va1", NEW)),
    ),
    # both changed differently (case 5)
    (
        "conflict, manual: a record with both versions",
        ROW,
        fetched(CRM),
        fetched(CALENDAR, OTHER),
        Rules(),
        (False, False),
        ConflictRecord("x", remote(fetched(CRM)), remote(fetched(CALENDAR, OTHER))),
    ),
    (
        "no status, different: the conflict path (case 7)",
        None,
        fetched(CRM),
        fetched(CALENDAR, OTHER),
        Rules(),
        (False, False),
        ConflictRecord("x", remote(fetched(CRM)), remote(fetched(CALENDAR, OTHER))),
    ),
    (
        "conflict, crm wins",
        ROW,
        fetched(CRM),
        fetched(CALENDAR, OTHER),
        Rules(ConflictPolicy.CRM_WINS),
        (False, False),
        Action(
            "x",
            Branch.CONFLICT,
            CRM,
            write_calendar=Update("b1", "v2", NEW),
            policy=ConflictPolicy.CRM_WINS,
        ),
    ),
    (
        "conflict, calendar wins",
        ROW,
        fetched(CRM),
        fetched(CALENDAR, OTHER),
        Rules(ConflictPolicy.CALENDAR_WINS),
        (False, False),
        Action(
            "x",
            Branch.CONFLICT,
            CALENDAR,
            write_crm=Update("a1", "v2", OTHER),
            policy=ConflictPolicy.CALENDAR_WINS,
        ),
    ),
    (
        "conflict, latest wins: the calendar changed later",
        ROW,
        fetched(CRM, updated_at=EARLY),
        fetched(CALENDAR, OTHER, updated_at=LATE),
        Rules(ConflictPolicy.LATEST_WINS),
        (False, False),
        Action(
            "x",
            Branch.CONFLICT,
            CALENDAR,
            write_crm=Update("a1", "v2", OTHER),
            policy=ConflictPolicy.LATEST_WINS,
        ),
    ),
    (
        "conflict, latest wins: the CRM changed later",
        ROW,
        fetched(CRM, updated_at=LATE),
        fetched(CALENDAR, OTHER, updated_at=EARLY),
        Rules(ConflictPolicy.LATEST_WINS),
        (False, False),
        Action(
            "x",
            Branch.CONFLICT,
            CRM,
            write_calendar=Update("b1", "v2", NEW),
            policy=ConflictPolicy.LATEST_WINS,
        ),
    ),
    (
        "conflict, latest wins: a tie goes to the CRM",
        ROW,
        fetched(CRM, updated_at=LATE),
        fetched(CALENDAR, OTHER, updated_at=LATE),
        Rules(ConflictPolicy.LATEST_WINS),
        (False, False),
        Action(
            "x",
            Branch.CONFLICT,
            CRM,
            write_calendar=Update("b1", "v2", NEW),
            policy=ConflictPolicy.LATEST_WINS,
        ),
    ),
    (
        "conflict, latest wins: a missing timestamp goes to the CRM",
        ROW,
        fetched(CRM),
        fetched(CALENDAR, OTHER, updated_at=LATE),
        Rules(ConflictPolicy.LATEST_WINS),
        (False, False),
        Action(
            "x",
            Branch.CONFLICT,
            CRM,
            write_calendar=Update("b1", "v2", NEW),
            policy=ConflictPolicy.LATEST_WINS,
        ),
    ),
    (
        "conflict, custom: the merge goes to both sides",
        ROW,
        fetched(CRM),
        fetched(CALENDAR, OTHER),
        Rules(ConflictPolicy.CUSTOM, resolver=merge_titles),
        (False, False),
        Action(
            "x",
            Branch.CONFLICT,
            write_crm=Update("a1", "v2", MERGED),
            write_calendar=Update("b1", "v2", MERGED),
            policy=ConflictPolicy.CUSTOM,
        ),
    ),
    (
        "conflict, custom: only the side that differs from the merge is written",
        ROW,
        fetched(CRM),
        fetched(CALENDAR, OTHER),
        Rules(ConflictPolicy.CUSTOM, resolver=lambda crm, calendar: calendar.event),
        (False, False),
        Action(
            "x",
            Branch.CONFLICT,
            write_crm=Update("a1", "v2", OTHER),
            policy=ConflictPolicy.CUSTOM,
        ),
    ),
    (
        "conflict, custom: a resolver that declines leaves it to a person",
        ROW,
        fetched(CRM),
        fetched(CALENDAR, OTHER),
        Rules(ConflictPolicy.CUSTOM, resolver=lambda crm, calendar: None),
        (False, False),
        ConflictRecord("x", remote(fetched(CRM)), remote(fetched(CALENDAR, OTHER))),
    ),
    (
        "conflict, manual, the CRM side not read yet: fetch it",
        ROW,
        replace(fetched(CRM), event=None),
        fetched(CALENDAR, OTHER),
        Rules(),
        (False, False),
        NeedsFetch("x", CRM, "a1"),
    ),
    (
        "conflict, manual, the calendar's version unknown: fetch it",
        ROW,
        fetched(CRM),
        replace(fetched(CALENDAR, OTHER), version=None),
        Rules(),
        (False, False),
        NeedsFetch("x", CALENDAR, "b1"),
    ),
    # one side only
    (
        "new in the CRM: create in the calendar (case 1)",
        None,
        fetched(CRM),
        None,
        Rules(),
        (False, False),
        Action(
            "x", Branch.CREATED, CRM, write_calendar=Create(NEW, key(CALENDAR, None))
        ),
    ),
    (
        "new in the calendar: create in the CRM (case 1)",
        None,
        None,
        fetched(CALENDAR),
        Rules(),
        (False, False),
        Action("x", Branch.CREATED, CALENDAR, write_crm=Create(NEW, key(CRM, None))),
    ),
    (
        "deleted in the calendar, untouched in the CRM: delete in the CRM (case 3)",
        ROW,
        listed(CRM),
        None,
        Rules(),
        (False, False),
        Action("x", Branch.DELETED, CALENDAR, write_crm=Delete("a1", "va1")),
    ),
    (
        "deleted in the CRM, untouched in the calendar: delete in the calendar (case 3)",
        ROW,
        None,
        listed(CALENDAR),
        Rules(),
        (False, False),
        Action("x", Branch.DELETED, CRM, write_calendar=Delete("b1", "vb1")),
    ),
    (
        "deleted in the calendar, modified in the CRM: re-create (case 4)",
        ROW,
        fetched(CRM),
        None,
        Rules(),
        (False, False),
        Action(
            "x",
            Branch.DELETE_VS_MODIFY,
            CRM,
            write_calendar=Create(NEW, key(CALENDAR)),
            policy=DeletePolicy.MODIFICATION_WINS,
        ),
    ),
    (
        "deleted in the calendar, modified in the CRM, deletion wins (case 4)",
        ROW,
        fetched(CRM),
        None,
        Rules(deletes=DeletePolicy.DELETION_WINS),
        (False, False),
        Action(
            "x",
            Branch.DELETE_VS_MODIFY,
            CALENDAR,
            write_crm=Delete("a1", "v2"),
            policy=DeletePolicy.DELETION_WINS,
        ),
    ),
    (
        "deleted in the calendar, cancelled in the CRM: both say it is off, forget",
        ROW,
        fetched(CRM, CANCELLED),
        None,
        Rules(),
        (False, False),
        Action("x", Branch.GONE),
    ),
    (
        "deleted in the CRM, cancelled in the calendar: the usual rules (case 4)",
        ROW,
        None,
        fetched(CALENDAR, CANCELLED),
        Rules(),
        (False, False),
        Action(
            "x",
            Branch.DELETE_VS_MODIFY,
            CALENDAR,
            write_crm=Create(CANCELLED, key(CRM)),
            policy=DeletePolicy.MODIFICATION_WINS,
        ),
    ),
    (
        "new in the calendar and cancelled: copied (an Outlook meeting called off)",
        None,
        None,
        fetched(CALENDAR, CANCELLED),
        Rules(),
        (False, False),
        Action(
            "x", Branch.CREATED, CALENDAR, write_crm=Create(CANCELLED, key(CRM, None))
        ),
    ),
    (
        "gone from both: forget",
        ROW,
        None,
        None,
        Rules(),
        (False, False),
        Action("x", Branch.GONE),
    ),
    # what a write needs first
    (
        "source content unknown: fetch it",
        ROW,
        replace(fetched(CRM), event=None),
        listed(CALENDAR),
        Rules(),
        (False, False),
        NeedsFetch("x", CRM, "a1"),
    ),
    (
        "target version unknown (our write returned none): fetch it",
        ROW,
        fetched(CRM),
        replace(listed(CALENDAR), version=None),
        Rules(),
        (False, False),
        NeedsFetch("x", CALENDAR, "b1"),
    ),
    (
        "version to delete unknown: fetch it",
        ROW,
        None,
        replace(listed(CALENDAR), version=None),
        Rules(),
        (False, False),
        NeedsFetch("x", CALENDAR, "b1"),
    ),
    # read-only sides (case 13)
    (
        "read-only calendar, policy error: refuse",
        ROW,
        fetched(CRM),
        listed(CALENDAR),
        Rules(read_only=ReadOnlyPolicy.ERROR),
        (False, True),
        Refused("x", CALENDAR),
    ),
    (
        "read-only calendar, policy ignore: leave it",
        ROW,
        fetched(CRM),
        listed(CALENDAR),
        Rules(read_only=ReadOnlyPolicy.IGNORE),
        (False, True),
        Ignored("x", CALENDAR),
    ),
    (
        "read-only calendar, revert an update: needs the calendar's content",
        ROW,
        fetched(CRM),
        listed(CALENDAR),
        Rules(),
        (False, True),
        NeedsFetch("x", CALENDAR, "b1"),
    ),
    (
        "read-only calendar, revert an update",
        ROW,
        fetched(CRM),
        fetched(CALENDAR, OLD, "vb1"),
        Rules(),
        (False, True),
        Action(
            "x",
            Branch.REVERTED,
            CALENDAR,
            write_crm=Update("a1", "v2", OLD),
            policy=ReadOnlyPolicy.REVERT,
        ),
    ),
    (
        "read-only calendar, revert a create: delete it from the CRM",
        None,
        fetched(CRM),
        None,
        Rules(),
        (False, True),
        Action(
            "x",
            Branch.REVERTED,
            CALENDAR,
            write_crm=Delete("a1", "v2"),
            policy=ReadOnlyPolicy.REVERT,
        ),
    ),
    (
        "read-only calendar, revert a delete: re-create in the CRM",
        ROW,
        None,
        fetched(CALENDAR, OLD, "vb1"),
        Rules(),
        (False, True),
        Action(
            "x",
            Branch.REVERTED,
            CALENDAR,
            write_crm=Create(OLD, key(CRM)),
            policy=ReadOnlyPolicy.REVERT,
        ),
    ),
    (
        "read-only CRM, a calendar change: revert it from the CRM",
        ROW,
        fetched(CRM, OLD, "va1"),
        fetched(CALENDAR),
        Rules(),
        (True, False),
        Action(
            "x",
            Branch.REVERTED,
            CRM,
            write_calendar=Update("b1", "v2", OLD),
            policy=ReadOnlyPolicy.REVERT,
        ),
    ),
    (
        "read-only calendar, no write needed: untouched",
        ROW,
        listed(CRM),
        listed(CALENDAR),
        Rules(),
        (False, True),
        None,
    ),
    (
        "read-only calendar, custom merge for both: revert the CRM",
        ROW,
        fetched(CRM),
        fetched(CALENDAR, OTHER),
        Rules(ConflictPolicy.CUSTOM, resolver=merge_titles),
        (False, True),
        Action(
            "x",
            Branch.REVERTED,
            CALENDAR,
            write_crm=Update("a1", "v2", OTHER),
            policy=ReadOnlyPolicy.REVERT,
        ),
    ),
]


@pytest.mark.parametrize(
    ("old", "in_crm", "in_calendar", "rules", "read_only", "expected"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_decision_table(old, in_crm, in_calendar, rules, read_only, expected):
    crm, calendar = views(
        in_crm, in_calendar, ro_crm=read_only[0], ro_calendar=read_only[1]
    )
    assert decide("x", old, crm, calendar, rules) == expected


# ------------------------------------------------------------------ whole plans


def test_plan_orders_failing_decisions_first_then_by_ident():
    rows = {
        "b": replace(ROW, ident="b"),
        "d": replace(ROW, ident="d", id_a="a4", id_b="b4"),
    }
    crm = SideView(
        CRM,
        False,
        {
            "a": fetched(CRM, event("a"), remote_id="a0"),
            "b": fetched(CRM, event("b", "New")),
        },
        clashes={"c": ("a2", "a3")},
    )
    calendar = SideView(
        CALENDAR,
        False,
        {"b": fetched(CALENDAR, event("b", "Other"))},
        clashes={"e": ("b5", "b6")},
    )
    decisions = plan(rows, crm, calendar, Rules())
    assert [type(d).__name__ for d in decisions] == [
        "ConflictRecord",
        "IdentClash",
        "IdentClash",
        "Action",
        "Action",
    ]
    assert [d.ident for d in decisions] == ["b", "c", "e", "a", "d"]
    assert decisions[1] == IdentClash("c", CRM, ("a2", "a3"))
    assert decisions[2] == IdentClash("e", CALENDAR, ("b5", "b6"))
    assert decisions[4] == Action("d", Branch.GONE)


def test_plan_skips_idents_in_sync():
    crm, calendar = views(listed(CRM), listed(CALENDAR))
    assert plan({"x": ROW}, crm, calendar, Rules()) == ()


def test_action_lists_its_writes_crm_first():
    action = Action(
        "x",
        Branch.CONFLICT,
        write_crm=Delete("a", "1"),
        write_calendar=Delete("b", "2"),
    )
    assert action.writes() == ((CRM, Delete("a", "1")), (CALENDAR, Delete("b", "2")))
    assert action.write(CALENDAR) == Delete("b", "2")
    assert Action("x", Branch.GONE).writes() == ()


# ------------------------------------------------------------------ listing -> view


def test_ids_to_fetch_takes_new_ids_and_new_versions_only():
    rows = {"x": ROW, "y": StatusRow("y", "a2", None, "h", "b2", "vb2", "h")}
    listing = {"a1": "va1", "a2": "v9", "a3": "v1"}
    # a1 as recorded; a2 recorded without a version (case 15); a3 unknown
    assert ids_to_fetch(rows, CRM, listing) == ("a2", "a3")
    assert ids_to_fetch(rows, CALENDAR, {"b1": "vb1", "b2": "vb2"}) == ()


def test_build_view_places_items_by_ident():
    moved = RemoteEvent("b9", "v1", OLD)
    other = RemoteEvent("b7", "v1", event("y"))
    view = build_view(
        {"x": ROW},
        CALENDAR,
        {
            "b9": "v1",
            "b7": "v1",
            "b8": "v3",
        },  # b8 was deleted before it could be fetched
        [moved, other],
        read_only=True,
    )
    assert view.items == {"x": ItemState.of(moved), "y": ItemState.of(other)}
    assert view.clashes == {}
    assert view.read_only


def test_build_view_keeps_unchanged_items_without_fetching():
    view = build_view({"x": ROW}, CRM, {"a1": "va1"}, [], read_only=False)
    assert view.items == {"x": ItemState("a1", "va1", H_OLD)}


def test_build_view_reports_an_ident_held_twice():
    duplicate = RemoteEvent("a2", "v1", event("x", "Copy"))
    view = build_view(
        {"x": ROW}, CRM, {"a1": "va1", "a2": "v1"}, [duplicate], read_only=False
    )
    assert view.items == {}
    assert view.clashes == {"x": ("a1", "a2")}


def test_build_view_reports_every_item_of_an_ident_held_three_times():
    copies = [RemoteEvent(f"a{n}", "v1", event("x", f"Copy {n}")) for n in (3, 2)]
    view = build_view(
        {"x": ROW},
        CRM,
        {"a1": "va1", "a2": "v1", "a3": "v1"},
        copies,
        read_only=False,
    )
    assert view.items == {}
    assert view.clashes == {"x": ("a1", "a2", "a3")}


@pytest.mark.parametrize(
    ("rows", "crm", "calendar", "empty"),
    [
        ({"x": ROW}, {"a1": "1"}, {}, CALENDAR),
        ({"x": ROW}, {}, {"b1": "1"}, CRM),
        ({"x": ROW}, {}, {}, None),  # both empty: nothing to protect against
        ({}, {"a1": "1"}, {}, None),  # first sync
        ({"x": ROW}, {"a1": "1"}, {"b1": "1"}, None),
    ],
)
def test_storage_empty(rows, crm, calendar, empty):
    assert storage_empty(rows, crm, calendar) == empty


# ------------------------------------------------------------------ keys and rules


def test_idempotency_key_is_stable_until_the_row_changes():
    first = idempotency_key("x", None, CALENDAR)
    assert first == idempotency_key("x", None, CALENDAR)
    assert len(first) == 40
    assert set(first) <= set("0123456789abcdef")
    # a re-creation after the item was deleted gets another key
    assert idempotency_key("x", ROW, CALENDAR) != first
    assert idempotency_key("x", None, CRM) != first
    assert idempotency_key("X", None, CALENDAR) != first


@pytest.mark.parametrize(
    "policy", ["manual", "crm_wins", "calendar_wins", "latest_wins"]
)
def test_conflict_policy_from_config(policy):
    assert ConflictPolicy.from_config(policy).value == policy


@pytest.mark.parametrize("bad", ["a wins", "CRM_WINS", "custom", ""])
def test_unknown_conflict_policy_fails_configuration(bad):
    with pytest.raises(ConfigError, match="Unknown conflict policy"):
        ConflictPolicy.from_config(bad)


def test_custom_policy_and_resolver_go_together():
    with pytest.raises(ConfigError, match="needs a resolver"):
        Rules(ConflictPolicy.CUSTOM)
    with pytest.raises(ConfigError, match="needs a resolver"):
        Rules(ConflictPolicy.CRM_WINS, resolver=merge_titles)


def test_side_names():
    assert CRM.other is CALENDAR
    assert CALENDAR.other is CRM
