"""Odd but well-formed input gets Google's 4xx envelope, never a 500 (review findings).

Each test pins one bug found by fuzzing the sandbox: a stored value that later
broke every listing of its calendar, arithmetic overflow at the edges of the
date range, forged page tokens, an impossible date in a Gmail query, and
non-ASCII OAuth input (in ``test_oauth.py``).
"""

from __future__ import annotations

import base64
import json

import pytest

from tests.sandbox.conftest import GoogleSandbox, raw_email

ADA = "ada@example.com"
BOB = "bob@example.com"
EVENTS = "calendar/v3/calendars/primary/events"


def _token(data: dict) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def test_years_before_1000_round_trip_and_do_not_poison_the_calendar(
    google: GoogleSandbox,
):
    # Storage used strftime("%Y"), which writes year 999 as "999": the insert
    # answered 500 *after* storing the event, and every later listing of the
    # calendar failed too.
    api = google.api(google.access(ADA))
    created = api.post(
        EVENTS,
        json={
            "id": "old000001",
            "start": {"dateTime": "0999-03-01T10:00:00-05:00"},
            "end": {"dateTime": "0999-03-01T11:00:00-05:00"},
        },
    )
    assert created.status_code == 200, created.text
    assert created.json()["start"] == {"dateTime": "0999-03-01T15:00:00Z"}
    listed = api.get(EVENTS)
    assert listed.status_code == 200
    assert [e["id"] for e in listed.json()["items"]] == ["old000001"]
    # Instance ids keep their fixed width too.
    series = api.post(
        EVENTS,
        json={
            "id": "old000002",
            "start": {"dateTime": "0500-06-01T09:00:00Z", "timeZone": "UTC"},
            "end": {"dateTime": "0500-06-01T10:00:00Z", "timeZone": "UTC"},
            "recurrence": ["RRULE:FREQ=YEARLY;COUNT=2"],
        },
    )
    assert series.status_code == 200, series.text
    instances = api.get(f"{EVENTS}/old000002/instances").json()["items"]
    assert [i["id"] for i in instances] == [
        "old000002_05000601T090000Z",
        "old000002_05010601T090000Z",
    ]
    one = api.get(f"{EVENTS}/old000002_05010601T090000Z")
    assert one.status_code == 200
    assert one.json()["start"]["dateTime"] == "0501-06-01T09:00:00Z"


@pytest.mark.parametrize(
    "start",
    [
        {"dateTime": "0001-01-01T00:00:00Z"},
        {"dateTime": "0001-01-01T00:00:00+14:00"},
        {"date": "0001-01-01"},
        {"dateTime": "9999-12-31T12:00:00Z"},
        {"date": "9999-12-31"},
    ],
)
def test_event_times_at_the_edge_of_the_range_are_400(google: GoogleSandbox, start):
    api = google.api(google.access(ADA))
    end = dict(start)
    response = api.post(EVENTS, json={"start": start, "end": end})
    assert response.status_code == 400
    assert response.json()["error"]["errors"][0] == {
        "domain": "global",
        "reason": "invalid",
        "message": "Invalid start time.",
    }
    assert api.get(EVENTS).json()["items"] == []


def test_extreme_list_bounds_do_not_overflow(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    api.post(
        EVENTS,
        json={
            "id": "series001",
            "start": {"dateTime": "2024-05-06T09:00:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2024-05-06T10:00:00", "timeZone": "Europe/Berlin"},
            "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=3"],
        },
    )
    # A series whose instances last millennia: instance ends past year 9999
    # cannot exist, so expansion stops before them.
    api.post(
        EVENTS,
        json={
            "id": "series002",
            "start": {"dateTime": "2024-01-01T09:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "9990-01-01T10:00:00", "timeZone": "UTC"},
            "recurrence": ["RRULE:FREQ=DAILY"],
        },
    )
    wide = {"timeMin": "0001-01-01T00:00:00Z", "timeMax": "9999-12-31T23:59:59Z"}
    for params in (
        wide,
        {**wide, "singleEvents": "true", "maxResults": 5},
        {"timeMax": "9999-12-29T00:00:00Z", "singleEvents": "true", "maxResults": 5},
    ):
        response = api.get(EVENTS, params=params)
        assert response.status_code == 200, (params, response.text)
        assert response.json()["items"]
    instances = api.get(f"{EVENTS}/series001/instances", params=wide)
    assert instances.status_code == 200
    assert len(instances.json()["items"]) == 3
    # An instant before year 1 once converted to UTC is a malformed value.
    before_year_one = api.get(EVENTS, params={"timeMin": "0001-01-01T00:00:00+14:00"})
    assert before_year_one.status_code == 400
    assert before_year_one.json()["error"]["errors"][0]["reason"] == "badRequest"


@pytest.mark.parametrize(
    "token",
    [
        _token({"k": [1, 2, 3], "h": 1}),
        _token({"k": [None], "h": 1}),
        _token({"k": [{"a": 1}], "h": 1}),
        _token({"k": ["a"], "h": "1"}),
        _token({"k": ["a"], "h": True}),
    ],
)
def test_forged_page_tokens_are_400(google: GoogleSandbox, token):
    api = google.api(google.access(ADA))
    api.post(
        EVENTS,
        json={
            "id": "paged0001",
            "start": {"dateTime": "2024-05-01T09:00:00Z"},
            "end": {"dateTime": "2024-05-01T10:00:00Z"},
        },
    )
    response = api.get(EVENTS, params={"pageToken": token})
    assert response.status_code == 400
    assert response.json()["error"]["errors"][0]["location"] == "pageToken"


def test_page_token_of_another_ordering_is_400(google: GoogleSandbox):
    # A client that changes orderBy between pages used to crash the sandbox
    # (comparing an (updated, id) marker with id keys).
    api = google.api(google.access(ADA))
    for i in range(3):
        api.post(
            EVENTS,
            json={
                "id": f"order{i:04d}",
                "start": {"dateTime": "2024-05-01T09:00:00Z"},
                "end": {"dateTime": "2024-05-01T10:00:00Z"},
            },
        )
    by_updated = api.get(EVENTS, params={"orderBy": "updated", "maxResults": 1}).json()
    token = by_updated["nextPageToken"]
    assert (
        api.get(EVENTS, params={"orderBy": "updated", "pageToken": token}).status_code
        == 200
    )
    mixed = api.get(EVENTS, params={"pageToken": token})
    assert mixed.status_code == 400
    assert mixed.json()["error"]["message"] == "Invalid page token value."
    by_start = api.get(
        EVENTS,
        params={"pageToken": token, "orderBy": "startTime", "singleEvents": "true"},
    )
    assert by_start.status_code == 200  # same (int, id) shape: a valid marker


def test_impossible_date_in_gmail_query_is_searched_as_text(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    api.post(
        "gmail/v1/users/me/messages/send",
        json={"raw": raw_email(To=BOB, Subject="hello", body="hi")},
    )
    for q in ("before:2024/13/45", "after:2024/02/30", "older:9999/12/31"):
        response = api.get("gmail/v1/users/me/messages", params={"q": q})
        assert response.status_code == 200, (q, response.text)


@pytest.mark.parametrize(
    "key", [["x", "y"], [None, "a"], [1.5, "a"], [True, "a"], ["a"], "notalist"]
)
def test_malformed_gmail_page_tokens_are_400(google: GoogleSandbox, key):
    api = google.api(google.access(ADA))
    token = base64.urlsafe_b64encode(json.dumps(key).encode()).decode()
    listed = api.get("gmail/v1/users/me/messages", params={"pageToken": token})
    assert listed.status_code == 400
    assert listed.json()["error"]["status"] == "INVALID_ARGUMENT"
    start = api.get("gmail/v1/users/me/profile").json()["historyId"]
    history = api.get(
        "gmail/v1/users/me/history",
        params={"startHistoryId": start, "pageToken": token},
    )
    assert history.status_code == 400
    assert history.json()["error"]["status"] == "INVALID_ARGUMENT"
