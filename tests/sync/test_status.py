"""The status schema (case 19) and the in-memory repository."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmflow.providers.memory import WRITES
from crmflow.sync import ConflictPolicy
from crmflow.sync.errors import StatusSchemaError
from crmflow.sync.status import (
    STATUS_SCHEMA,
    InMemoryStatusRepository,
    SideCursor,
    StatusRow,
    StatusSnapshot,
    dump_status,
    load_status,
)

from .helpers import CALENDAR, CRM, event, make_pair

# bounded for CI: the examples are cheap, the number is what costs
PROPERTY = settings(max_examples=150, derandomize=True, database=None, deadline=None)

texts = st.text(max_size=12)
versions = st.none() | texts
rows = st.builds(StatusRow, st.just(""), texts, versions, texts, texts, versions, texts)
cursors = st.none() | st.builds(
    SideCursor, texts, st.dictionaries(texts, texts, max_size=4)
)


@st.composite
def snapshots(draw: st.DrawFn) -> StatusSnapshot:
    by_ident = draw(st.dictionaries(texts, rows, max_size=6))
    return StatusSnapshot(
        rows={ident: replace(row, ident=ident) for ident, row in by_ident.items()},
        cursor_a=draw(cursors),
        cursor_b=draw(cursors),
    )


@PROPERTY
@given(snapshots())
def test_case19_every_row_round_trips_exactly(snapshot):
    text = dump_status(snapshot)
    back = load_status(text)
    assert back == snapshot
    assert back.rows == snapshot.rows
    # canonical: the same snapshot always gives the same bytes
    assert dump_status(back) == text


def test_status_layout_is_schema_1():
    snapshot = StatusSnapshot(
        rows={"x": StatusRow("x", "a1", None, "h", "b1", "v1", "h")},
        cursor_b=SideCursor("c1", {"b1": "v1"}),
    )
    assert json.loads(dump_status(snapshot)) == {
        "schema": STATUS_SCHEMA,
        "rows": [
            {"ident": "x", "id_a": "a1", "ver_a": None, "hash_a": "h",
             "id_b": "b1", "ver_b": "v1", "hash_b": "h"},
        ],
        "cursors": {"crm": None, "calendar": {"token": "c1", "listing": {"b1": "v1"}}},
    }  # fmt: skip
    assert snapshot.cursor(CRM) is None
    assert snapshot.cursor(CALENDAR) == SideCursor("c1", {"b1": "v1"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"schema": 2, "rows": [], "cursors": {}}', "schema 2"),
        ('{"schema": 1, "rows": [{"ident": "x"}], "cursors": {}}', "cannot be read"),
        ('{"schema": 1, "rows": []}', "cannot be read"),
        ("not json", "cannot be read"),
        ("[]", "cannot be read"),
    ],
)
def test_unreadable_status_is_refused(text, message):
    with pytest.raises(StatusSchemaError, match=message):
        load_status(text)


async def test_in_memory_repository_swaps_whole_snapshots():
    repository = InMemoryStatusRepository()
    assert await repository.load() == StatusSnapshot()
    first = StatusSnapshot(rows={"x": StatusRow("x", "a", "1", "h", "b", "2", "h")})
    await repository.commit(first)
    await repository.commit(StatusSnapshot())
    assert await repository.load() == StatusSnapshot()
    assert repository.commits == 2
    assert InMemoryStatusRepository(dump_status(first)).text == dump_status(first)


@settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.dictionaries(
        st.sampled_from(["a", "B", "ç", "d\n", "e/f"]),
        st.tuples(st.sampled_from([CRM, CALENDAR]), st.sampled_from(["T1", "T2"])),
        max_size=5,
    ),
    st.booleans(),
)
def test_case19_sync_on_a_round_tripped_status_writes_nothing(items, incremental):
    async def scenario() -> None:
        pair = make_pair(incremental=incremental)
        for uid, (side, title) in items.items():
            pair.side(side).put(event(uid, title))
        await pair.sync(conflicts=ConflictPolicy.CRM_WINS)
        # read the status back through its schema, as after an upgrade
        text = pair.status.text
        pair.status = InMemoryStatusRepository(
            None if text is None else dump_status(load_status(text))
        )
        rows = await pair.rows()
        pair.forget_calls()
        result = await pair.sync(conflicts=ConflictPolicy.CRM_WINS)
        assert result.writes == ()
        assert not [
            c for c in pair.crm.calls + pair.calendar.calls if c.method in WRITES
        ]
        assert pair.fetches() == 0
        # only a change feed's position may move (past our own writes)
        assert await pair.rows() == rows

    asyncio.run(scenario())
