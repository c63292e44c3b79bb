"""``MemoryCalendar``'s fault knobs and bookkeeping (the contract is in
``test_memory_contract.py``)."""

from __future__ import annotations

import datetime as dt

import pytest

from crmflow.domain.calendar import Notify
from crmflow.providers.base import (
    CursorExpired,
    ItemAlreadyExists,
    RateLimited,
    TransientProviderError,
    UnsupportedOperation,
)
from crmflow.providers.memory import Call, MemoryCalendar, Method

from .helpers import event


async def test_flaky_versions_change_on_every_read_and_stick():
    calendar = MemoryCalendar(flaky_versions=True)
    remote_id = calendar.put(event("x"))
    listed = (await calendar.list()).items[remote_id]
    [first] = await calendar.get_many([remote_id])
    [second] = await calendar.get_many([remote_id])
    assert len({listed, first.version, second.version}) == 3
    assert (await calendar.list()).items[remote_id] == second.version
    assert first.updated_at == second.updated_at  # a new ETag is not an edit


async def test_get_many_respects_its_limit():
    calendar = MemoryCalendar(get_many_limit=1)
    ids = [calendar.put(event("a")), calendar.put(event("b"))]
    with pytest.raises(UnsupportedOperation, match="At most 1"):
        await calendar.get_many(ids)


async def test_injected_faults_hit_the_next_calls_and_are_recorded():
    calendar = MemoryCalendar()
    calendar.fail_next(RateLimited(retry_after_s=2), times=2)
    for _ in range(2):
        with pytest.raises(RateLimited):
            await calendar.list()
    await calendar.list()
    assert calendar.calls == [Call(Method.LIST)] * 3


async def test_a_lost_reply_still_applies_the_write():
    calendar = MemoryCalendar()
    calendar.lose_write_replies = 1
    with pytest.raises(TransientProviderError, match="reply was lost"):
        await calendar.create(event("x"), idempotency_key="k", notify=Notify.NONE)
    assert calendar.uids() == ["x"]
    assert [c.method for c in calendar.writes] == [Method.CREATE]


async def test_an_id_collision_is_item_already_exists():
    calendar = MemoryCalendar(id_factory=lambda e, n: "same")
    calendar.put(event("x"))
    with pytest.raises(ItemAlreadyExists):
        await calendar.create(event("y"), idempotency_key="k", notify=Notify.NONE)
    with pytest.raises(ValueError, match="exists"):
        calendar.put(event("z"))


async def test_a_uid_in_use_is_refused_like_caldav_no_uid_conflict():
    calendar = MemoryCalendar()
    calendar.hidden.add(calendar.put(event("x")))
    with pytest.raises(ItemAlreadyExists, match="UID 'x'"):
        await calendar.create(event("x"), idempotency_key="k", notify=Notify.NONE)
    # out of band, a person can still make a duplicate (case 11)
    calendar.put(event("x"))
    assert calendar.uids() == ["x", "x"]


async def test_hidden_items_appear_in_the_feed_once_revealed():
    calendar = MemoryCalendar()
    cursor = (await calendar.list()).cursor
    assert cursor is not None
    remote_id = calendar.put(event("x"))
    calendar.hidden.add(remote_id)
    assert (await calendar.list()).items == {}
    assert (await calendar.list_changes(cursor)).changed == {}
    calendar.fail_writes.add("y")
    calendar.clear_faults()
    assert calendar.fail_writes == set()
    changes = await calendar.list_changes(cursor)
    assert list(changes.changed) == [remote_id]


async def test_a_cursor_from_the_future_is_expired():
    calendar = MemoryCalendar()
    with pytest.raises(CursorExpired):
        await calendar.list_changes("0:99")


def test_default_clock_and_repr():
    calendar = MemoryCalendar()
    calendar.put(event("x"))
    [stored] = calendar.items.values()
    assert stored.updated_at.tzinfo is dt.UTC
    assert repr(calendar) == "MemoryCalendar(1 items)"
    assert calendar.calls_of(Method.LIST) == []
