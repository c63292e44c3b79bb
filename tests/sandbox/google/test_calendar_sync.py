"""events.list: paging, sync tokens, 410, filters, time windows (checklist 1-7)."""

from __future__ import annotations

import pytest

from crmflow.sandbox.google.calendars import Calendars
from crmflow.sandbox.google.store import GoogleStore
from tests.sandbox.conftest import GoogleSandbox

ADA = "ada@example.com"
EVENTS = "calendar/v3/calendars/primary/events"


def _event(i: int, **extra):
    body = {
        "id": f"ev{i:06d}",
        "summary": f"Event {i}",
        "start": {"dateTime": f"2024-05-{1 + i % 28:02d}T09:00:00Z"},
        "end": {"dateTime": f"2024-05-{1 + i % 28:02d}T10:00:00Z"},
    }
    body.update(extra)
    return body


def _seed(google: GoogleSandbox, count: int) -> None:
    """Insert ``count`` events directly through the store (fast, no HTTP)."""
    state = google.state
    state.add_user(ADA)
    with state.lock:
        store = state.extension(GoogleStore)
        cal = store.calendars.ensure_primary(ADA)
        for i in range(count):
            store.calendars.insert(cal, _event(i), now_ms=state.clock.now_ms())


def _page_all(api, **params):
    pages = []
    token = None
    while True:
        query = dict(params)
        if token:
            query["pageToken"] = token
        body = api.get(EVENTS, params=query).json()
        pages.append(body)
        token = body.get("nextPageToken")
        if token is None:
            return pages


def test_default_page_size_250_and_sync_token_only_on_last_page(google: GoogleSandbox):
    _seed(google, 600)
    api = google.api(google.access(ADA))
    pages = _page_all(api)
    assert [len(p["items"]) for p in pages] == [250, 250, 100]
    for page in pages[:-1]:
        assert "nextPageToken" in page
        assert "nextSyncToken" not in page
    assert "nextSyncToken" in pages[-1]
    assert "nextPageToken" not in pages[-1]
    ids = [e["id"] for p in pages for e in p["items"]]
    assert len(ids) == len(set(ids)) == 600


def test_max_results_is_capped_at_2500(google: GoogleSandbox):
    _seed(google, 2600)
    api = google.api(google.access(ADA))
    body = api.get(EVENTS, params={"maxResults": 5000}).json()
    assert len(body["items"]) == 2500
    assert "nextPageToken" in body
    assert api.get(EVENTS, params={"maxResults": 0}).status_code == 400


def test_incremental_sync_returns_changes_and_tombstones(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    for i in range(3):
        api.post(EVENTS, json=_event(i))
    first = api.get(EVENTS).json()
    token = first["nextSyncToken"]
    api.patch(f"{EVENTS}/ev000001", json={"summary": "changed"})
    api.delete(f"{EVENTS}/ev000002")
    api.post(EVENTS, json=_event(7))
    delta = api.get(EVENTS, params={"syncToken": token}).json()
    by_id = {e["id"]: e for e in delta["items"]}
    assert set(by_id) == {"ev000001", "ev000002", "ev000007"}
    assert by_id["ev000001"]["summary"] == "changed"
    # Incremental tombstones without showDeleted: only the id is guaranteed.
    assert by_id["ev000002"]["status"] == "cancelled"
    assert "summary" not in by_id["ev000002"]
    # Nothing changed since: an empty page with a new token.
    quiet = api.get(EVENTS, params={"syncToken": delta["nextSyncToken"]}).json()
    assert quiet["items"] == []
    assert "nextSyncToken" in quiet


def test_incremental_sync_pages_with_same_sync_token(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    token = api.get(EVENTS).json()["nextSyncToken"]
    _seed(google, 30)
    pages = _page_all(api, syncToken=token, maxResults=10)
    assert [len(p["items"]) for p in pages] == [10, 10, 10]
    assert "nextSyncToken" in pages[-1]


def test_expired_sync_token_is_410_full_sync_required(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    api.post(EVENTS, json=_event(1))
    token = api.get(EVENTS).json()["nextSyncToken"]
    assert (
        google.control("POST", f"calendars/{ADA}/expire-sync-tokens").status_code == 204
    )
    gone = api.get(EVENTS, params={"syncToken": token})
    assert gone.status_code == 410
    assert gone.json() == {
        "error": {
            "errors": [
                {
                    "domain": "calendar",
                    "reason": "fullSyncRequired",
                    "message": "Sync token is no longer valid, a full sync is required.",
                    "locationType": "parameter",
                    "location": "syncToken",
                }
            ],
            "code": 410,
            "message": "Sync token is no longer valid, a full sync is required.",
        }
    }
    # A garbled token gets the same treatment.
    assert api.get(EVENTS, params={"syncToken": "garbage"}).status_code == 410
    # A full sync yields a working token again.
    fresh = api.get(EVENTS).json()["nextSyncToken"]
    assert api.get(EVENTS, params={"syncToken": fresh}).status_code == 200


@pytest.mark.parametrize(
    "param",
    [
        ("iCalUID", "x@google.com"),
        ("orderBy", "updated"),
        ("privateExtendedProperty", "a=b"),
        ("q", "x"),
        ("sharedExtendedProperty", "a=b"),
        ("timeMin", "2024-01-01T00:00:00Z"),
        ("timeMax", "2024-01-01T00:00:00Z"),
        ("updatedMin", "2024-01-01T00:00:00Z"),
        ("showDeleted", "false"),
    ],
)
def test_sync_token_rejects_incompatible_parameters(google: GoogleSandbox, param):
    api = google.api(google.access(ADA))
    token = api.get(EVENTS).json()["nextSyncToken"]
    response = api.get(EVENTS, params={"syncToken": token, param[0]: param[1]})
    assert response.status_code == 400
    assert response.json()["error"]["errors"][0]["location"] == param[0]


def test_sync_token_allows_show_deleted_true_and_single_events(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    token = api.get(EVENTS, params={"singleEvents": "true"}).json()["nextSyncToken"]
    ok = api.get(
        EVENTS,
        params={"syncToken": token, "showDeleted": "true", "singleEvents": "true"},
    )
    assert ok.status_code == 200


def test_order_by_start_time_needs_single_events_and_gives_no_sync_token(
    google: GoogleSandbox,
):
    api = google.api(google.access(ADA))
    for i in (3, 1, 2):
        api.post(EVENTS, json=_event(i))
    bad = api.get(EVENTS, params={"orderBy": "startTime"})
    assert bad.status_code == 400
    assert (
        bad.json()["error"]["message"]
        == "The requested ordering is not available for the particular query."
    )
    ordered = api.get(
        EVENTS, params={"orderBy": "startTime", "singleEvents": "true"}
    ).json()
    assert [e["id"] for e in ordered["items"]] == ["ev000001", "ev000002", "ev000003"]
    assert "nextSyncToken" not in ordered
    assert "nextPageToken" not in ordered


def test_order_by_updated(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    for i in (1, 2, 3):
        api.post(EVENTS, json=_event(i))
    api.patch(f"{EVENTS}/ev000001", json={"summary": "latest"})
    ordered = api.get(EVENTS, params={"orderBy": "updated"}).json()
    assert [e["id"] for e in ordered["items"]] == ["ev000002", "ev000003", "ev000001"]


def test_time_min_exclusive_on_end_time_max_exclusive_on_start(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    api.post(
        EVENTS,
        json=_event(
            1,
            start={"dateTime": "2024-05-02T09:00:00Z"},
            end={"dateTime": "2024-05-02T10:00:00Z"},
        ),
    )
    # Ends exactly at timeMin: excluded ("Lower bound (exclusive) for an event's end time").
    assert (
        api.get(EVENTS, params={"timeMin": "2024-05-02T10:00:00Z"}).json()["items"]
        == []
    )
    assert (
        len(api.get(EVENTS, params={"timeMin": "2024-05-02T09:59:59Z"}).json()["items"])
        == 1
    )
    # Starts exactly at timeMax: excluded.
    assert (
        api.get(EVENTS, params={"timeMax": "2024-05-02T09:00:00Z"}).json()["items"]
        == []
    )
    assert (
        len(api.get(EVENTS, params={"timeMax": "2024-05-02T09:00:01Z"}).json()["items"])
        == 1
    )
    # Milliseconds are ignored; other offsets are fine.
    assert (
        len(
            api.get(EVENTS, params={"timeMin": "2024-05-02T11:59:59.999+02:00"}).json()[
                "items"
            ]
        )
        == 1
    )


def test_time_range_empty_and_mandatory_offset(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    empty = api.get(
        EVENTS,
        params={"timeMin": "2024-05-02T10:00:00Z", "timeMax": "2024-05-02T10:00:00Z"},
    )
    assert empty.status_code == 400
    assert empty.json()["error"]["errors"][0] == {
        "domain": "calendar",
        "reason": "timeRangeEmpty",
        "message": "The specified time range is empty.",
        "locationType": "parameter",
        "location": "timeMax",
    }
    no_offset = api.get(EVENTS, params={"timeMin": "2024-05-02T10:00:00"})
    assert no_offset.status_code == 400


def test_updated_min_includes_deleted_and_expires(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    api.post(EVENTS, json=_event(1))
    api.post(EVENTS, json=_event(2))
    google.state.clock.advance(60)
    mark = google.state.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    google.state.clock.advance(1)
    api.delete(f"{EVENTS}/ev000002")
    changed = api.get(EVENTS, params={"updatedMin": mark}).json()
    assert [(e["id"], e["status"]) for e in changed["items"]] == [
        ("ev000002", "cancelled")
    ]
    assert "nextSyncToken" not in changed
    google.control("POST", f"calendars/{ADA}/expire-sync-tokens")
    old = api.get(EVENTS, params={"updatedMin": mark})
    assert old.status_code == 410
    assert old.json()["error"]["errors"][0]["reason"] == "updatedMinTooLongAgo"


def test_short_page_fault_gives_empty_page_with_token(google: GoogleSandbox):
    _seed(google, 5)
    api = google.api(google.access(ADA))
    google.add_fault(
        kind="short_page", user=ADA, method="calendar.events.list", count=1
    )
    first = api.get(EVENTS).json()
    assert first["items"] == []
    assert "nextPageToken" in first
    assert "nextSyncToken" not in first
    second = api.get(EVENTS, params={"pageToken": first["nextPageToken"]}).json()
    assert len(second["items"]) == 5
    assert "nextSyncToken" in second


def test_q_filters_and_private_extended_property_search(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    api.post(
        EVENTS,
        json=_event(
            1,
            summary="Client call with ACME",
            extendedProperties={"private": {"crmId": "42"}},
        ),
    )
    api.post(
        EVENTS,
        json=_event(2, summary="Lunch", extendedProperties={"private": {"crmId": "7"}}),
    )
    assert [e["id"] for e in api.get(EVENTS, params={"q": "acme"}).json()["items"]] == [
        "ev000001"
    ]
    found = api.get(EVENTS, params={"privateExtendedProperty": "crmId=7"}).json()[
        "items"
    ]
    assert [e["id"] for e in found] == ["ev000002"]


def test_paging_survives_inserts_between_pages(google: GoogleSandbox):
    _seed(google, 20)
    api = google.api(google.access(ADA))
    first = api.get(EVENTS, params={"maxResults": 10}).json()
    api.post(EVENTS, json=_event(999))
    rest = _page_all(api, maxResults=10, pageToken=first["nextPageToken"])
    ids = [e["id"] for e in first["items"]] + [
        e["id"] for p in rest for e in p["items"]
    ]
    assert len(ids) == len(set(ids))
    assert {f"ev{i:06d}" for i in range(20)} <= set(ids)
    # The insert made during paging shows up in the next incremental sync.
    delta = api.get(EVENTS, params={"syncToken": rest[-1]["nextSyncToken"]}).json()
    assert "ev000999" in {e["id"] for e in delta["items"]}


def test_store_rejects_invalid_page_token(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    response = api.get(EVENTS, params={"pageToken": "not-a-token"})
    assert response.status_code == 400
    assert Calendars  # the store class is importable for direct seeding
