"""``GraphCalendar`` beyond the contract: adoption of a lost create (case 21),
all-day and time-zone round trips, recurrence patterns, error translation, and a
full ``sync_pair`` between a ``MemoryCalendar`` and the sandbox's Outlook calendar.
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
    Notify,
    ResponseStatus,
)
from crmflow.providers.base import (
    AuthError,
    ProviderError,
    RateLimited,
    TransientProviderError,
    UnsupportedOperation,
)
from crmflow.providers.memory import MemoryCalendar
from crmflow.providers.microsoft import GraphCalendar
from crmflow.providers.microsoft._calendar_mapping import (
    KEY_PROPERTY,
    recurrence_to_graph,
)
from crmflow.sync import sync_pair
from crmflow.sync.status import InMemoryStatusRepository
from tests.servers.sandbox import Sandbox

from .contract import ROUND_TRIP, new_key, sample
from .graph_helpers import GraphSide, graph_side


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
        ("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=6", "EXDATE:20260420T070000Z"),
        ("RRULE:FREQ=MONTHLY;BYDAY=MO;BYSETPOS=1",),
        ("RRULE:FREQ=HOURLY;COUNT=3",),
        ("RDATE:20260420T070000Z",),
    ],
)
def test_unmapped_recurrences_are_unsupported(lines: tuple[str, ...]) -> None:
    event = replace(sample(), span=SERIES_SPAN, recurrence=lines)
    with pytest.raises(UnsupportedOperation):
        recurrence_to_graph(event)


async def test_series_with_exceptions_is_refused_before_writing(
    graph: GraphSide,
) -> None:
    with pytest.raises(UnsupportedOperation):
        await create(graph.calendar, ROUND_TRIP["series"])
    assert dict((await graph.calendar.list()).items) == {}


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
