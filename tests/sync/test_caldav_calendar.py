"""``CalDAVCalendar`` against a real Radicale: bulk fetching, idempotent creates,
sync tokens, all-day and time zone mapping, a full sync with a memory CRM, the
requests of each sync phase, the HTTP client's lifetime, the listing's data
kept for ``get_many``, and answers past the size cap."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from icalendar import Calendar

from crmflow.domain.appointments import all_day_span, timed_span
from crmflow.domain.calendar import CalendarEvent, Notify
from crmflow.providers.base import (
    CursorExpired,
    ItemAlreadyExists,
    PreconditionFailed,
    ProviderError,
)
from crmflow.providers.caldav import CalDAVCalendar, _calendar
from crmflow.providers.caldav._ical import to_ical
from crmflow.providers.memory import MemoryCalendar
from crmflow.sync import sync_pair
from crmflow.sync.status import InMemoryStatusRepository
from tests.servers.radicale import RadicaleServer

from .caldav_helpers import (
    USER,
    Collections,
    CountingTransport,
    calendar,
    collections_of,
    expire_sync_tokens,
    put_raw,
)
from .contract import new_key, sample

pytestmark = pytest.mark.servers


@pytest.fixture
def fresh_calendars(radicale: RadicaleServer) -> Iterator[Collections]:
    with collections_of(radicale) as made:
        yield made


class KindsTransport(CountingTransport):
    """A counting transport that also names each request: its method, or the
    REPORT it is (``sync-collection`` asking for ``calendar-data`` is
    ``sync-collection+data``)."""

    def __init__(self) -> None:
        super().__init__()
        self.kinds: list[str] = []

    def clear(self) -> None:
        self.requests.clear()
        self.multigets.clear()
        self.kinds.clear()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = request.content
        kind = request.method
        if b"sync-collection" in body:
            kind = "sync-collection"
            if b"calendar-data" in body:
                kind += "+data"
        elif b"calendar-multiget" in body:
            kind = "calendar-multiget"
        self.kinds.append(kind)
        return await super().handle_async_request(request)


@pytest.fixture
async def transport() -> AsyncIterator[KindsTransport]:
    counting = KindsTransport()
    yield counting
    await counting.close()


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> list[httpx.AsyncClient]:
    """Every ``httpx.AsyncClient`` made while the test runs."""
    made: list[httpx.AsyncClient] = []

    class Recorded(httpx.AsyncClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(httpx, "AsyncClient", Recorded)
    return made


@pytest.fixture
def url(fresh_calendars: Collections) -> str:
    return fresh_calendars.new()


@pytest.fixture
def dav(
    radicale: RadicaleServer, url: str, transport: KindsTransport
) -> CalDAVCalendar:
    return calendar(radicale, url, transport)


def get_raw(radicale: RadicaleServer, href: str) -> str:
    response = httpx.get(
        f"{radicale.url.rstrip('/')}{href}",
        auth=(USER, radicale.users[USER]),
        timeout=10,
    )
    assert response.status_code == 200
    return response.text


async def create(dav: CalDAVCalendar, event: CalendarEvent) -> str:
    written = await dav.create(event, idempotency_key=new_key(), notify=Notify.NONE)
    return written.remote_id


# ------------------------------------------------------------------ bulk fetch


async def test_n_items_are_fetched_with_one_multiget(dav, transport):
    ids = [await create(dav, sample(f"multi-{n}")) for n in range(5)]
    transport.requests.clear()
    items = await dav.get_many(ids)
    assert sorted(i.event.ical_uid for i in items) == [f"multi-{n}" for n in range(5)]
    assert transport.requests == [("REPORT", transport.requests[0][1])]
    assert transport.requests[0][1].endswith("/")  # on the collection, no GETs
    assert transport.multigets == [5]


async def _synced_then_edited_on_the_server(
    dav: CalDAVCalendar, prefix: str
) -> tuple[MemoryCalendar, InMemoryStatusRepository]:
    """Four CRM events synced to ``dav``, then each retitled on the server."""
    crm = MemoryCalendar()
    status = InMemoryStatusRepository()
    for n in range(4):
        crm.put(sample(f"{prefix}-{n}"))
    await sync_pair(crm, dav, status)
    listing = await dav.list()
    for href in listing.items:
        event = (await dav.get_many([href]))[0].event
        await dav.update(
            href,
            replace(event, title="edited on the server"),
            if_match=listing.items[href],
            notify=Notify.NONE,
        )
    return crm, status


async def test_a_sync_fetches_n_changed_items_in_one_request(dav, transport):
    crm, status = await _synced_then_edited_on_the_server(dav, "changed")
    transport.clear()
    result = await sync_pair(crm, dav, status)
    assert len(result.writes) == 4
    # the change feed brings the four changes with their data: one request
    assert transport.kinds == ["sync-collection+data"]
    assert transport.multigets == []
    assert {e.title for e in crm.events().values()} == {"edited on the server"}


class DataWithheld(KindsTransport):
    """A server that leaves the calendar data out of ``sync-collection``
    answers (RFC 6578 lets it): the request reaches Radicale without it."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if b"sync-collection" in request.content:
            body = request.content.replace(b"<c:calendar-data/>", b"")
            request = httpx.Request(
                request.method,
                request.url,
                headers={
                    k: v for k, v in request.headers.items() if k != "content-length"
                },
                content=body,
            )
        return await super().handle_async_request(request)


async def test_changes_sent_without_their_data_are_fetched_in_one_multiget(
    radicale, url
):
    withheld = DataWithheld()
    try:
        dav = calendar(radicale, url, withheld)
        crm, status = await _synced_then_edited_on_the_server(dav, "withheld")
        withheld.clear()
        result = await sync_pair(crm, dav, status)
        assert len(result.writes) == 4
        # asked for with data, answered without: one multiget for all four
        assert withheld.kinds == ["sync-collection", "calendar-multiget"]
        assert withheld.multigets == [4]
        assert {e.title for e in crm.events().values()} == {"edited on the server"}
    finally:
        await withheld.close()


# ------------------------------------------------------------------ create


async def test_a_repeated_create_adopts_the_item_put_before(dav):
    key = new_key()
    first = await dav.create(sample("adopt"), idempotency_key=key, notify=Notify.NONE)
    again = await dav.create(sample("adopt"), idempotency_key=key, notify=Notify.NONE)
    assert (again.remote_id, again.adopted) == (first.remote_id, True)
    assert again.version == (await dav.list()).items[first.remote_id]
    assert first.version == again.version  # Radicale sends an ETag on PUT


async def test_a_create_on_a_foreign_item_at_the_same_name_is_refused(dav):
    key = new_key()
    await dav.create(sample("mine"), idempotency_key=key, notify=Notify.NONE)
    with pytest.raises(ItemAlreadyExists):
        await dav.create(sample("other"), idempotency_key=key, notify=Notify.NONE)


async def test_a_second_item_with_the_same_uid_is_refused(dav):
    await create(dav, sample("same-uid"))
    with pytest.raises(ItemAlreadyExists):
        await create(dav, sample("same-uid"))
    assert len((await dav.list()).items) == 1


async def test_a_put_without_etag_gives_no_version_and_syncs_cleanly(radicale, url):
    stripping = CountingTransport(strip_put_etags=True)
    try:
        dav = calendar(radicale, url, stripping)
        written = await dav.create(
            sample("no-etag"), idempotency_key=new_key(), notify=Notify.NONE
        )
        assert written.version is None

        crm = MemoryCalendar()
        status = InMemoryStatusRepository()
        crm.put(sample("from-crm"))
        first = await sync_pair(crm, dav, status)
        assert len(first.writes) == 2
        second = await sync_pair(crm, dav, status)
        assert second.writes == ()
        assert second.conflicts == ()
        # the real versions are known now: nothing left to fetch
        stripping.multigets.clear()
        third = await sync_pair(crm, dav, status)
        assert third.writes == ()
        assert stripping.multigets == []
    finally:
        await stripping.close()


# ------------------------------------------------------------------ sync tokens


async def test_a_malformed_sync_token_is_expired(dav):
    with pytest.raises(CursorExpired):
        await dav.list_changes("http://radicale.org/ns/sync/not-a-token")


async def test_a_forgotten_sync_token_is_expired(radicale, dav):
    await create(dav, sample("before"))
    cursor = (await dav.list()).cursor
    assert cursor is not None
    assert cursor.startswith("http://radicale.org/ns/sync/")
    assert expire_sync_tokens(radicale, dav.url)
    with pytest.raises(CursorExpired):
        await dav.list_changes(cursor)


# ------------------------------------------------------------------ mapping


async def test_all_day_events_are_dates_with_an_exclusive_end(radicale, dav):
    event = replace(
        sample("all-day"),
        span=all_day_span(dt.date(2026, 5, 3), dt.date(2026, 5, 5), "Pacific/Auckland"),
    )
    href = await create(dav, event)
    text = get_raw(radicale, href)
    assert "DTSTART;VALUE=DATE:20260503" in text
    assert "DTEND;VALUE=DATE:20260505" in text
    [item] = await dav.get_many([href])
    assert item.event.span.all_day
    assert (item.event.span.start_date, item.event.span.end_date) == (
        dt.date(2026, 5, 3),
        dt.date(2026, 5, 5),
    )
    assert item.event.content_hash() == event.content_hash()


async def test_timed_events_carry_tzid_and_vtimezone_across_dst(radicale, dav):
    # the clocks go forward in Berlin at 02:00 on 29 March 2026
    event = replace(
        sample("dst"),
        span=timed_span(
            dt.datetime(2026, 3, 29, 1, 30),
            dt.datetime(2026, 3, 29, 4),
            "Europe/Berlin",
        ),
    )
    href = await create(dav, event)
    text = get_raw(radicale, href)
    assert "DTSTART;TZID=Europe/Berlin:20260329T013000" in text
    assert "DTEND;TZID=Europe/Berlin:20260329T040000" in text
    assert "BEGIN:VTIMEZONE" in text
    assert "TZID:Europe/Berlin" in text
    [item] = await dav.get_many([href])
    assert item.event.span == event.span  # same instants, same zone
    assert item.event.span.end_at - item.event.span.start_at == dt.timedelta(hours=1.5)


FOREIGN = b"""BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//Other//Client//EN\r
BEGIN:VTIMEZONE\r
TZID:My Office Time\r
BEGIN:STANDARD\r
DTSTART:19700101T000000\r
TZOFFSETFROM:+0300\r
TZOFFSETTO:+0300\r
END:STANDARD\r
END:VTIMEZONE\r
BEGIN:VEVENT\r
UID:foreign-1\r
DTSTAMP:20260101T000000Z\r
SEQUENCE:4\r
DTSTART;TZID=My Office Time:20260410T120000\r
DTEND;TZID=My Office Time:20260410T130000\r
SUMMARY:From elsewhere\r
X-OTHER-CLIENT:whatever\r
ATTENDEE;CN=Ann;PARTSTAT=ACCEPTED:MAILTO:Ann@Example.com\r
BEGIN:VALARM\r
ACTION:DISPLAY\r
DESCRIPTION:Reminder\r
TRIGGER:-PT15M\r
END:VALARM\r
END:VEVENT\r
END:VCALENDAR\r
"""


async def test_custom_zones_fall_back_to_utc_and_unknown_properties_are_ignored(
    radicale, dav
):
    put_raw(radicale, dav.url, "foreign.ics", FOREIGN)
    [item] = await dav.get_many([urlsplit(dav.url).path + "foreign.ics"])
    span = item.event.span
    assert span.timezone == "UTC"
    assert span.start_at == dt.datetime(2026, 4, 10, 9, tzinfo=dt.UTC)
    assert item.event.attendees[0].email.lower() == "ann@example.com"
    plain = CalendarEvent(
        ical_uid="foreign-1",
        title="From elsewhere",
        span=timed_span(
            dt.datetime(2026, 4, 10, 9, tzinfo=dt.UTC),
            dt.datetime(2026, 4, 10, 10, tzinfo=dt.UTC),
            "UTC",
        ),
        attendees=item.event.attendees,
    )
    assert item.event.content_hash() == plain.content_hash()


# ------------------------------------------------------------------ sync_pair


async def test_a_full_sync_with_a_memory_crm_both_ways(dav):
    crm = MemoryCalendar()
    status = InMemoryStatusRepository()
    crm.put(sample("from-crm", "CRM meeting"))
    await create(dav, sample("from-calendar", "Calendar meeting"))

    first = await sync_pair(crm, dav, status)
    assert len(first.writes) == 2
    assert set(crm.events()) == {"from-crm", "from-calendar"}
    assert await _calendar_titles(dav) == {
        "from-crm": "CRM meeting",
        "from-calendar": "Calendar meeting",
    }

    # updates both ways
    crm.edit(crm.id_of("from-crm"), sample("from-crm", "CRM renamed"))
    listing = await dav.list()
    [remote] = [
        i
        for i in await dav.get_many(list(listing.items))
        if i.event.ical_uid == "from-calendar"
    ]
    await dav.update(
        remote.remote_id,
        replace(remote.event, title="Calendar renamed"),
        if_match=remote.version,
        notify=Notify.NONE,
    )
    second = await sync_pair(crm, dav, status)
    assert len(second.writes) == 2
    assert crm.events()["from-calendar"].title == "Calendar renamed"
    assert (await _calendar_titles(dav))["from-crm"] == "CRM renamed"

    # deletes both ways
    crm.remove(crm.id_of("from-crm"))
    current = await dav.get_many([remote.remote_id])
    await dav.delete(remote.remote_id, if_match=current[0].version, notify=Notify.NONE)
    third = await sync_pair(crm, dav, status)
    assert len(third.writes) == 2
    assert crm.events() == {}
    assert (await dav.list()).items == {}

    # and once more: nothing to do
    crm.put(sample("late", "Late"))
    await sync_pair(crm, dav, status)
    quiet = await sync_pair(crm, dav, status)
    assert quiet.writes == ()


async def _calendar_titles(dav: CalDAVCalendar) -> dict[str, str]:
    items = await dav.get_many(list((await dav.list()).items))
    return {i.event.ical_uid: i.event.title for i in items}


# ------------------------------------------------------------------ rewrites keep extras

DECORATED = b"""BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//Other//Client//EN\r
X-WR-CALNAME:Work\r
BEGIN:VEVENT\r
UID:decorated-1\r
DTSTAMP:20260101T000000Z\r
SEQUENCE:3\r
DTSTART;TZID=Europe/Berlin:20260406T090000\r
DTEND;TZID=Europe/Berlin:20260406T100000\r
RRULE:FREQ=DAILY;COUNT=5\r
SUMMARY:Stand-up\r
CATEGORIES:Sales,Weekly\r
X-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC\r
ORGANIZER;CN=Boss:mailto:boss@example.com\r
ATTENDEE;CN=Ann;PARTSTAT=ACCEPTED;ROLE=CHAIR;RSVP=TRUE:mailto:ann@example.com\r
ATTENDEE;CN=Bob;PARTSTAT=NEEDS-ACTION;ROLE=OPT-PARTICIPANT:mailto:bob@example.com\r
BEGIN:VALARM\r
ACTION:DISPLAY\r
DESCRIPTION:Stand-up soon\r
TRIGGER:-PT10M\r
END:VALARM\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:decorated-1\r
DTSTAMP:20260101T000000Z\r
RECURRENCE-ID;TZID=Europe/Berlin:20260407T090000\r
DTSTART;TZID=Europe/Berlin:20260407T110000\r
DTEND;TZID=Europe/Berlin:20260407T120000\r
SUMMARY:Stand-up (late)\r
X-OVERRIDE-NOTE:moved for the board meeting\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:decorated-1\r
DTSTAMP:20260101T000000Z\r
RECURRENCE-ID;TZID=Europe/Berlin:20260408T090000\r
DTSTART;TZID=Europe/Berlin:20260408T140000\r
DTEND;TZID=Europe/Berlin:20260408T150000\r
SUMMARY:Stand-up (afternoon)\r
X-DROPPED-WITH-ITS-OVERRIDE:yes\r
END:VEVENT\r
END:VCALENDAR\r
"""


def _vevents(text: str) -> dict[object, Any]:
    calendar = Calendar.from_ical(text)
    found: dict[object, Any] = {}
    for vevent in calendar.walk("VEVENT"):
        rid = vevent.get("RECURRENCE-ID")
        found[None if rid is None else rid.dt.astimezone(dt.UTC)] = vevent
    return found


def _edited(event: CalendarEvent) -> CalendarEvent:
    """``event`` renamed, Bob dropped, the second override dropped."""
    return replace(
        event,
        title="Daily stand-up",
        attendees=event.attendees[:1],
        exceptions=event.exceptions[:1],
    )


def _assert_extras_kept(text: str) -> None:
    assert "X-WR-CALNAME:Work" in text
    events = _vevents(text)
    assert len(events) == 2  # the master and the override still listed
    master = events[None]
    assert str(master["SUMMARY"]) == "Daily stand-up"
    assert master["X-APPLE-TRAVEL-ADVISORY-BEHAVIOR"] == "AUTOMATIC"
    assert [str(c) for c in master["CATEGORIES"].cats] == ["Sales", "Weekly"]
    assert str(master["ORGANIZER"]) == "mailto:boss@example.com"
    # a kept organizer makes it a scheduling object: the server must not mail
    # the attendees about a sync write (RFC 6638)
    assert master["ORGANIZER"].params["SCHEDULE-AGENT"] == "CLIENT"
    assert int(master["SEQUENCE"]) == 4
    [alarm] = master.subcomponents
    assert alarm.name == "VALARM"
    assert str(alarm["DESCRIPTION"]) == "Stand-up soon"
    assert alarm["TRIGGER"].dt == -dt.timedelta(minutes=10)
    ann = master["ATTENDEE"]  # one attendee left: not a list
    assert str(ann) == "mailto:ann@example.com"
    assert ann.params["ROLE"] == "CHAIR"
    assert ann.params["RSVP"] == "TRUE"
    assert ann.params["SCHEDULE-AGENT"] == "CLIENT"
    assert "bob@example.com" not in text
    [override] = [v for key, v in events.items() if key is not None]
    assert override["X-OVERRIDE-NOTE"] == "moved for the board meeting"
    assert "X-DROPPED-WITH-ITS-OVERRIDE" not in text


async def test_an_update_rewrites_the_copy_it_read_keeping_what_crmflow_does_not_map(
    radicale, url, dav, transport
):
    put_raw(radicale, url, "decorated.ics", DECORATED)
    href = urlsplit(url).path + "decorated.ics"
    [item] = await dav.get_many([href])
    assert len(item.event.exceptions) == 2
    transport.clear()

    version = await dav.update(
        href, _edited(item.event), if_match=item.version, notify=Notify.NONE
    )

    # the copy read by get_many is rewritten: no second fetch
    assert transport.kinds == ["PUT"]
    _assert_extras_kept(get_raw(radicale, href))
    [again] = await dav.get_many([href])
    assert again.version == version
    assert again.event.content_hash() == _edited(item.event).content_hash()


async def _decorated_elsewhere(radicale, url) -> tuple[str, str, Any]:
    """DECORATED put by another client and read by another run: its ETag,
    href and item."""
    etag = put_raw(radicale, url, "decorated.ics", DECORATED)
    href = urlsplit(url).path + "decorated.ics"
    async with calendar(radicale, url) as reader:
        [item] = await reader.get_many([href])
    return etag, href, item


async def test_an_update_without_a_read_copy_fetches_it_once(radicale, url, transport):
    etag, href, item = await _decorated_elsewhere(radicale, url)
    fresh = calendar(radicale, url, transport)  # another run: nothing read yet

    await fresh.update(href, _edited(item.event), if_match=etag, notify=Notify.NONE)

    assert transport.kinds == ["GET", "PUT"]
    _assert_extras_kept(get_raw(radicale, href))


async def test_an_update_of_a_copy_changed_since_is_refused_and_leaves_it(
    radicale, url, transport
):
    etag, href, item = await _decorated_elsewhere(radicale, url)
    changed = DECORATED.replace(b"SUMMARY:Stand-up\r", b"SUMMARY:Renamed elsewhere\r")
    put_raw(radicale, url, "decorated.ics", changed)
    fresh = calendar(radicale, url, transport)

    with pytest.raises(PreconditionFailed):
        await fresh.update(href, _edited(item.event), if_match=etag, notify=Notify.NONE)

    # the PUT's If-Match refuses it (the HEAD tells a change from a deletion)
    assert transport.kinds == ["GET", "PUT", "HEAD"]
    assert "SUMMARY:Renamed elsewhere" in get_raw(radicale, href)


async def test_an_update_rewrites_the_listed_copy_without_fetching_it(
    radicale, url, transport
):
    etag, href, item = await _decorated_elsewhere(radicale, url)
    dav = calendar(radicale, url, transport)
    listing = await dav.list()  # brings the data, kept for get_many
    assert listing.items[href] == etag
    transport.clear()

    await dav.update(href, _edited(item.event), if_match=etag, notify=Notify.NONE)

    assert transport.kinds == ["PUT"]
    _assert_extras_kept(get_raw(radicale, href))


async def test_a_crm_edit_synced_to_caldav_keeps_the_alarm_set_there(radicale, url):
    put_raw(radicale, url, "decorated.ics", DECORATED)
    crm = MemoryCalendar()
    status = InMemoryStatusRepository()
    async with calendar(radicale, url) as dav:
        await sync_pair(crm, dav, status)
    crm.edit(crm.id_of("decorated-1"), _edited(crm.events()["decorated-1"]))

    async with calendar(radicale, url) as dav:  # a later run, a new adapter
        result = await sync_pair(crm, dav, status)

    assert [(w.side, w.kind) for w in result.writes] == [("calendar", "update")]
    _assert_extras_kept(get_raw(radicale, urlsplit(url).path + "decorated.ics"))


# ------------------------------------------------------------------ requests per phase


async def test_each_sync_phase_makes_the_fewest_requests(radicale, url, dav, transport):
    for n in range(6):
        put_raw(radicale, url, f"ev-{n}.ics", to_ical(sample(f"phase-{n}")))
    crm = MemoryCalendar()
    status = InMemoryStatusRepository()
    collection = urlsplit(url).path

    # initial: one sync-collection brings every event's data, no multiget
    transport.clear()
    first = await sync_pair(crm, dav, status)
    assert len(first.writes) == 6
    assert transport.requests == [("REPORT", collection)]
    assert transport.kinds == ["sync-collection+data"]
    assert transport.multigets == []

    # incremental: one sync-collection brings the changes with their data
    for n in (2, 4):
        put_raw(radicale, url, f"ev-{n}.ics", to_ical(sample(f"phase-{n}", "changed")))
    transport.clear()
    second = await sync_pair(crm, dav, status)
    assert len(second.writes) == 2
    assert transport.requests == [("REPORT", collection)]
    assert transport.kinds == ["sync-collection+data"]
    assert transport.multigets == []
    assert {e.title for e in crm.events().values()} == {"Contract test", "changed"}

    # no change: one request
    transport.clear()
    third = await sync_pair(crm, dav, status)
    assert third.writes == ()
    assert transport.requests == [("REPORT", collection)]
    assert transport.kinds == ["sync-collection+data"]


async def test_a_server_refusing_the_initial_sync_collection_is_listed_with_propfind(
    radicale, url
):
    class Refusing(KindsTransport):
        async def handle_async_request(self, request):
            if b"<d:sync-token></d:sync-token>" in request.content:
                self.kinds.append("refused")
                return httpx.Response(501, request=request)
            return await super().handle_async_request(request)

    refusing = Refusing()
    try:
        dav = calendar(radicale, url, refusing)
        href = await create(dav, sample("propfind"))
        refusing.clear()
        first = await dav.list()
        assert list(first.items) == [href]
        assert first.cursor is not None
        assert refusing.kinds == ["refused", "PROPFIND"]
        refusing.clear()
        assert (await dav.list()).items == first.items
        assert refusing.kinds == ["PROPFIND"]  # refused once is enough
        [item] = await dav.get_many([href])
        assert item.version == first.items[href]
        assert (await dav.list_changes(first.cursor)).changed == {}
    finally:
        await refusing.close()


# ------------------------------------------------------------------ the listing's data


async def test_the_listing_brings_the_data_get_many_needs_once(dav, transport):
    ids = [await create(dav, sample(f"kept-{n}")) for n in range(3)]
    transport.clear()
    listing = await dav.list()
    items = await dav.get_many(ids)
    assert transport.kinds == ["sync-collection+data"]
    assert {i.remote_id: i.version for i in items} == dict(listing.items)
    assert sorted(i.event.ical_uid for i in items) == ["kept-0", "kept-1", "kept-2"]
    # a second fetch asks the server: the kept data answers once
    transport.clear()
    again = await dav.get_many(ids[:2])
    assert transport.kinds == ["calendar-multiget"]
    assert transport.multigets == [2]
    assert {i.remote_id: i.version for i in again} == {
        i: listing.items[i] for i in ids[:2]
    }


async def test_writes_and_newer_listings_replace_the_kept_data(radicale, url, dav):
    renamed = await create(dav, sample("renamed"))
    behind = await create(dav, sample("behind"))
    listing = await dav.list()
    await dav.update(
        renamed,
        sample("renamed", "Renamed here"),
        if_match=listing.items[renamed],
        notify=Notify.NONE,
    )
    name = behind.rsplit("/", 1)[-1]
    etag = put_raw(radicale, url, name, to_ical(sample("behind", "Changed there")))
    newer = await dav.list()
    items = {i.event.ical_uid: i for i in await dav.get_many([renamed, behind])}
    assert items["renamed"].event.title == "Renamed here"
    assert items["renamed"].version == newer.items[renamed]
    assert items["behind"].event.title == "Changed there"
    assert items["behind"].version == etag == newer.items[behind]


async def test_answers_past_the_size_cap_are_asked_for_in_parts(
    radicale, url, dav, transport, monkeypatch
):
    ids = [await create(dav, sample(f"big-{n}")) for n in range(4)]
    stored = len(get_raw(radicale, ids[0]).encode())
    # one event's answer fits, two do not
    monkeypatch.setattr(_calendar, "MAX_REPORT_BYTES", 2 * stored + 150)
    transport.clear()
    listing = await dav.list()
    assert sorted(listing.items) == sorted(ids)
    # the data would not fit: listed again with ETags only
    assert transport.kinds == ["sync-collection+data", "sync-collection"]
    transport.clear()
    items = await dav.get_many(ids)
    assert {i.remote_id: i.version for i in items} == dict(listing.items)
    assert transport.multigets[0] == 4
    assert transport.multigets.count(1) == 4  # halved down to one event each

    monkeypatch.setattr(_calendar, "MAX_REPORT_BYTES", stored // 2)
    with pytest.raises(ProviderError):
        await dav.get_many(ids[:1])


async def test_a_change_feed_past_the_size_cap_is_asked_for_without_data(
    radicale, url, dav, transport, monkeypatch
):
    ids = [await create(dav, sample(f"feed-{n}")) for n in range(3)]
    listing = await dav.list()
    assert listing.cursor is not None
    etags = {
        href: put_raw(
            radicale,
            url,
            href.rsplit("/", 1)[-1],
            to_ical(sample(f"feed-{n}", "Changed there")),
        )
        for n, href in enumerate(ids)
    }
    stored = len(get_raw(radicale, ids[0]).encode())
    monkeypatch.setattr(_calendar, "MAX_REPORT_BYTES", 2 * stored + 150)
    transport.clear()
    changes = await dav.list_changes(listing.cursor)
    assert changes.changed == etags
    assert transport.kinds == ["sync-collection+data", "sync-collection"]
    transport.clear()
    items = await dav.get_many(ids)
    assert {i.remote_id: i.version for i in items} == etags
    assert {i.event.title for i in items} == {"Changed there"}
    assert transport.kinds[0] == "calendar-multiget"
    # the adapter asks without data from then on: no answer read twice
    transport.clear()
    assert (await dav.list_changes(changes.cursor)).changed == {}
    assert transport.kinds == ["sync-collection"]


async def test_the_change_feed_brings_the_data_of_what_changed(
    radicale, url, dav, transport
):
    kept, gone = [await create(dav, sample(f"fed-{n}")) for n in range(2)]
    listing = await dav.list()
    await dav.get_many([kept, gone])  # the listing's kept data is used up
    etag = put_raw(
        radicale, url, kept.rsplit("/", 1)[-1], to_ical(sample("fed-0", "Changed"))
    )
    assert listing.cursor is not None
    first = await dav.list_changes(listing.cursor)
    assert first.changed == {kept: etag}
    await dav.delete(gone, if_match=listing.items[gone], notify=Notify.NONE)
    assert first.cursor is not None
    second = await dav.list_changes(first.cursor)
    assert second.deleted == {gone}
    transport.clear()
    [item] = await dav.get_many([kept])
    assert (item.version, item.event.title) == (etag, "Changed")
    assert transport.kinds == []  # from the change feed's data


# ------------------------------------------------------------------ the HTTP client


async def test_one_client_serves_every_call_inside_async_with(radicale, url, clients):
    async with calendar(radicale, url) as dav:
        href = await create(dav, sample("one-client"))
        listing = await dav.list()
        [item] = await dav.get_many([href])
        version = await dav.update(
            href,
            replace(item.event, title="Renamed"),
            if_match=listing.items[href],
            notify=Notify.NONE,
        )
        assert version is not None
        await dav.delete(href, if_match=version, notify=Notify.NONE)
        assert (await dav.list()).items == {}
        assert len(clients) == 1
        assert not clients[0].is_closed
    assert clients[0].is_closed


async def test_without_async_with_each_call_closes_its_client(radicale, url, clients):
    dav = calendar(radicale, url)
    key = new_key()
    await dav.create(sample("closed"), idempotency_key=key, notify=Notify.NONE)
    assert len(clients) == 1
    # PUT (412), then GET: two requests of one call on one client
    again = await dav.create(sample("closed"), idempotency_key=key, notify=Notify.NONE)
    assert again.adopted
    assert len(clients) == 2
    await dav.list()
    assert len(clients) == 3
    assert all(client.is_closed for client in clients)


async def test_aclose_can_be_repeated_and_the_object_stays_usable(
    radicale, url, clients
):
    dav = calendar(radicale, url)
    await dav.aclose()
    async with dav:
        await dav.list()
        await dav.aclose()
        assert (await dav.list()).items == {}
    await dav.aclose()
    assert len(clients) == 2
    assert all(client.is_closed for client in clients)


# ------------------------------------------------------------------ stored time zones


async def test_the_stored_vtimezone_gives_strict_readers_every_transition(
    radicale, dav
):
    series = replace(
        sample("stored-zone"),
        recurrence=("RRULE:FREQ=YEARLY;COUNT=12",),
    )
    href = await create(dav, series)
    stored = Calendar.from_ical(get_raw(radicale, href))
    [vtimezone] = stored.timezones
    assert str(vtimezone["TZID"]) == "Europe/Berlin"
    # a reader that knows no zone names builds the zone from the component
    strict = vtimezone.to_tz(lookup_tzid=False)
    berlin = ZoneInfo("Europe/Berlin")
    for year in range(2026, 2038):
        for month in (1, 4, 7, 11):
            moment = dt.datetime(year, month, 15, 12)
            assert moment.replace(tzinfo=strict).utcoffset() == (
                moment.replace(tzinfo=berlin).utcoffset()
            ), moment
