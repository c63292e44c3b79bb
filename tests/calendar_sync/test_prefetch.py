"""The change feed a run requests before its engine starts
(``CheckpointedCalendar.prefetch_changes``): taken only for the cursor it was
made with, its error raised where the request would have been made, and a
request nothing took cancelled (by a full listing, another cursor or the end
of the run) without an error reported as lost. The service's use of it,
against the Google sandbox, is in ``test_google_sync.py``."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from crmflow.bootstrap import Services
from crmflow.domain.calendar import Changes
from crmflow.providers.base import CursorExpired, TransientProviderError
from crmflow.providers.memory import MemoryCalendar
from crmflow.services.calendar_sides import CheckpointedCalendar
from crmflow.store.appointment_sync import SyncSession
from tests.sync.helpers import event


class Slow(MemoryCalendar):
    """A calendar whose change feed takes ``delay`` seconds to answer, and
    that counts the requests started and the ones cancelled."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.started = 0
        self.cancelled = 0

    async def list_changes(self, cursor: str) -> Changes:
        self.started += 1
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return await super().list_changes(cursor)


async def _cursor(calendar: MemoryCalendar) -> str:
    cursor = (await calendar.list()).cursor
    assert cursor is not None
    return cursor


@pytest.fixture
def uow(services: Services, tenants: Any) -> SyncSession:
    return SyncSession(services.db, tenants.alice.ctx)


async def test_the_early_answer_is_taken_for_its_own_cursor_only(
    uow: SyncSession,
) -> None:
    inner = Slow(0.05)
    old = await _cursor(inner)
    remote_id = inner.put(event("a@test", "Added"))
    newer = await _cursor(inner)
    calendar = CheckpointedCalendar(inner, uow)

    calendar.prefetch_changes(old)
    await asyncio.sleep(0.01)
    taken = await calendar.list_changes(old)
    assert set(taken.changed) == {remote_id}
    assert (inner.started, inner.cancelled) == (1, 0)  # no second request

    # asked with another cursor: the early request is cancelled at once and
    # that cursor gets a request of its own
    calendar.prefetch_changes(old)
    await asyncio.sleep(0.01)
    other = await calendar.list_changes(newer)
    assert other.changed == {}
    assert (inner.started, inner.cancelled) == (3, 1)

    # a full listing instead: the same
    calendar.prefetch_changes(old)
    await asyncio.sleep(0.01)
    listed = await calendar.list()
    assert remote_id in listed.items
    assert (inner.started, inner.cancelled) == (4, 2)
    await calendar.discard_prefetch()


async def test_the_early_requests_error_is_raised_where_the_request_was_due(
    uow: SyncSession,
) -> None:
    inner = MemoryCalendar()
    cursor = await _cursor(inner)
    # only the first request fails: a request made now would succeed
    inner.fail_next(CursorExpired())
    calendar = CheckpointedCalendar(inner, uow)

    calendar.prefetch_changes(cursor)
    await asyncio.sleep(0.01)
    with pytest.raises(CursorExpired):
        await calendar.list_changes(cursor)
    assert (await calendar.list_changes(cursor)).changed == {}


async def test_an_early_request_nothing_took_is_cancelled(uow: SyncSession) -> None:
    inner = Slow(30)
    cursor = await _cursor(inner)
    calendar = CheckpointedCalendar(inner, uow)

    calendar.prefetch_changes(cursor)
    with pytest.raises(RuntimeError, match="already requested"):
        calendar.prefetch_changes(cursor)
    await asyncio.sleep(0.01)
    await asyncio.wait_for(calendar.discard_prefetch(), 5)
    assert (inner.started, inner.cancelled) == (1, 1)


async def test_an_early_requests_error_nobody_took_is_not_reported_as_lost(
    uow: SyncSession,
) -> None:
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        inner = MemoryCalendar()
        cursor = await _cursor(inner)
        inner.fail_next(TransientProviderError("the calendar is down"))
        calendar = CheckpointedCalendar(inner, uow)
        calendar.prefetch_changes(cursor)
        await asyncio.sleep(0.01)  # it has failed, and nothing looked
        await calendar.discard_prefetch()
        del calendar
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert reported == []
