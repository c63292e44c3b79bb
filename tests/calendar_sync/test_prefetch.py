"""The change feed a run requests before its engine starts
(``CheckpointedCalendar.prefetch_changes``): taken only for the cursor it was
made with, its error raised where the request would have been made, and a
request still under way cancelled when nothing took it. The service's use of
it, against the Google sandbox, is in ``test_google_sync.py``."""

from __future__ import annotations

import asyncio

import pytest

from crmflow.bootstrap import Services
from crmflow.domain.calendar import Changes
from crmflow.providers.base import CursorExpired
from crmflow.providers.memory import MemoryCalendar, Method
from crmflow.services.calendar_sides import CheckpointedCalendar
from crmflow.store.appointment_sync import SyncSession
from tests.sync.helpers import event


async def _checkpointed(
    services: Services, tenants, inner: MemoryCalendar
) -> CheckpointedCalendar:
    return CheckpointedCalendar(inner, SyncSession(services.db, tenants.alice.ctx))


async def test_the_early_answer_is_taken_for_its_own_cursor_only(
    services: Services, tenants
) -> None:
    inner = MemoryCalendar()
    old = (await inner.list()).cursor
    assert old is not None
    remote_id = inner.put(event("a@test", "Added"))
    newer = (await inner.list()).cursor
    assert newer is not None
    calendar = await _checkpointed(services, tenants, inner)

    calendar.prefetch_changes(old)
    await asyncio.sleep(0)
    # another cursor: a request of its own, and the early one is not used
    other = await calendar.list_changes(newer)
    assert other.changed == {}
    await calendar.discard_prefetch()
    assert len(inner.calls_of(Method.LIST_CHANGES)) == 2

    calendar.prefetch_changes(old)
    taken = await calendar.list_changes(old)
    assert set(taken.changed) == {remote_id}
    # taken once: the next call with that cursor asks the calendar again
    again = await calendar.list_changes(old)
    assert again == taken
    await calendar.discard_prefetch()
    assert len(inner.calls_of(Method.LIST_CHANGES)) == 4


async def test_the_early_requests_error_is_raised_where_the_request_was_due(
    services: Services, tenants
) -> None:
    inner = MemoryCalendar()
    cursor = (await inner.list()).cursor
    assert cursor is not None
    inner.expire_cursors()
    calendar = await _checkpointed(services, tenants, inner)

    calendar.prefetch_changes(cursor)
    await asyncio.sleep(0.01)  # it has failed by now, and nobody has looked
    with pytest.raises(CursorExpired):
        await calendar.list_changes(cursor)


async def test_an_early_request_nothing_took_is_cancelled(
    services: Services, tenants
) -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    class Slow(MemoryCalendar):
        async def list_changes(self, cursor: str) -> Changes:
            started.set()
            await asyncio.sleep(30)
            finished.set()
            return await super().list_changes(cursor)

    inner = Slow()
    cursor = (await inner.list()).cursor
    assert cursor is not None
    calendar = await _checkpointed(services, tenants, inner)

    calendar.prefetch_changes(cursor)
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(calendar.discard_prefetch(), 5)
    assert not finished.is_set()
