"""Recurring events: expansion, instance ids, exceptions, instances (checklist 13)."""

from __future__ import annotations

from tests.sandbox.conftest import GoogleSandbox

ADA = "ada@example.com"
EVENTS = "calendar/v3/calendars/primary/events"

WEEKLY = {
    "id": "standup01",
    "summary": "Team Standup",
    "start": {"dateTime": "2024-03-04T09:00:00", "timeZone": "Europe/Zurich"},
    "end": {"dateTime": "2024-03-04T09:15:00", "timeZone": "Europe/Zurich"},
    "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=6"],
}


def _ids(body):
    return [e["id"] for e in body["items"]]


def test_single_events_expands_with_google_instance_ids_in_wall_clock(
    google: GoogleSandbox,
):
    api = google.api(google.access(ADA))
    master = api.post(EVENTS, json=WEEKLY).json()
    assert master["recurrence"] == ["RRULE:FREQ=WEEKLY;COUNT=6"]
    body = api.get(
        EVENTS, params={"singleEvents": "true", "orderBy": "startTime"}
    ).json()
    # 09:00 Zurich is 08:00Z before the DST change (31 March) and 07:00Z after.
    assert _ids(body) == [
        "standup01_20240304T080000Z",
        "standup01_20240311T080000Z",
        "standup01_20240318T080000Z",
        "standup01_20240325T080000Z",
        "standup01_20240401T070000Z",
        "standup01_20240408T070000Z",
    ]
    first, after_dst = body["items"][0], body["items"][4]
    assert first["recurringEventId"] == "standup01"
    assert first["originalStartTime"] == {
        "dateTime": "2024-03-04T09:00:00+01:00",
        "timeZone": "Europe/Zurich",
    }
    assert first["start"] == {
        "dateTime": "2024-03-04T09:00:00+01:00",
        "timeZone": "Europe/Zurich",
    }
    assert after_dst["start"] == {
        "dateTime": "2024-04-01T09:00:00+02:00",
        "timeZone": "Europe/Zurich",
    }
    assert after_dst["end"] == {
        "dateTime": "2024-04-01T09:15:00+02:00",
        "timeZone": "Europe/Zurich",
    }
    assert all(e["iCalUID"] == master["iCalUID"] for e in body["items"])
    assert all("recurrence" not in e for e in body["items"])
    # Without singleEvents only the series itself is listed.
    assert _ids(api.get(EVENTS).json()) == ["standup01"]


def test_recurring_timed_event_needs_start_time_zone(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    body = dict(
        WEEKLY,
        start={"dateTime": "2024-03-04T09:00:00+01:00"},
        end={"dateTime": "2024-03-04T09:15:00+01:00"},
    )
    response = api.post(EVENTS, json=body)
    assert response.status_code == 400
    assert (
        response.json()["error"]["message"]
        == "Missing time zone definition for start time."
    )


def test_invalid_recurrence_is_400(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    for lines in (
        ["RRULE:FREQ=SOMETIMES"],
        ["DTSTART:20240304T090000Z"],
        ["RRULE:FREQ=DAILY;COUNT=2;UNTIL=20240310T000000Z"],
    ):
        response = api.post(EVENTS, json=dict(WEEKLY, id=None, recurrence=lines))
        assert response.status_code == 400, lines
        assert response.json()["error"]["message"] == "Invalid recurrence rule."


def test_exdate_rdate_and_until(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    api.post(
        EVENTS,
        json=dict(
            WEEKLY,
            recurrence=[
                "RRULE:FREQ=WEEKLY;UNTIL=20240325T235959Z",
                "EXDATE;TZID=Europe/Zurich:20240311T090000",
                "RDATE;TZID=Europe/Zurich:20240313T090000",
            ],
        ),
    )
    body = api.get(
        EVENTS, params={"singleEvents": "true", "orderBy": "startTime"}
    ).json()
    assert _ids(body) == [
        "standup01_20240304T080000Z",
        "standup01_20240313T080000Z",
        "standup01_20240318T080000Z",
        "standup01_20240325T080000Z",
    ]


def test_moved_and_cancelled_occurrences_become_exceptions(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    api.post(EVENTS, json=WEEKLY)
    token = api.get(EVENTS, params={"singleEvents": "true"}).json()["nextSyncToken"]
    moved = api.patch(
        f"{EVENTS}/standup01_20240311T080000Z",
        json={
            "start": {"dateTime": "2024-03-12T10:00:00", "timeZone": "Europe/Zurich"},
            "end": {"dateTime": "2024-03-12T10:15:00", "timeZone": "Europe/Zurich"},
        },
    ).json()
    assert moved["id"] == "standup01_20240311T080000Z"
    assert moved["recurringEventId"] == "standup01"
    assert moved["originalStartTime"] == {
        "dateTime": "2024-03-11T09:00:00+01:00",
        "timeZone": "Europe/Zurich",
    }
    assert api.delete(f"{EVENTS}/standup01_20240318T080000Z").status_code == 204

    expanded = api.get(
        EVENTS, params={"singleEvents": "true", "orderBy": "startTime"}
    ).json()
    assert _ids(expanded) == [
        "standup01_20240304T080000Z",
        "standup01_20240311T080000Z",
        "standup01_20240325T080000Z",
        "standup01_20240401T070000Z",
        "standup01_20240408T070000Z",
    ]
    assert expanded["items"][1]["start"]["dateTime"] == "2024-03-12T10:00:00+01:00"

    # singleEvents=false: the series, the modified exception and the cancelled
    # exception ("Cancelled instances ... will still be included if
    # showDeleted and singleEvents are both False").
    series_view = api.get(EVENTS).json()
    by_id = {e["id"]: e for e in series_view["items"]}
    assert set(by_id) == {
        "standup01",
        "standup01_20240311T080000Z",
        "standup01_20240318T080000Z",
    }
    cancelled = by_id["standup01_20240318T080000Z"]
    assert cancelled["status"] == "cancelled"
    assert cancelled["recurringEventId"] == "standup01"
    assert cancelled["originalStartTime"]["dateTime"] == "2024-03-18T09:00:00+01:00"

    # Incremental sync returns both exceptions.
    delta = api.get(EVENTS, params={"syncToken": token, "singleEvents": "true"}).json()
    statuses = {e["id"]: e["status"] for e in delta["items"]}
    assert statuses == {
        "standup01_20240311T080000Z": "confirmed",
        "standup01_20240318T080000Z": "cancelled",
    }
    # "Cancelled exceptions are only guaranteed to have values for the id,
    # recurringEventId and originalStartTime fields populated" — and those three
    # must be there, in both incremental shapes (singleEvents true and false).
    plain = api.get(EVENTS, params={"syncToken": token}).json()
    for items in (delta["items"], plain["items"]):
        tombstone = next(e for e in items if e["id"] == "standup01_20240318T080000Z")
        assert tombstone == {
            "kind": "calendar#event",
            "etag": tombstone["etag"],
            "id": "standup01_20240318T080000Z",
            "status": "cancelled",
            "recurringEventId": "standup01",
            "originalStartTime": {
                "dateTime": "2024-03-18T09:00:00+01:00",
                "timeZone": "Europe/Zurich",
            },
        }

    # Deleting a cancelled occurrence again is 410.
    assert api.delete(f"{EVENTS}/standup01_20240318T080000Z").status_code == 410
    # An id that is not an occurrence is 404.
    assert api.get(f"{EVENTS}/standup01_20240305T080000Z").status_code == 404


def test_instances_endpoint_and_show_deleted(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    api.post(EVENTS, json=WEEKLY)
    api.delete(f"{EVENTS}/standup01_20240318T080000Z")
    body = api.get(f"{EVENTS}/standup01/instances").json()
    assert body["kind"] == "calendar#events"
    assert len(body["items"]) == 5
    assert "nextSyncToken" not in body
    with_deleted = api.get(
        f"{EVENTS}/standup01/instances", params={"showDeleted": "true"}
    ).json()
    assert len(with_deleted["items"]) == 6
    paged = api.get(f"{EVENTS}/standup01/instances", params={"maxResults": 2}).json()
    assert len(paged["items"]) == 2
    assert "nextPageToken" in paged
    # instances.timeMin is inclusive against the end time.
    window = api.get(
        f"{EVENTS}/standup01/instances",
        params={"timeMin": "2024-03-04T08:15:00Z", "timeMax": "2024-03-11T09:00:00Z"},
    ).json()
    assert _ids(window) == ["standup01_20240304T080000Z", "standup01_20240311T080000Z"]
    original = api.get(
        f"{EVENTS}/standup01/instances",
        params={"originalStart": "2024-03-25T09:00:00+01:00"},
    ).json()
    assert _ids(original) == ["standup01_20240325T080000Z"]


def test_all_day_series_uses_date_instance_ids(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    api.post(
        EVENTS,
        json={
            "id": "recur0001",
            "summary": "Gym",
            "start": {"date": "2024-07-24"},
            "end": {"date": "2024-07-25"},
            "recurrence": ["RRULE:FREQ=DAILY;COUNT=3"],
        },
    )
    body = api.get(
        EVENTS, params={"singleEvents": "true", "orderBy": "startTime"}
    ).json()
    assert _ids(body) == [
        "recur0001_20240724",
        "recur0001_20240725",
        "recur0001_20240726",
    ]
    assert body["items"][1]["start"] == {"date": "2024-07-25"}
    assert body["items"][1]["end"] == {"date": "2024-07-26"}
    assert body["items"][1]["originalStartTime"] == {"date": "2024-07-25"}
    got = api.get(f"{EVENTS}/recur0001_20240726").json()
    assert got["recurringEventId"] == "recur0001"


def test_time_window_limits_expansion_of_infinite_series(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    api.post(EVENTS, json=dict(WEEKLY, recurrence=["RRULE:FREQ=DAILY"]))
    body = api.get(
        EVENTS,
        params={
            "singleEvents": "true",
            "timeMin": "2025-01-01T00:00:00Z",
            "timeMax": "2025-01-04T00:00:00Z",
            "orderBy": "startTime",
        },
    ).json()
    assert _ids(body) == [
        "standup01_20250101T080000Z",
        "standup01_20250102T080000Z",
        "standup01_20250103T080000Z",
    ]
    # The series itself is listed when one of its instances overlaps the window.
    assert _ids(api.get(EVENTS, params={"timeMin": "2030-01-01T00:00:00Z"}).json()) == [
        "standup01"
    ]


def test_deleting_series_cancels_instances(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    api.post(EVENTS, json=WEEKLY)
    api.patch(f"{EVENTS}/standup01_20240311T080000Z", json={"summary": "special"})
    token = api.get(EVENTS).json()["nextSyncToken"]
    assert api.delete(f"{EVENTS}/standup01").status_code == 204
    assert api.get(EVENTS, params={"singleEvents": "true"}).json()["items"] == []
    delta = api.get(EVENTS, params={"syncToken": token}).json()
    assert {e["id"]: e["status"] for e in delta["items"]} == {
        "standup01": "cancelled",
        "standup01_20240311T080000Z": "cancelled",
    }


def test_patch_instance_with_if_match_of_series(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    api.post(EVENTS, json=WEEKLY)
    instance = api.get(f"{EVENTS}/standup01_20240304T080000Z").json()
    response = api.patch(
        f"{EVENTS}/standup01_20240304T080000Z",
        json={"summary": "x"},
        headers={"If-Match": '"1"'},
    )
    assert response.status_code == 412
    response = api.patch(
        f"{EVENTS}/standup01_20240304T080000Z",
        json={"summary": "x"},
        headers={"If-Match": instance["etag"]},
    )
    assert response.status_code == 200
    assert response.json()["summary"] == "x"
