"""Event content: all-day vs timed, zones, extended properties, attendees, calendarList (14-16)."""

from __future__ import annotations

from tests.sandbox.conftest import GoogleSandbox

ADA = "ada@example.com"
EVENTS = "calendar/v3/calendars/primary/events"


def _timed(**extra):
    body = {
        "start": {"dateTime": "2024-03-04T09:00:00Z"},
        "end": {"dateTime": "2024-03-04T10:00:00Z"},
    }
    body.update(extra)
    return body


def test_all_day_keeps_dates_with_exclusive_end(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    created = api.post(
        EVENTS,
        json={
            "summary": "Offsite",
            "start": {"date": "2024-07-24"},
            "end": {"date": "2024-07-25"},
        },
    ).json()
    assert created["start"] == {"date": "2024-07-24"}
    assert created["end"] == {"date": "2024-07-25"}
    # The all-day event covers 24 July only: a window on 25 July misses it.
    miss = api.get(
        EVENTS,
        params={"timeMin": "2024-07-25T00:00:00Z", "timeMax": "2024-07-26T00:00:00Z"},
    ).json()
    assert miss["items"] == []
    hit = api.get(
        EVENTS,
        params={"timeMin": "2024-07-24T12:00:00Z", "timeMax": "2024-07-24T13:00:00Z"},
    ).json()
    assert [e["id"] for e in hit["items"]] == [created["id"]]


def test_date_and_date_time_must_not_mix(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    mixed = api.post(
        EVENTS,
        json={
            "start": {"date": "2024-07-24"},
            "end": {"dateTime": "2024-07-24T10:00:00Z"},
        },
    )
    assert mixed.status_code == 400
    both = api.post(
        EVENTS,
        json={
            "start": {"date": "2024-07-24", "dateTime": "2024-07-24T10:00:00Z"},
            "end": {"date": "2024-07-25"},
        },
    )
    assert both.status_code == 400


def test_date_time_needs_offset_or_time_zone(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    bare = api.post(
        EVENTS,
        json={
            "start": {"dateTime": "2024-03-04T09:00:00"},
            "end": {"dateTime": "2024-03-04T10:00:00"},
        },
    )
    assert bare.status_code == 400
    assert (
        bare.json()["error"]["message"]
        == "Missing time zone definition for start time."
    )
    zoned = api.post(
        EVENTS,
        json={
            "start": {
                "dateTime": "2024-03-04T09:00:00",
                "timeZone": "America/New_York",
            },
            "end": {"dateTime": "2024-03-04T10:00:00", "timeZone": "America/New_York"},
        },
    ).json()
    assert zoned["start"] == {
        "dateTime": "2024-03-04T09:00:00-05:00",
        "timeZone": "America/New_York",
    }
    bad_zone = api.post(
        EVENTS,
        json={
            "start": {"dateTime": "2024-03-04T09:00:00", "timeZone": "Mars/Olympus"},
            "end": {"dateTime": "2024-03-04T10:00:00", "timeZone": "Mars/Olympus"},
        },
    )
    assert bad_zone.status_code == 400


def test_response_time_zone_follows_calendar_and_request(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    google.control("PATCH", f"calendars/{ADA}", json={"timeZone": "Asia/Tokyo"})
    created = api.post(EVENTS, json=_timed(id="tmone0001")).json()
    assert created["start"] == {"dateTime": "2024-03-04T18:00:00+09:00"}
    listed = api.get(EVENTS, params={"timeZone": "Europe/London"}).json()
    assert listed["timeZone"] == "Europe/London"
    assert listed["items"][0]["start"] == {"dateTime": "2024-03-04T09:00:00Z"}
    got = api.get(
        f"{EVENTS}/tmone0001", params={"timeZone": "America/Los_Angeles"}
    ).json()
    assert got["start"] == {"dateTime": "2024-03-04T01:00:00-08:00"}


def test_patch_merges_nested_objects_and_null_clears_a_key(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    created = api.post(
        EVENTS,
        json={
            "summary": "Offsite",
            "start": {"date": "2024-07-24"},
            "end": {"date": "2024-07-25"},
            "reminders": {"useDefault": False, "overrides": []},
        },
    ).json()
    url = f"{EVENTS}/{created['id']}"
    # only dateTime: Google merges it into start, which then holds both
    merged = api.patch(url, json=_timed())
    assert merged.status_code == 400
    assert api.get(url).json()["start"] == {"date": "2024-07-24"}
    cleared = api.patch(
        url,
        json={
            "start": {"dateTime": "2024-07-24T09:00:00Z", "date": None},
            "end": {"dateTime": "2024-07-24T10:00:00Z", "date": None},
            "reminders": {"overrides": [{"method": "popup", "minutes": 5}]},
        },
    )
    assert cleared.status_code == 200, cleared.text
    body = cleared.json()
    assert "date" not in body["start"]
    assert body["start"]["dateTime"].startswith("2024-07-24T09:00:00")
    # the nested object's other key stays
    assert body["reminders"] == {
        "useDefault": False,
        "overrides": [{"method": "popup", "minutes": 5}],
    }


def test_extended_properties_limits_patch_null_and_put_replace(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    long_key = "k" * 45
    created = api.post(
        EVENTS,
        json=_timed(
            id="props0001",
            extendedProperties={
                "private": {"crmId": "42", "hash": "v" * 2000, long_key: "dropped"},
                "shared": {"team": "sales"},
            },
        ),
    ).json()
    private = created["extendedProperties"]["private"]
    # Keys over 44 characters are silently dropped; values cut at 1024.
    assert set(private) == {"crmId", "hash"}
    assert len(private["hash"]) == 1024
    patched = api.patch(
        f"{EVENTS}/props0001",
        json={"extendedProperties": {"private": {"hash": None, "gen": "2"}}},
    ).json()
    assert patched["extendedProperties"] == {
        "private": {"crmId": "42", "gen": "2"},
        "shared": {"team": "sales"},
    }
    replaced = api.put(
        f"{EVENTS}/props0001",
        json=_timed(extendedProperties={"private": {"only": "1"}}),
    ).json()
    assert replaced["extendedProperties"] == {"private": {"only": "1"}}
    too_many = api.patch(
        f"{EVENTS}/props0001",
        json={"extendedProperties": {"private": {f"p{i}": "x" for i in range(301)}}},
    )
    assert too_many.status_code == 400
    too_big = api.patch(
        f"{EVENTS}/props0001",
        json={
            "extendedProperties": {"private": {f"p{i}": "x" * 1000 for i in range(40)}}
        },
    )
    assert too_big.status_code == 400


def test_birthday_events_refuse_private_properties(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    response = api.post(
        EVENTS,
        json={
            "eventType": "birthday",
            "start": {"date": "2024-05-01"},
            "end": {"date": "2024-05-02"},
            "recurrence": ["RRULE:FREQ=YEARLY"],
            "extendedProperties": {"private": {"crmId": "1"}},
        },
    )
    assert response.status_code == 400
    assert (
        response.json()["error"]["message"]
        == "'birthday' event type must not have private extended properties."
    )


def test_shared_properties_only_by_organizer(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    invite = api.post(
        f"{EVENTS}/import",
        json=_timed(
            iCalUID="invite-1@partner.example",
            organizer={"email": "boss@partner.example"},
            extendedProperties={"shared": {"room": "1"}},
        ),
    ).json()
    refused = api.put(
        f"{EVENTS}/{invite['id']}",
        json=_timed(extendedProperties={"shared": {"room": "2"}}),
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["errors"][0] == {
        "domain": "calendar",
        "reason": "forbiddenForNonOrganizer",
        "message": "Shared properties can only be changed by the organizer of the event.",
    }
    # Patching other fields (shared properties untouched) works.
    ok = api.patch(
        f"{EVENTS}/{invite['id']}",
        json={"extendedProperties": {"private": {"crmId": "9"}}},
    )
    assert ok.status_code == 200


def test_attendees_get_defaults_and_self(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    created = api.post(
        EVENTS,
        json=_timed(
            attendees=[
                {"email": "Bob@Example.com"},
                {"email": ADA, "responseStatus": "accepted"},
            ]
        ),
    ).json()
    assert created["attendees"] == [
        {"email": "bob@example.com", "responseStatus": "needsAction"},
        {"email": ADA, "responseStatus": "accepted", "self": True, "organizer": True},
    ]
    limited = api.get(f"{EVENTS}/{created['id']}", params={"maxAttendees": 1}).json()
    assert limited["attendeesOmitted"] is True
    assert limited["attendees"] == [
        {"email": ADA, "responseStatus": "accepted", "self": True, "organizer": True}
    ]
    missing = api.post(EVENTS, json=_timed(attendees=[{"displayName": "No Mail"}]))
    assert missing.status_code == 400


def test_reminder_rules(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    both = api.post(
        EVENTS,
        json=_timed(
            reminders={
                "useDefault": True,
                "overrides": [{"method": "popup", "minutes": 5}],
            }
        ),
    )
    assert both.status_code == 400
    assert (
        both.json()["error"]["message"]
        == "Cannot specify both default reminders and overrides at the same time."
    )
    six = [{"method": "popup", "minutes": i} for i in range(6)]
    assert (
        api.post(
            EVENTS, json=_timed(reminders={"useDefault": False, "overrides": six})
        ).status_code
        == 400
    )


def test_sequence_rules(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    created = api.post(EVENTS, json=_timed(id="seq000001")).json()
    assert created["sequence"] == 0
    moved = api.patch(
        f"{EVENTS}/seq000001", json={"start": {"dateTime": "2024-03-04T09:30:00Z"}}
    ).json()
    assert moved["sequence"] == 1
    lower = api.patch(f"{EVENTS}/seq000001", json={"sequence": 0, "summary": "x"})
    assert lower.status_code == 400


def test_calendar_list_and_calendars_get(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    google.control(
        "POST",
        "calendars",
        json={"email": ADA, "summary": "Team", "timeZone": "Europe/Berlin"},
    )
    listed = api.get("calendar/v3/users/me/calendarList").json()
    assert listed["kind"] == "calendar#calendarList"
    assert [c["summary"] for c in listed["items"]] == [ADA, "Team"]
    primary = listed["items"][0]
    assert primary["primary"] is True
    assert primary["accessRole"] == "owner"
    assert primary["id"] == ADA
    secondary = listed["items"][1]
    assert secondary["id"].endswith("@group.calendar.google.com")
    assert "nextSyncToken" in listed
    quiet = api.get(
        "calendar/v3/users/me/calendarList",
        params={"syncToken": listed["nextSyncToken"]},
    ).json()
    assert quiet["items"] == []
    got = api.get("calendar/v3/calendars/primary").json()
    assert got["kind"] == "calendar#calendar"
    assert got["id"] == ADA
    # Events on the secondary calendar live there only.
    path = f"calendar/v3/calendars/{secondary['id']}/events"
    api.post(path, json=_timed(summary="team event"))
    assert [e["summary"] for e in api.get(path).json()["items"]] == ["team event"]
    assert api.get(EVENTS).json()["items"] == []
