"""Builders for the sync tests: events, a deterministic clock, a synced pair."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from crmflow.domain.appointments import timed_span
from crmflow.domain.calendar import CalendarEvent
from crmflow.providers.memory import MemoryCalendar, Method
from crmflow.sync import SideName, SyncResult, sync_pair
from crmflow.sync.status import InMemoryStatusRepository, StatusRow

T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
CRM = SideName.CRM
CALENDAR = SideName.CALENDAR


def event(
    uid: str, title: str = "Meeting", *, hour: int = 9, **fields: Any
) -> CalendarEvent:
    """A one-hour timed event on 2 March 2026, Berlin time."""
    return CalendarEvent(
        ical_uid=uid,
        title=title,
        span=timed_span(
            dt.datetime(2026, 3, 2, hour),
            dt.datetime(2026, 3, 2, hour + 1),
            "Europe/Berlin",
        ),
        **fields,
    )


class Clock:
    """A clock that moves one second per reading, so every write is later than
    the one before (``latest_wins`` tests; shared by both calendars)."""

    def __init__(self, start: dt.datetime = T0) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


@dataclass
class Pair:
    """A CRM side and a calendar side (both memory calendars) with their status."""

    crm: MemoryCalendar
    calendar: MemoryCalendar
    status: InMemoryStatusRepository = field(default_factory=InMemoryStatusRepository)

    def side(self, name: SideName) -> MemoryCalendar:
        return self.crm if name is CRM else self.calendar

    async def sync(self, **options: Any) -> SyncResult:
        return await sync_pair(self.crm, self.calendar, self.status, **options)

    def forget_calls(self) -> None:
        self.crm.calls.clear()
        self.calendar.calls.clear()

    async def rows(self) -> dict[str, StatusRow]:
        return dict((await self.status.load()).rows)

    def fetches(self) -> int:
        return len(self.crm.calls_of(Method.GET_MANY)) + len(
            self.calendar.calls_of(Method.GET_MANY)
        )

    async def assert_in_sync(self) -> None:
        """Both sides hold the same events, once each, and the status knows them all."""
        assert len(self.crm.uids()) == len(set(self.crm.uids())), self.crm.uids()
        assert len(self.calendar.uids()) == len(set(self.calendar.uids()))
        crm = {uid: e.content_hash() for uid, e in self.crm.events().items()}
        calendar = {uid: e.content_hash() for uid, e in self.calendar.events().items()}
        assert crm == calendar
        rows = await self.rows()
        assert set(rows) == set(crm)
        for uid, row in rows.items():
            assert row.id_a == self.crm.id_of(uid)
            assert row.id_b == self.calendar.id_of(uid)
            assert row.hash_a == row.hash_b == crm[uid]


def make_pair(**knobs: Any) -> Pair:
    """Two memory calendars sharing one clock; ``knobs`` go to both."""
    clock = Clock()
    return Pair(
        MemoryCalendar(clock=clock, **knobs), MemoryCalendar(clock=clock, **knobs)
    )


async def synced_pair(*uids: str, **knobs: Any) -> Pair:
    """A pair that has synced one event per uid (created in the CRM)."""
    pair = make_pair(**knobs)
    for uid in uids:
        pair.crm.put(event(uid))
    await pair.sync()
    pair.forget_calls()
    return pair
