"""``GraphCalendar`` beyond the contract: adoption of a lost create (case 21),
all-day and time-zone round trips, recurrence patterns, error translation, the
change feed (calendarView delta: Outlook-side creates, updates and deletes,
@removed for events outside the window, 410 -> ``CursorExpired``), series with
exceptions and cancelled occurrences (both directions, conditional writes,
RDATE refused), and full ``sync_pair`` runs between a ``MemoryCalendar`` and
the sandbox's Outlook calendar.

Outcomes are asserted on what the sandbox holds and on its request log.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import httpx
import pytest

from crmflow.domain.appointments import all_day_span, timed_span
from crmflow.domain.calendar import (
    Attendee,
    CalendarEvent,
    EventStatus,
    Listing,
    Notify,
    RecurrenceException,
    ResponseStatus,
)
from crmflow.domain.secret import Secret
from crmflow.providers.base import (
    AuthError,
    CursorExpired,
    PreconditionFailed,
    ProviderError,
    RateLimited,
    TransientProviderError,
    UnsupportedOperation,
)
from crmflow.providers.memory import MemoryCalendar
from crmflow.providers.microsoft import GraphCalendar
from crmflow.providers.microsoft._calendar_mapping import (
    KEY_PROPERTY,
    cancelled_originals,
    event_to_graph,
)
from crmflow.sync import sync_pair
from crmflow.sync.status import InMemoryStatusRepository
from tests.servers.sandbox import Sandbox

from .contract import ROUND_TRIP, SERIES_START, new_key, sample
from .graph_helpers import TODAY, GraphSide, fixed_clock, graph_side


@pytest.fixture
async def graph(sandbox: Sandbox) -> GraphSide:
    """A fresh sandbox user's default Outlook calendar and the adapter on it."""
    return await graph_side(sandbox)


async def raw(side: GraphSide, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A Graph call as another client (a person in Outlook) makes it."""
    async with httpx.AsyncClient() as client:
        return await client.request(
            method,
            side.graph_url + path,
            headers={"Authorization": f"Bearer {side.token.reveal()}"},
            **kwargs,
        )


async def create(calendar: GraphCalendar, event: CalendarEvent, key: str = "") -> str:
    written = await calendar.create(
        event, idempotency_key=key or new_key(), notify=Notify.NONE
    )
    return written.remote_id


# ------------------------------------------------------------------ case 21


class LoseCreateReply(httpx.AsyncBaseTransport):
    """Real HTTP; the reply to the first POST is lost after Graph processed it."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        await response.aclose()
        if request.method == "POST" and not self.lost:
            self.lost += 1
            raise httpx.ReadError("connection reset", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_lost_create_reply_is_adopted_on_retry(graph: GraphSide) -> None:
    key = new_key()
    transport = LoseCreateReply()
    calendar = graph.another(transport=transport)
    with pytest.raises(TransientProviderError):
        await calendar.create(sample(), idempotency_key=key, notify=Notify.NONE)
    assert transport.lost == 1
    listing = (await calendar.list()).items
    assert len(listing) == 1  # the event exists although the reply was lost

    again = await calendar.create(sample(), idempotency_key=key, notify=Notify.NONE)
    assert again.adopted is True
    assert {again.remote_id: again.version} == dict(listing)
    assert dict((await calendar.list()).items) == dict(listing)

    # the key is in transactionId and in the extended property
    response = await raw(
        graph,
        "GET",
        f"/me/events/{again.remote_id}",
        params={
            "$expand": f"singleValueExtendedProperties($filter=id eq '{KEY_PROPERTY}')"
        },
    )
    body = response.json()
    assert body["transactionId"] == key
    assert [p["value"] for p in body["singleValueExtendedProperties"]] == [key]

    # another key makes another event
    other = await calendar.create(
        sample(), idempotency_key=new_key(), notify=Notify.NONE
    )
    assert other.adopted is False
    assert other.remote_id != again.remote_id


# ------------------------------------------------------------------ time zones

ZONED = {
    "all-day New York": all_day_span(
        dt.date(2026, 5, 3), dt.date(2026, 5, 5), "America/New_York"
    ),
    "all-day Tokyo": all_day_span(
        dt.date(2026, 12, 31), dt.date(2027, 1, 1), "Asia/Tokyo"
    ),
    "Berlin across DST": timed_span(
        dt.datetime(2026, 3, 28, 23), dt.datetime(2026, 3, 29, 4), "Europe/Berlin"
    ),
    "New York": timed_span(
        dt.datetime(2026, 11, 1, 0, 30), dt.datetime(2026, 11, 1, 3), "America/New_York"
    ),
    "Tokyo": timed_span(
        dt.datetime(2026, 6, 1, 9), dt.datetime(2026, 6, 1, 10), "Asia/Tokyo"
    ),
}


@pytest.mark.parametrize("name", sorted(ZONED))
async def test_all_day_and_time_zones_round_trip(graph: GraphSide, name: str) -> None:
    span = ZONED[name]
    event = replace(sample(f"zoned-{name}"), span=span)
    remote_id = await create(graph.calendar, event)

    stored = (await raw(graph, "GET", f"/me/events/{remote_id}")).json()
    assert stored["isAllDay"] is span.all_day
    assert stored["originalStartTimeZone"] == span.timezone
    if span.all_day:
        assert stored["start"]["dateTime"].startswith(f"{span.start_date}T00:00:00")
        assert stored["end"]["dateTime"].startswith(f"{span.end_date}T00:00:00")

    [item] = await graph.another().get_many([remote_id])
    assert item.event.content_hash() == event.content_hash()
    assert item.event.span == span


# ------------------------------------------------------------------ recurrence

SERIES_SPAN = timed_span(
    dt.datetime(2026, 4, 6, 9), dt.datetime(2026, 4, 6, 10), "Europe/Berlin"
)
RULES = [
    "RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=6",
    "RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO;WKST=SU;UNTIL=20260601T070000Z",
    "RRULE:FREQ=DAILY;INTERVAL=3;COUNT=4",
    "RRULE:FREQ=DAILY",
    "RRULE:FREQ=MONTHLY;BYMONTHDAY=6;COUNT=3",
    "RRULE:FREQ=YEARLY;BYMONTH=4;BYMONTHDAY=6;COUNT=2",
]


@pytest.mark.parametrize("rule", RULES)
async def test_recurrence_round_trips(graph: GraphSide, rule: str) -> None:
    event = replace(sample("series"), span=SERIES_SPAN, recurrence=(rule,))
    remote_id = await create(graph.calendar, event)
    stored = (await raw(graph, "GET", f"/me/events/{remote_id}")).json()
    assert stored["type"] == "seriesMaster"
    assert dict((await graph.calendar.list()).items).keys() == {remote_id}
    [item] = await graph.calendar.get_many([remote_id])
    assert item.event.content_hash() == event.content_hash()


async def test_weekly_series_update_round_trips(graph: GraphSide) -> None:
    weekly = replace(
        sample("weekly"),
        span=SERIES_SPAN,
        recurrence=("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=6",),
    )
    remote_id = await create(graph.calendar, weekly)
    [item] = await graph.calendar.get_many([remote_id])
    changed = replace(weekly, recurrence=("RRULE:FREQ=WEEKLY;BYDAY=MO,TH;COUNT=10",))
    version = await graph.calendar.update(
        remote_id, changed, if_match=item.version, notify=Notify.NONE
    )
    [after] = await graph.calendar.get_many([remote_id])
    assert after.version == version
    assert after.event.content_hash() == changed.content_hash()
    # and back to a single event
    single = replace(changed, recurrence=())
    await graph.calendar.update(
        remote_id, single, if_match=after.version, notify=Notify.NONE
    )
    [last] = await graph.calendar.get_many([remote_id])
    assert last.event.content_hash() == single.content_hash()


@pytest.mark.parametrize(
    "lines",
    [
        ("RRULE:FREQ=MONTHLY;BYDAY=MO;BYSETPOS=1",),
        ("RRULE:FREQ=HOURLY;COUNT=3",),
        ("RDATE:20260420T070000Z",),
        ("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=6", "RDATE:20260420T070000Z"),
        ("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=6", "EXRULE:FREQ=MONTHLY"),
        ("RRULE:FREQ=DAILY;COUNT=3", "RRULE:FREQ=WEEKLY;COUNT=3"),
        ("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=6", "EXDATE:2026-04-20"),
    ],
)
def test_unmapped_recurrences_are_unsupported(lines: tuple[str, ...]) -> None:
    event = replace(sample(), span=SERIES_SPAN, recurrence=lines)

    def prepare_write() -> None:
        # what create and update check before their first request
        event_to_graph(event)
        cancelled_originals(event)

    with pytest.raises(UnsupportedOperation):
        prepare_write()


# ------------------------------------------------------------------ errors


def _answer(status: int, headers: dict[str, str] | None = None) -> GraphCalendar:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status,
            headers=headers or {},
            json={"error": {"code": "Some", "message": "no"}},
        )

    async def token() -> Any:
        from crmflow.domain.secret import Secret

        return Secret("t")

    return GraphCalendar(
        "https://graph.invalid/v1.0",
        "cal-1",
        token,
        transport=httpx.MockTransport(handler),
    )


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (401, {}, AuthError),
        (429, {"Retry-After": "2.5"}, RateLimited),
        (503, {"Retry-After": "7"}, RateLimited),
        (503, {}, TransientProviderError),
        (504, {}, TransientProviderError),
        (400, {}, ProviderError),
    ],
)
async def test_http_errors_become_provider_errors(
    status: int, headers: dict[str, str], error: type[ProviderError]
) -> None:
    calendar = _answer(status, headers)
    with pytest.raises(error) as raised:
        await calendar.list()
    if "Retry-After" in headers:
        assert isinstance(raised.value, RateLimited)
        assert raised.value.retry_after_s == float(headers["Retry-After"])
    with pytest.raises(error):
        await create(calendar, sample())


async def test_malformed_ids_are_left_out_of_get_many() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        code = "ErrorInvalidIdMalformed" if "bad" in request.url.path else "Other"
        return httpx.Response(400, json={"error": {"code": code, "message": "no"}})

    async def token() -> Any:
        from crmflow.domain.secret import Secret

        return Secret("t")

    calendar = GraphCalendar(
        "https://graph.invalid/v1.0",
        None,
        token,
        transport=httpx.MockTransport(handler),
    )
    assert await calendar.get_many(["bad-id"]) == []
    with pytest.raises(ProviderError):
        await calendar.get_many(["other"])


async def test_expired_token_is_auth_error(graph: GraphSide) -> None:
    await graph.sandbox.control(
        "microsoft", "POST", "tokens/expire", json={"email": graph.email}
    )
    with pytest.raises(AuthError):
        await graph.calendar.list()


async def test_network_errors_are_transient() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async def token() -> Any:
        from crmflow.domain.secret import Secret

        return Secret("t")

    calendar = GraphCalendar(
        "https://graph.invalid/v1.0", None, token, transport=httpx.MockTransport(refuse)
    )
    with pytest.raises(TransientProviderError):
        await calendar.list()
    with pytest.raises(TransientProviderError):
        await calendar.get_many(["x"])


async def test_listing_follows_next_links(graph: GraphSide) -> None:
    ids = {await create(graph.calendar, sample(f"page-{n}")) for n in range(5)}
    small = graph.another(page_size=2)
    assert set((await small.list()).items) == ids


# ------------------------------------------------------------------ sync_pair


async def test_sync_pair_between_memory_and_graph(graph: GraphSide) -> None:
    crm = MemoryCalendar()
    status = InMemoryStatusRepository()
    calendar = graph.calendar
    crm_only = replace(
        sample("from-crm", "From the CRM"),
        attendees=(Attendee("ann@example.com", "Ann", ResponseStatus.ACCEPTED),),
    )
    crm_id = crm.put(crm_only)
    crm.put(ROUND_TRIP["all-day"])
    graph_id = await create(calendar, sample("from-graph", "From Outlook"))

    async def sync() -> int:
        result = await sync_pair(crm, calendar, status)
        assert result.errors == ()
        return len(result.writes)

    def titles_in_crm() -> dict[str, str]:
        return {uid: e.title for uid, e in crm.events().items()}

    async def graph_events() -> dict[str, CalendarEvent]:
        fresh = graph.another()
        items = await fresh.get_many(list((await fresh.list()).items))
        return {i.event.ical_uid: i.event for i in items}

    # creates flow both ways
    assert await sync() == 3
    assert sorted(titles_in_crm()) == ["contract-all-day", "from-crm", "from-graph"]
    in_graph = await graph_events()
    assert sorted(in_graph) == ["contract-all-day", "from-crm", "from-graph"]
    assert in_graph["from-crm"].content_hash() == crm_only.content_hash()
    assert await sync() == 0

    # updates both ways: in the CRM, and by a person in Outlook
    crm.edit(crm_id, replace(crm_only, title="Renamed in the CRM"))
    response = await raw(
        graph, "PATCH", f"/me/events/{graph_id}", json={"subject": "Renamed in Outlook"}
    )
    assert response.status_code == 200
    assert await sync() == 2
    assert titles_in_crm()["from-graph"] == "Renamed in Outlook"
    assert (await graph_events())["from-crm"].title == "Renamed in the CRM"
    assert await sync() == 0

    # deletes both ways
    crm.remove(crm.id_of("contract-all-day"))
    assert (await raw(graph, "DELETE", f"/me/events/{graph_id}")).status_code == 204
    assert await sync() == 2
    assert sorted(titles_in_crm()) == ["from-crm"]
    assert sorted(await graph_events()) == ["from-crm"]

    # nothing left to do
    assert await sync() == 0


# ------------------------------------------------------------------ helpers


async def outlook(
    side: GraphSide, method: str, path: str = "", body: dict[str, Any] | None = None
) -> httpx.Response:
    """An edit "in Outlook" (the sandbox's out-of-band control API)."""
    return await side.sandbox.control(
        "microsoft", method, f"users/{side.email}/events{path}", json=body
    )


def outlook_event(
    subject: str, day: int, zone: str = "Europe/Berlin"
) -> dict[str, Any]:
    """A Graph body for an April 2026 event, 09:00-10:00 in ``zone``."""
    return {
        "subject": subject,
        "start": {"dateTime": f"2026-04-{day:02d}T09:00:00", "timeZone": zone},
        "end": {"dateTime": f"2026-04-{day:02d}T10:00:00", "timeZone": zone},
    }


async def instances_of(side: GraphSide, remote_id: str) -> list[dict[str, Any]]:
    """The occurrences and exceptions the sandbox holds for a series (April-May)."""
    response = await raw(
        side,
        "GET",
        f"/me/events/{remote_id}/instances",
        params={
            "startDateTime": "2026-04-01T00:00:00Z",
            "endDateTime": "2026-06-01T00:00:00Z",
            "$top": "100",
        },
    )
    assert response.status_code == 200, response.text
    return list(response.json()["value"])


async def cancelled_dates(side: GraphSide, remote_id: str) -> list[str]:
    """The dates of the master's ``cancelledOccurrences``."""
    response = await raw(
        side,
        "GET",
        f"/me/events/{remote_id}",
        params={"$select": "cancelledOccurrences"},
    )
    return sorted(v.rsplit(".", 1)[1] for v in response.json()["cancelledOccurrences"])


class Recorder(httpx.AsyncBaseTransport):
    """Real HTTP; records each request's method, path and ``If-Match``."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: list[tuple[str, str, str | None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(
            (request.method, request.url.path, request.headers.get("If-Match"))
        )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def writes(self) -> list[tuple[str, str, str | None]]:
        return [w for w in self.seen if w[0] in ("POST", "PATCH", "DELETE")]


class AfterDeltaRound(httpx.AsyncBaseTransport):
    """Real HTTP; runs ``action`` once, right after a delta round's last page."""

    def __init__(self, action: Any) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.action = action

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.action is not None and request.url.path.endswith("/calendarView/delta"):
            await response.aread()
            if "@odata.deltaLink" in response.json():
                action, self.action = self.action, None
                await action()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def cursor_of(listing: Listing) -> str:
    """The cursor of an incremental side's listing."""
    assert listing.cursor is not None
    return listing.cursor


async def _token() -> Secret:
    return Secret("t")


FAKE_ROOT = "https://graph.invalid/v1.0"
FAKE_DELTA = FAKE_ROOT + "/me/calendar/calendarView/delta"


def delta_page(items: list[dict[str, Any]], token: int) -> dict[str, Any]:
    return {"value": items, "@odata.deltaLink": f"{FAKE_DELTA}?$deltatoken={token}"}


class FakeGraph:
    """A scripted Graph for answers the sandbox cannot be made to give."""

    def __init__(self) -> None:
        #: (status, body) of the next delta requests, in order
        self.delta: list[tuple[int, dict[str, Any]]] = []
        #: what ``/me/calendar/events`` lists
        self.events: list[dict[str, Any]] = []
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/calendarView/delta"):
            status, body = self.delta.pop(0)
            return httpx.Response(status, json=body)
        if request.url.path.endswith("/me/calendar/events"):
            return httpx.Response(200, json={"value": self.events})
        return httpx.Response(
            404, json={"error": {"code": "ErrorItemNotFound", "message": "gone"}}
        )

    def calendar(self) -> GraphCalendar:
        return GraphCalendar(
            FAKE_ROOT,
            None,
            _token,
            transport=httpx.MockTransport(self.handler),
            clock=fixed_clock(),
        )


# ------------------------------------------------------------------ change feed


async def test_change_feed_sees_outlook_creates_updates_and_deletes(
    graph: GraphSide,
) -> None:
    calendar = graph.another(page_size=2)  # delta rounds of more than one page
    kept = await create(calendar, sample("kept"))
    renamed = await create(calendar, sample("renamed"))
    removed = await create(calendar, sample("removed"))
    listing = await calendar.list()
    assert listing.cursor is not None

    added = (await outlook(graph, "POST", body=outlook_event("Added", 9))).json()["id"]
    await outlook(graph, "PATCH", f"/{renamed}", {"subject": "Renamed in Outlook"})
    await outlook(graph, "DELETE", f"/{removed}")

    changes = await calendar.list_changes(cursor_of(listing))
    fetched = {i.remote_id: i for i in await calendar.get_many([added, renamed])}
    assert dict(changes.changed) == {
        added: fetched[added].version,
        renamed: fetched[renamed].version,
    }
    assert removed in changes.deleted
    assert kept not in changes.deleted
    assert fetched[renamed].event.title == "Renamed in Outlook"
    assert fetched[added].event.title == "Added"

    # the rounds followed nextLinks ($skiptoken) to the deltaLink ($deltatoken)
    delta = await graph.sandbox.requests("graph.calendarView.delta")
    queries = [dict(r["query"]) for r in delta]
    assert any("$skiptoken" in q for q in queries)
    assert any("$deltatoken" in q for q in queries)
    later = await calendar.list_changes(changes.cursor)
    assert (dict(later.changed), later.deleted) == ({}, frozenset())


async def test_listing_takes_its_cursor_before_it_lists(graph: GraphSide) -> None:
    """A change between the delta round and the ``/events`` listing is in both."""
    rid = await create(graph.calendar, sample())

    async def rename() -> None:
        await outlook(graph, "PATCH", f"/{rid}", {"subject": "Meanwhile"})

    calendar = graph.another(transport=AfterDeltaRound(rename))
    listing = await calendar.list()
    [item] = await calendar.get_many([rid])
    assert item.event.title == "Meanwhile"
    assert listing.items[rid] == item.version
    changes = await calendar.list_changes(cursor_of(listing))
    assert dict(changes.changed) == {rid: item.version}


async def test_changes_outside_the_window_are_changes_not_deletions(
    graph: GraphSide,
) -> None:
    far_span = timed_span(
        dt.datetime(2029, 6, 1, 9), dt.datetime(2029, 6, 1, 10), "Europe/Berlin"
    )
    rid = await create(graph.calendar, replace(sample("far"), span=far_span))
    listing = await graph.calendar.list()
    assert rid in listing.items  # /events lists it; the feed's window ends in 2028

    await outlook(graph, "PATCH", f"/{rid}", {"subject": "Far, renamed"})
    before = len(await graph.sandbox.requests("graph.events.list"))
    changes = await graph.calendar.list_changes(cursor_of(listing))
    [item] = await graph.calendar.get_many([rid])
    assert dict(changes.changed) == {rid: item.version}
    assert rid not in changes.deleted
    # Graph reported it under @removed; /events was asked before believing that
    assert len(await graph.sandbox.requests("graph.events.list")) == before + 1

    await outlook(graph, "DELETE", f"/{rid}")
    later = await graph.calendar.list_changes(changes.cursor)
    assert (dict(later.changed), later.deleted) == ({}, frozenset({rid}))


async def test_expired_delta_token_is_cursor_expired(graph: GraphSide) -> None:
    listing = await graph.calendar.list()
    await graph.expire_cursors()
    with pytest.raises(CursorExpired):
        await graph.calendar.list_changes(cursor_of(listing))
    fresh = await graph.calendar.list()  # a full listing starts a new round
    assert dict((await graph.calendar.list_changes(cursor_of(fresh))).changed) == {}
    delta = await graph.sandbox.requests("graph.calendarView.delta")
    assert [r["status"] for r in delta] == [200, 410, 200, 200]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (410, "SyncStateNotFound"),
        (410, None),
        (400, "resyncRequired"),
        (404, "syncStateNotFound"),
        (403, "SYNCSTATENOTFOUND"),
    ],
)
async def test_forgotten_delta_tokens_are_cursor_expired(
    status: int, code: str | None
) -> None:
    fake = FakeGraph()
    fake.delta.append((200, delta_page([], 1)))
    calendar = fake.calendar()
    listing = await calendar.list()
    fake.delta.append(
        (status, {"error": {"code": code, "message": "no"}} if code else {})
    )
    with pytest.raises(CursorExpired):
        await calendar.list_changes(cursor_of(listing))


async def test_foreign_or_unreadable_cursors_are_expired_without_a_request() -> None:
    fake = FakeGraph()
    fake.delta.append((200, delta_page([], 1)))
    calendar = fake.calendar()
    cursor = cursor_of(await calendar.list())
    sent = len(fake.requests)
    # the bearer token would go wherever the stored link points
    foreign = cursor.replace("graph.invalid", "elsewhere.example")
    for bad in (foreign, "not-a-cursor", "{}", "[]"):
        with pytest.raises(CursorExpired):
            await calendar.list_changes(bad)
    assert len(fake.requests) == sent


async def test_a_cursor_whose_window_fell_behind_is_expired(graph: GraphSide) -> None:
    listing = await graph.calendar.list()
    six_days_on = graph.another(clock=fixed_clock(TODAY + dt.timedelta(days=6)))
    assert dict((await six_days_on.list_changes(cursor_of(listing))).changed) == {}
    eight_days_on = graph.another(clock=fixed_clock(TODAY + dt.timedelta(days=8)))
    with pytest.raises(CursorExpired):
        await eight_days_on.list_changes(cursor_of(listing))


async def test_a_deleted_series_is_found_when_graph_names_only_its_occurrences() -> (
    None
):
    fake = FakeGraph()
    master = {"id": "master-1", "type": "seriesMaster", "@odata.etag": 'W/"m1"'}
    single = {"id": "single-1", "type": "singleInstance", "@odata.etag": 'W/"s1"'}
    occurrence = {
        "id": "occ-1",
        "type": "occurrence",
        "seriesMasterId": "master-1",
        "@odata.etag": 'W/"m1"',
    }
    fake.delta.append((200, delta_page([occurrence, single], 1)))
    fake.events = [master, single]
    calendar = fake.calendar()
    listing = await calendar.list()
    assert set(listing.items) == {"master-1", "single-1"}

    fake.delta.append(
        (200, delta_page([{"id": "occ-1", "@removed": {"reason": "deleted"}}], 2))
    )
    fake.events = [single]
    changes = await calendar.list_changes(cursor_of(listing))
    assert "master-1" in changes.deleted
    assert "single-1" not in changes.deleted
    assert dict(changes.changed) == {}


async def test_windows_zone_names_read_as_iana(graph: GraphSide) -> None:
    body = outlook_event("Made in Outlook", 8, zone="W. Europe Standard Time")
    rid = (await outlook(graph, "POST", body=body)).json()["id"]
    [item] = await graph.calendar.get_many([rid])
    assert item.event.span == timed_span(
        dt.datetime(2026, 4, 8, 9), dt.datetime(2026, 4, 8, 10), "Europe/Berlin"
    )


# ------------------------------------------------------------------ series

#: weekly on Mondays 09:00 Berlin from 6 April, six times; 20 April is an
#: EXDATE, 13 April moved to 14 April ("Moved"), 27 April cancelled
SERIES = ROUND_TRIP["series"]
WEEK = dt.timedelta(days=7)
WEEKLY = replace(
    sample("weekly"),
    span=SERIES_SPAN,
    recurrence=("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=6",),
)


def _shape(instances: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(i["type"], i["originalStart"][:10], i["subject"]) for i in instances]


async def test_series_exceptions_and_cancellations_are_written_to_the_instances(
    graph: GraphSide,
) -> None:
    recorder = Recorder()
    rid = await create(graph.another(transport=recorder), SERIES)

    held = await instances_of(graph, rid)
    assert _shape(held) == [
        ("occurrence", "2026-04-06", "Contract test"),
        ("exception", "2026-04-13", "Moved"),
        ("occurrence", "2026-05-04", "Contract test"),
        ("occurrence", "2026-05-11", "Contract test"),
    ]
    assert held[1]["start"]["dateTime"].startswith("2026-04-14T07:00:00")  # UTC
    assert await cancelled_dates(graph, rid) == ["2026-04-20", "2026-04-27"]
    # the master, then one PATCH and two DELETEs of instances, each conditional
    methods = [w[0] for w in recorder.writes]
    assert methods == ["POST", "PATCH", "DELETE", "DELETE"]
    assert all(w[2] for w in recorder.writes[1:])

    [item] = await graph.another().get_many([rid])
    assert item.event == SERIES
    assert dict((await graph.calendar.list()).items) == {rid: item.version}


@pytest.mark.parametrize(
    "exdate",
    [
        "EXDATE;TZID=Europe/Berlin:20260420T090000",
        "EXDATE:20260420T070000Z,20260504T070000Z",
        "EXDATE;VALUE=DATE:20260420",
    ],
)
async def test_exdate_forms_round_trip(graph: GraphSide, exdate: str) -> None:
    event = replace(WEEKLY, recurrence=(*WEEKLY.recurrence, exdate))
    rid = await create(graph.calendar, event)
    [item] = await graph.another().get_many([rid])
    assert item.event == event
    assert "2026-04-20" in await cancelled_dates(graph, rid)


async def test_all_day_series_cancellations_round_trip(graph: GraphSide) -> None:
    # Berlin midnight is the previous day in UTC: the occurrence ids' dates
    # must not shift the cancellations by a day
    week = CalendarEvent(
        "holiday-week",
        "Holiday week",
        all_day_span(dt.date(2026, 5, 4), dt.date(2026, 5, 5), "Europe/Berlin"),
        recurrence=("RRULE:FREQ=DAILY;COUNT=5", "EXDATE;VALUE=DATE:20260506"),
        exceptions=(
            RecurrenceException(dt.date(2026, 5, 5), title="Half day"),
            RecurrenceException(dt.date(2026, 5, 7), EventStatus.CANCELLED),
        ),
    )
    rid = await create(graph.calendar, week)
    [item] = await graph.another().get_many([rid])
    assert item.event == week


async def test_series_across_a_dst_change_round_trips(graph: GraphSide) -> None:
    # Berlin moves to summer time on 29 March: 09:00 is 08:00 UTC before, 07:00 after
    march = CalendarEvent(
        "dst-series",
        "Across DST",
        timed_span(
            dt.datetime(2026, 3, 16, 9), dt.datetime(2026, 3, 16, 10), "Europe/Berlin"
        ),
        recurrence=("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=5", "EXDATE:20260406T070000Z"),
        exceptions=(
            RecurrenceException(
                dt.datetime(2026, 3, 23, 8, tzinfo=dt.UTC), EventStatus.CANCELLED
            ),
            RecurrenceException(
                dt.datetime(2026, 3, 30, 7, tzinfo=dt.UTC), title="First in summer"
            ),
        ),
    )
    rid = await create(graph.calendar, march)
    [item] = await graph.another().get_many([rid])
    assert item.event == march
    assert await cancelled_dates(graph, rid) == ["2026-03-23", "2026-04-06"]


async def test_outlook_edits_of_occurrences_reach_the_change_feed(
    graph: GraphSide,
) -> None:
    rid = await create(graph.calendar, WEEKLY)
    listing = await graph.calendar.list()
    held = await instances_of(graph, rid)

    # a person retitles one occurrence: the master's change key stays
    await outlook(graph, "PATCH", f"/{held[1]['id']}", {"subject": "Only this week"})
    changes = await graph.calendar.list_changes(cursor_of(listing))
    [item] = await graph.calendar.get_many([rid])
    assert dict(changes.changed) == {rid: item.version}
    assert item.version != listing.items[rid]
    assert item.event.exceptions == (
        RecurrenceException(SERIES_START + WEEK, title="Only this week"),
    )

    # and deletes another one
    await outlook(graph, "DELETE", f"/{held[3]['id']}")
    later = await graph.calendar.list_changes(changes.cursor)
    [after] = await graph.calendar.get_many([rid])
    assert dict(later.changed) == {rid: after.version}
    assert after.event.exception_at(SERIES_START + 3 * WEEK) == RecurrenceException(
        SERIES_START + 3 * WEEK, EventStatus.CANCELLED
    )


async def test_series_update_with_the_same_timing_keeps_the_exceptions(
    graph: GraphSide,
) -> None:
    rid = await create(graph.calendar, SERIES)
    [item] = await graph.calendar.get_many([rid])
    recorder = Recorder()
    renamed = replace(SERIES, title="Renamed series")
    version = await graph.another(transport=recorder).update(
        rid, renamed, if_match=item.version, notify=Notify.NONE
    )
    # one PATCH of the master, conditional on its etag; no instance touched,
    # because Outlook kept the exceptions
    assert recorder.writes == [
        ("PATCH", recorder.writes[0][1], item.version.split("|")[0])
    ]
    assert recorder.writes[0][1].endswith(rid)
    [after] = await graph.calendar.get_many([rid])
    assert (after.version, after.event) == (version, renamed)


async def test_series_update_changes_adds_reverts_and_restores(
    graph: GraphSide,
) -> None:
    rid = await create(graph.calendar, SERIES)
    [item] = await graph.calendar.get_many([rid])
    # the 20 April EXDATE and the 27 April cancellation go (Graph cannot
    # restore an occurrence: the series is rebuilt), 13 April stays moved but
    # is retitled, 11 May is cancelled
    changed = replace(
        SERIES,
        recurrence=SERIES.recurrence[:1],
        exceptions=(
            replace(SERIES.exceptions[0], title="Moved again"),
            RecurrenceException(SERIES_START + 5 * WEEK, EventStatus.CANCELLED),
        ),
    )
    version = await graph.calendar.update(
        rid, changed, if_match=item.version, notify=Notify.NONE
    )
    [after] = await graph.calendar.get_many([rid])
    assert (after.version, after.event) == (version, changed)
    assert _shape(await instances_of(graph, rid)) == [
        ("occurrence", "2026-04-06", "Contract test"),
        ("exception", "2026-04-13", "Moved again"),
        ("occurrence", "2026-04-20", "Contract test"),
        ("occurrence", "2026-04-27", "Contract test"),
        ("occurrence", "2026-05-04", "Contract test"),
    ]

    # dropping the override puts the occurrence back at its rule time, without
    # rebuilding the series
    reverted = replace(changed, exceptions=changed.exceptions[1:])
    await graph.calendar.update(
        rid, reverted, if_match=after.version, notify=Notify.NONE
    )
    [last] = await graph.calendar.get_many([rid])
    assert last.event == reverted
    assert await cancelled_dates(graph, rid) == ["2026-05-11"]


async def test_series_writes_with_a_stale_version_change_nothing(
    graph: GraphSide,
) -> None:
    rid = await create(graph.calendar, WEEKLY)
    [item] = await graph.calendar.get_many([rid])
    held = await instances_of(graph, rid)
    # an edit in Outlook that leaves the master's change key as it was
    await outlook(graph, "PATCH", f"/{held[2]['id']}", {"subject": "Outlook"})

    with pytest.raises(PreconditionFailed):
        await graph.calendar.update(
            rid, replace(WEEKLY, title="CRM"), if_match=item.version, notify=Notify.NONE
        )
    with pytest.raises(PreconditionFailed):
        await graph.calendar.delete(rid, if_match=item.version, notify=Notify.NONE)
    sent = await graph.sandbox.requests()
    assert [r["method"] for r in sent if r["method"] != "GET"] == ["POST"]
    [after] = await graph.calendar.get_many([rid])
    assert after.event.title == WEEKLY.title
    assert [e.title for e in after.event.exceptions] == ["Outlook"]

    # with the current version, the delete goes through
    await graph.calendar.delete(rid, if_match=after.version, notify=Notify.NONE)
    assert await graph.calendar.get_many([rid]) == []


async def test_rdate_is_refused_before_anything_is_written(graph: GraphSide) -> None:
    with_rdate = replace(
        SERIES, recurrence=(*SERIES.recurrence, "RDATE:20260422T070000Z")
    )
    with pytest.raises(UnsupportedOperation, match="RDATE"):
        await create(graph.calendar, with_rdate)
    assert await graph.sandbox.requests() == []

    rid = await create(graph.calendar, SERIES)
    [item] = await graph.calendar.get_many([rid])
    with pytest.raises(UnsupportedOperation, match="RDATE"):
        await graph.calendar.update(
            rid, with_rdate, if_match=item.version, notify=Notify.NONE
        )
    sent = await graph.sandbox.requests()
    assert [r["method"] for r in sent if r["method"] == "PATCH"] == [
        "PATCH"  # the one exception written by the create
    ]
    [after] = await graph.calendar.get_many([rid])
    assert after.event == SERIES


async def test_an_interrupted_series_create_is_completed_on_retry(
    graph: GraphSide,
) -> None:
    key = new_key()
    transport = LoseCreateReply()  # the POST's reply is lost: no exceptions yet
    with pytest.raises(TransientProviderError):
        await graph.another(transport=transport).create(
            SERIES, idempotency_key=key, notify=Notify.NONE
        )
    again = await graph.calendar.create(SERIES, idempotency_key=key, notify=Notify.NONE)
    assert again.adopted is True
    [item] = await graph.calendar.get_many([again.remote_id])
    assert (item.version, item.event) == (again.version, SERIES)


async def test_sync_pair_carries_series_exceptions_both_ways(graph: GraphSide) -> None:
    crm = MemoryCalendar()
    status = InMemoryStatusRepository()
    crm_id = crm.put(SERIES)

    async def sync() -> int:
        result = await sync_pair(crm, graph.calendar, status)
        assert result.errors == ()
        return len(result.writes)

    assert await sync() == 1
    [rid] = (await graph.calendar.list()).items
    [item] = await graph.calendar.get_many([rid])
    assert item.event == SERIES
    assert await sync() == 0

    # in Outlook: the last occurrence is deleted
    held = await instances_of(graph, rid)
    await outlook(graph, "DELETE", f"/{held[-1]['id']}")
    assert await sync() == 1
    last = SERIES_START + 5 * WEEK
    in_crm = crm.events()[SERIES.ical_uid]
    assert in_crm.exception_at(last) == RecurrenceException(last, EventStatus.CANCELLED)
    assert await sync() == 0

    # in the CRM: the moved occurrence gets its own title and place
    moved = replace(in_crm.exceptions[0], location="Room 2")
    crm.edit(crm_id, replace(in_crm, exceptions=(moved, *in_crm.exceptions[1:])))
    assert await sync() == 1
    [item] = await graph.calendar.get_many([rid])
    assert item.event.exception_at(SERIES_START + WEEK) == moved
    assert await sync() == 0


# ------------------------------------------------------------------ $batch


async def test_get_many_reads_in_two_batches(graph: GraphSide) -> None:
    ids = [await create(graph.calendar, sample(f"batch-{n}")) for n in range(3)]
    ids.append(await create(graph.calendar, SERIES))
    ids.append(await create(graph.calendar, WEEKLY))
    wanted = [*ids, "no-such-item"]
    assert len(wanted) <= graph.calendar.get_many_limit

    before = await graph.sandbox.requests()
    items = await graph.calendar.get_many(wanted)
    sent = (await graph.sandbox.requests())[len(before) :]
    # the masters in one batch, the two series' instances in another
    assert [r["apiMethod"] for r in sent] == ["graph.batch", "graph.batch"]

    one_by_one = [(await graph.calendar.get_many([rid]))[0] for rid in ids]
    assert sorted(items, key=lambda i: i.remote_id) == sorted(
        one_by_one, key=lambda i: i.remote_id
    )


async def test_a_throttled_batch_item_is_rate_limited(graph: GraphSide) -> None:
    ids = [await create(graph.calendar, sample(f"batch-{n}")) for n in range(2)]
    await graph.sandbox.add_fault(
        "microsoft",
        kind="graph_throttled",
        method="graph.events.get",
        count=1,
        retry_after_s=2.5,
    )
    with pytest.raises(RateLimited) as raised:
        await graph.calendar.get_many(ids)
    assert raised.value.retry_after_s == 2.5
    assert len(await graph.calendar.get_many(ids)) == 2
