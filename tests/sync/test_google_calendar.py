"""``GoogleCalendar`` beyond the contract, against the sandbox over real HTTP.

Covers: ``sendUpdates=none`` on every write (case 26, read from the sandbox's
request log), adoption of a create whose reply was lost (case 21), 410 ->
``CursorExpired`` (case 22), all-day and time-zone round trips (case 25, Google
part), paging, the body cache, error translation, and a full ``sync_pair``
between a ``MemoryCalendar`` and the sandbox.
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
    Notify,
    RecurrenceException,
    ResponseStatus,
)
from crmflow.domain.secret import Secret
from crmflow.errors import ValidationFailed
from crmflow.providers.base import (
    AuthError,
    CursorExpired,
    ItemAlreadyExists,
    ItemNotFound,
    MissingScope,
    PreconditionFailed,
    ProviderError,
    RateLimited,
    TransientProviderError,
)
from crmflow.providers.google import GoogleCalendar
from crmflow.providers.google._calendar import LIST_FIELDS, event_id_for
from crmflow.providers.google._calendar_mapping import span_from_google
from crmflow.providers.memory import MemoryCalendar
from crmflow.sync import sync_pair
from crmflow.sync.status import InMemoryStatusRepository
from tests.servers.sandbox import Sandbox

from .contract import ROUND_TRIP, new_key, sample
from .google_helpers import GoogleSide, google_side

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture
async def google(sandbox: Sandbox) -> GoogleSide:
    """A fresh sandbox user's primary calendar and the adapter on it."""
    return await google_side(sandbox)


async def api_calls(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [r for r in await sandbox.requests() if r["path"].startswith("/google/")]


async def forget_requests(sandbox: Sandbox) -> None:
    await sandbox.control("google", "DELETE", "requests")


async def stored_events(side: GoogleSide) -> list[dict[str, Any]]:
    """Every stored event of the calendar (tombstones too), via the control API."""
    response = await side.sandbox.control(
        "google", "GET", f"calendars/{side.email}/events"
    )
    body = response.json()
    return list(body["items"] if isinstance(body, dict) else body)


async def create(calendar: GoogleCalendar, event: CalendarEvent, key: str = "") -> str:
    written = await calendar.create(
        event, idempotency_key=key or new_key(), notify=Notify.NONE
    )
    return written.remote_id


# ------------------------------------------------------------------ case 26


async def test_every_write_sends_send_updates_none(google: GoogleSide) -> None:
    calendar = google.calendar
    remote_id = await create(calendar, ROUND_TRIP["details"])
    series_id = await create(calendar, ROUND_TRIP["series"])
    [item] = await calendar.get_many([remote_id])
    version = await calendar.update(
        remote_id,
        replace(ROUND_TRIP["details"], title="Renamed"),
        if_match=item.version,
        notify=Notify.NONE,
    )
    assert version is not None
    await calendar.delete(remote_id, if_match=version, notify=Notify.NONE)
    [series] = await calendar.get_many([series_id])
    await calendar.delete(series_id, if_match=series.version, notify=Notify.NONE)

    writes = [
        r for r in await api_calls(google.sandbox) if r["method"] in WRITE_METHODS
    ]
    # insert, insert + 2 instance patches, update (a patch), delete, delete
    assert [r["apiMethod"] for r in writes] == [
        "calendar.events.insert",
        "calendar.events.insert",
        "calendar.events.patch",
        "calendar.events.patch",
        "calendar.events.patch",
        "calendar.events.delete",
        "calendar.events.delete",
    ]
    assert all(["sendUpdates", "none"] in r["query"] for r in writes), writes
    assert all(r["status"] < 300 for r in writes)


async def test_an_update_keeps_the_fields_crmflow_does_not_map(
    google: GoogleSide,
) -> None:
    made = await google.sandbox.control(
        "google",
        "POST",
        f"calendars/{google.email}/events",
        json={
            "iCalUID": "decorated-1@example.com",
            "summary": "Pipeline review",
            "start": {"dateTime": "2026-04-08T09:00:00Z", "timeZone": "UTC"},
            "end": {"dateTime": "2026-04-08T10:00:00Z", "timeZone": "UTC"},
            "colorId": "5",
            "transparency": "transparent",
            "visibility": "private",
            "reminders": {
                "useDefault": False,
                "overrides": [{"method": "popup", "minutes": 25}],
            },
            "extendedProperties": {
                "private": {"otherApp": "kept"},
                "shared": {"team": "sales"},
            },
        },
    )
    remote_id = made.json()["id"]
    [item] = await google.calendar.get_many([remote_id])
    renamed = replace(
        item.event,
        title="Pipeline review (moved)",
        span=all_day_span(dt.date(2026, 4, 9), None, "UTC"),
        location="Room 2",
    )

    await google.calendar.update(
        remote_id, renamed, if_match=item.version, notify=Notify.NONE
    )

    [stored] = [e for e in await stored_events(google) if e["id"] == remote_id]
    assert stored["summary"] == "Pipeline review (moved)"
    assert stored["location"] == "Room 2"
    # timed -> all-day through a patch: dateTime cleared, not merged in
    assert stored["start"] == {"date": "2026-04-09"}
    assert (stored["colorId"], stored["transparency"], stored["visibility"]) == (
        "5",
        "transparent",
        "private",
    )
    assert stored["reminders"] == {
        "useDefault": False,
        "overrides": [{"method": "popup", "minutes": 25}],
    }
    extended = stored["extendedProperties"]
    assert extended["private"]["otherApp"] == "kept"
    assert extended["shared"] == {"team": "sales"}
    [again] = await google.another().get_many([remote_id])
    assert again.event.content_hash() == renamed.content_hash()

    # and back: all-day -> timed clears date
    timed = replace(renamed, span=sample().span)
    await google.calendar.update(
        remote_id, timed, if_match=again.version, notify=Notify.NONE
    )
    [back] = await google.another().get_many([remote_id])
    assert back.event.span == timed.span


async def test_notify_all_asks_google_to_mail(google: GoogleSide) -> None:
    await google.calendar.create(sample(), idempotency_key=new_key(), notify=Notify.ALL)
    [insert] = await api_calls(google.sandbox)
    assert insert["query"] == [["sendUpdates", "all"]]


# ------------------------------------------------------------------ case 21


class LoseInsertReply(httpx.AsyncBaseTransport):
    """Real HTTP; the reply to the first events.insert is lost after Google
    processed it (the connection breaks while the body is read)."""

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


async def test_lost_create_reply_is_adopted_on_retry(google: GoogleSide) -> None:
    key = new_key()
    transport = LoseInsertReply()
    calendar = google.another(transport=transport)
    with pytest.raises(TransientProviderError):
        await calendar.create(sample(), idempotency_key=key, notify=Notify.NONE)
    assert transport.lost == 1
    # the event exists although the reply was lost
    assert [e["id"] for e in await stored_events(google)] == [event_id_for(key)]

    again = await calendar.create(sample(), idempotency_key=key, notify=Notify.NONE)
    assert (again.remote_id, again.adopted) == (event_id_for(key), True)
    assert again.version == (await calendar.list()).items[again.remote_id]
    calls = [(r["apiMethod"], r["status"]) for r in await api_calls(google.sandbox)]
    assert calls == [
        ("calendar.events.insert", 200),  # processed, reply lost
        ("calendar.events.insert", 409),
        ("calendar.events.get", 200),
        ("calendar.events.list", 200),
    ]
    assert [e["id"] for e in await stored_events(google)] == [event_id_for(key)]


async def test_uid_taken_by_another_event_is_item_already_exists(
    google: GoogleSide,
) -> None:
    await create(google.calendar, sample("taken"))
    with pytest.raises(ItemAlreadyExists):
        await create(google.calendar, sample("taken"))
    assert len((await google.calendar.list()).items) == 1


def test_event_ids_are_base32hex_from_the_key() -> None:
    key = "0123456789abcdef" * 2
    assert event_id_for(key) == "crm" + key
    with pytest.raises(ValidationFailed):
        event_id_for("NOT-HEX")


# ------------------------------------------------------------------ case 22


async def test_expired_sync_token_is_cursor_expired(google: GoogleSide) -> None:
    await create(google.calendar, sample())
    cursor = (await google.calendar.list()).cursor
    assert cursor is not None
    await google.expire_cursors()
    await forget_requests(google.sandbox)
    with pytest.raises(CursorExpired):
        await google.calendar.list_changes(cursor)
    [call] = await api_calls(google.sandbox)
    assert call["apiMethod"] == "calendar.events.list"
    assert call["status"] == 410
    assert ["syncToken", cursor] in call["query"]
    # a full listing works again and gives a fresh cursor
    listing = await google.calendar.list()
    assert len(listing.items) == 1
    assert listing.cursor not in (None, cursor)


async def test_change_feed_reports_out_of_band_deletes_and_exception_edits(
    google: GoogleSide,
) -> None:
    single = await create(google.calendar, sample("single"))
    series = await create(google.calendar, ROUND_TRIP["series"])
    listing = await google.calendar.list()
    assert listing.cursor is not None
    # a person deletes the single event and edits one occurrence in Google
    await google.sandbox.control(
        "google", "DELETE", f"calendars/{google.email}/events/{single}"
    )
    await google.sandbox.control(
        "google",
        "PATCH",
        f"calendars/{google.email}/events/{series}_20260504T070000Z",
        json={"summary": "Last one, renamed"},
    )
    changes = await google.calendar.list_changes(listing.cursor)
    assert changes.deleted == {single}
    assert set(changes.changed) == {series}
    assert changes.changed[series] != listing.items[series]
    [item] = await google.calendar.get_many([series])
    assert item.version == changes.changed[series]
    moved = item.event.exception_at(dt.datetime(2026, 5, 4, 7, tzinfo=dt.UTC))
    assert moved is not None
    assert moved.title == "Last one, renamed"


# ------------------------------------------------------------------ case 25


ZONED = {
    # all-day events east and west of UTC keep their dates, exclusive end
    "all-day Auckland": all_day_span(
        dt.date(2026, 12, 31), dt.date(2027, 1, 1), "Pacific/Auckland"
    ),
    "all-day Los Angeles": all_day_span(
        dt.date(2026, 3, 8), dt.date(2026, 3, 10), "America/Los_Angeles"
    ),
    # timed events across DST changes keep their instants and zones
    "across Berlin DST": timed_span(
        dt.datetime(2026, 3, 29, 1, 30), dt.datetime(2026, 3, 29, 4, 0), "Europe/Berlin"
    ),
    "across New York DST": timed_span(
        dt.datetime(2026, 11, 1, 0, 30),
        dt.datetime(2026, 11, 1, 3, 0),
        "America/New_York",
    ),
    "Tokyo": timed_span(
        dt.datetime(2026, 6, 1, 9), dt.datetime(2026, 6, 1, 10), "Asia/Tokyo"
    ),
}


@pytest.mark.parametrize("name", sorted(ZONED))
async def test_all_day_and_time_zones_round_trip(google: GoogleSide, name: str) -> None:
    span = ZONED[name]
    event = replace(sample(f"zoned-{name}"), span=span)
    remote_id = await create(google.calendar, event)

    [stored] = [e for e in await stored_events(google) if e["id"] == remote_id]
    if span.all_day:
        assert stored["start"] == {"date": span.start_date.isoformat()}
        assert stored["end"] == {"date": span.end_date.isoformat()}
    else:
        assert stored["start"]["timeZone"] == span.timezone
        start = dt.datetime.fromisoformat(stored["start"]["dateTime"])
        end = dt.datetime.fromisoformat(stored["end"]["dateTime"])
        assert (start, end) == (span.start_at, span.end_at)

    # a fresh adapter (no cached bodies) reads it back from Google
    [item] = await google.another().get_many([remote_id])
    assert item.event.content_hash() == event.content_hash()
    if span.all_day:
        got = item.event.span
        assert (got.start_date, got.end_date) == (span.start_date, span.end_date)
    else:
        assert item.event.span == span


async def test_series_exceptions_that_keep_the_rule_time_round_trip(
    google: GoogleSide,
) -> None:
    """An occurrence changed only in its title (Google still sends its times)."""
    series = replace(
        ROUND_TRIP["series"],
        exceptions=(
            RecurrenceException(
                dt.datetime(2026, 4, 13, 7, tzinfo=dt.UTC), title="Only renamed"
            ),
            RecurrenceException(
                dt.datetime(2026, 4, 27, 7, tzinfo=dt.UTC), EventStatus.CANCELLED
            ),
        ),
    )
    remote_id = await create(google.calendar, series)
    instances = [
        e for e in await stored_events(google) if e.get("recurringEventId") == remote_id
    ]
    assert sorted(e["id"] for e in instances) == [
        f"{remote_id}_20260413T070000Z",
        f"{remote_id}_20260427T070000Z",
    ]
    [item] = await google.another().get_many([remote_id])
    assert item.event.content_hash() == series.content_hash()
    assert item.version == (await google.calendar.list()).items[remote_id]


def test_unknown_zones_fall_back_to_utc() -> None:
    span = span_from_google(
        {"dateTime": "2026-05-01T10:00:00+02:00", "timeZone": "Custom/Zone"},
        {"dateTime": "2026-05-01T11:00:00+02:00", "timeZone": "Custom/Zone"},
        None,
    )
    assert span.timezone == "UTC"
    assert span.start_at == dt.datetime(2026, 5, 1, 8, tzinfo=dt.UTC)


# ------------------------------------------------------------------ reading


async def test_listing_pages_and_takes_the_cursor_from_the_last_page(
    google: GoogleSide,
) -> None:
    ids = {await create(google.calendar, sample(f"page-{n}")) for n in range(5)}
    await forget_requests(google.sandbox)
    listing = await google.another(page_size=2).list()
    assert set(listing.items) == ids
    calls = await api_calls(google.sandbox)
    assert [c["apiMethod"] for c in calls] == ["calendar.events.list"] * 3
    assert ["maxResults", "2"] in calls[0]["query"]
    assert not any(k == "pageToken" for k, _ in calls[0]["query"])
    assert all(any(k == "pageToken" for k, _ in c["query"]) for c in calls[1:])
    assert not any(k == "showDeleted" for c in calls for k, _ in c["query"])
    # only the parts of a page crmflow reads (a partial response)
    assert all(["fields", LIST_FIELDS] in c["query"] for c in calls)
    # the cursor works
    assert (
        dict((await google.calendar.list_changes(listing.cursor or "")).changed) == {}
    )


async def test_full_listing_asks_for_2500_and_survives_short_pages(
    google: GoogleSide,
) -> None:
    remote_id = await create(google.calendar, sample())
    await google.sandbox.add_fault(
        "google", kind="short_page", method="calendar.events.list", count=1
    )
    await forget_requests(google.sandbox)
    listing = await google.calendar.list()
    assert list(listing.items) == [remote_id]
    calls = await api_calls(google.sandbox)
    assert len(calls) == 2
    assert ["maxResults", "2500"] in calls[0]["query"]


async def test_google_only_event_types_stay_out_of_the_listing(
    google: GoogleSide,
) -> None:
    remote_id = await create(google.calendar, sample())
    await google.sandbox.control(
        "google",
        "POST",
        f"calendars/{google.email}/events",
        json={
            "summary": "Focus",
            "eventType": "focusTime",
            "start": {"dateTime": "2026-04-08T09:00:00Z"},
            "end": {"dateTime": "2026-04-08T10:00:00Z"},
        },
    )
    assert len(await stored_events(google)) == 2
    assert list((await google.calendar.list()).items) == [remote_id]


async def test_get_many_uses_listed_bodies_and_reads_the_rest(
    google: GoogleSide,
) -> None:
    ids = [await create(google.calendar, sample(f"cache-{n}")) for n in range(3)]
    fresh = google.another()
    await fresh.list()
    await forget_requests(google.sandbox)
    items = await fresh.get_many(ids)
    assert sorted(i.remote_id for i in items) == sorted(ids)
    assert await api_calls(google.sandbox) == []  # all from the listing
    # a listed body serves one read: the next one reads the event afresh
    [again] = await fresh.get_many(ids[:1])
    assert again.remote_id == ids[0]
    calls = await api_calls(google.sandbox)
    assert [c["apiMethod"] for c in calls] == ["calendar.events.get"]
    await forget_requests(google.sandbox)

    other = google.another()
    items = await other.get_many([*ids, "crm0000000000unknown"])
    assert sorted(i.remote_id for i in items) == sorted(ids)
    calls = await api_calls(google.sandbox)
    assert [c["apiMethod"] for c in calls] == ["calendar.events.get"] * 4
    assert items[0].updated_at is not None


async def test_the_listing_s_partial_response_carries_every_mapped_field(
    google: GoogleSide,
) -> None:
    ids = [await create(google.calendar, event) for event in ROUND_TRIP.values()]
    listed = google.another()
    await listed.list()
    await forget_requests(google.sandbox)
    from_listing = await listed.get_many(ids)
    assert await api_calls(google.sandbox) == []
    # each event read whole (events.get answers the full resource)
    assert from_listing == await google.another().get_many(ids)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("rate_limit_403", RateLimited),
        ("rate_limit_429", RateLimited),
        ("user_rate_limit", RateLimited),
        ("quota_exceeded", RateLimited),
        ("backend_error", TransientProviderError),
        ("unavailable", TransientProviderError),
        ("auth_error", AuthError),
    ],
)
async def test_http_errors_become_provider_errors(
    google: GoogleSide, kind: str, error: type[ProviderError]
) -> None:
    await google.sandbox.add_fault("google", kind=kind, retry_after_s=7, count=1)
    with pytest.raises(error) as raised:
        await google.calendar.list()
    if isinstance(raised.value, RateLimited):
        assert raised.value.retry_after_s == 7
    # the fault was used up: the next call succeeds
    assert (await google.calendar.list()).items == {}


async def test_missing_write_scope_is_missing_scope(sandbox: Sandbox) -> None:
    response = await sandbox.control(
        "google",
        "POST",
        "tokens",
        json={
            "email": "reader@example.com",
            "scopes": ["https://www.googleapis.com/auth/calendar.readonly"],
        },
    )
    token = response.json()["access_token"]
    side = await google_side(sandbox, "reader@example.com")
    side.token = Secret(token)
    calendar = side.another()
    with pytest.raises(MissingScope):
        await create(calendar, sample())


async def test_writes_to_unknown_or_deleted_events_are_item_not_found(
    google: GoogleSide,
) -> None:
    unknown = "crm" + "0" * 40
    with pytest.raises(ItemNotFound):
        await google.calendar.update(
            unknown, sample(), if_match='"1"', notify=Notify.NONE
        )
    with pytest.raises(ItemNotFound):
        await google.calendar.delete(unknown, if_match='"1"', notify=Notify.NONE)
    remote_id = await create(google.calendar, sample())
    [item] = await google.calendar.get_many([remote_id])
    with pytest.raises(PreconditionFailed) as stale:
        await google.calendar.delete(remote_id, if_match='"1"', notify=Notify.NONE)
    assert type(stale.value) is PreconditionFailed  # still there: not ItemNotFound
    await google.calendar.delete(remote_id, if_match=item.version, notify=Notify.NONE)
    with pytest.raises(ItemNotFound):
        await google.calendar.delete(
            remote_id, if_match=item.version, notify=Notify.NONE
        )
    statuses = [
        (c["method"], c["status"])
        for c in await api_calls(google.sandbox)
        if c["method"] in {"PATCH", "DELETE"}
    ]
    # a stale If-Match on a tombstone is 412 at Google; the adapter reads it
    assert statuses == [
        ("PATCH", 404),
        ("DELETE", 404),
        ("DELETE", 412),
        ("DELETE", 204),
        ("DELETE", 412),
    ]


async def test_network_errors_are_transient(google: GoogleSide) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    calendar = GoogleCalendar(
        "https://calendar.invalid/calendar/v3/",
        "primary",
        google.access_token,
        transport=httpx.MockTransport(refuse),
    )
    with pytest.raises(TransientProviderError):
        await calendar.list()
    with pytest.raises(TransientProviderError):
        await create(calendar, sample())


# ------------------------------------------------------------------ sync_pair


async def test_sync_pair_between_memory_and_google(google: GoogleSide) -> None:
    crm = MemoryCalendar()
    status = InMemoryStatusRepository()
    calendar = google.calendar
    crm_only = replace(
        sample("from-crm", "From the CRM"),
        attendees=(Attendee("ann@example.com", "Ann", ResponseStatus.ACCEPTED),),
    )
    crm_id = crm.put(crm_only)
    crm.put(ROUND_TRIP["all-day"])
    google_id = await create(calendar, sample("from-google", "From Google"))

    async def sync() -> int:
        result = await sync_pair(crm, calendar, status)
        assert result.errors == ()
        return len(result.writes)

    def titles_in_crm() -> dict[str, str]:
        return {uid: e.title for uid, e in crm.events().items()}

    async def google_events() -> dict[str, CalendarEvent]:
        listing = await google.another().list()
        items = await google.another().get_many(list(listing.items))
        return {i.event.ical_uid: i.event for i in items}

    # creates flow both ways
    assert await sync() == 3
    assert sorted(titles_in_crm()) == ["contract-all-day", "from-crm", "from-google"]
    on_google = await google_events()
    assert sorted(on_google) == ["contract-all-day", "from-crm", "from-google"]
    assert on_google["from-crm"].content_hash() == crm_only.content_hash()
    assert await sync() == 0

    # updates both ways: in the CRM, and by a person in Google
    crm.edit(crm_id, replace(crm_only, title="Renamed in the CRM"))
    await google.sandbox.control(
        "google",
        "PATCH",
        f"calendars/{google.email}/events/{google_id}",
        json={"summary": "Renamed in Google"},
    )
    assert await sync() == 2
    assert titles_in_crm()["from-google"] == "Renamed in Google"
    assert (await google_events())["from-crm"].title == "Renamed in the CRM"
    assert await sync() == 0

    # deletes both ways
    crm.remove(crm.id_of("contract-all-day"))
    await google.sandbox.control(
        "google", "DELETE", f"calendars/{google.email}/events/{google_id}"
    )
    assert await sync() == 2
    assert sorted(titles_in_crm()) == ["from-crm"]
    assert sorted(await google_events()) == ["from-crm"]

    # nothing left to do, and the next sync only reads Google's change feed
    await forget_requests(google.sandbox)
    assert await sync() == 0
    calls = await api_calls(google.sandbox)
    assert [c["apiMethod"] for c in calls] == ["calendar.events.list"]
    assert any(k == "syncToken" for k, _ in calls[0]["query"])
    assert all(
        ["sendUpdates", "none"] in c["query"]
        for c in calls
        if c["method"] in WRITE_METHODS
    )
