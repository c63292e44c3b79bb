"""Calendar v3 events: ids, etags, conditional requests, tombstones (checklist 8-12, 16)."""

from __future__ import annotations

import pytest
from googleapiclient.errors import HttpError

from tests.sandbox.conftest import CALENDAR_READONLY, GoogleSandbox

ADA = "ada@example.com"


def _event(**extra):
    body = {
        "summary": "Planning",
        "start": {"dateTime": "2024-03-04T09:00:00+01:00"},
        "end": {"dateTime": "2024-03-04T10:00:00+01:00"},
    }
    body.update(extra)
    return body


def _etag_number(etag: str) -> int:
    assert etag.startswith('"')
    assert etag.endswith('"')
    return int(etag[1:-1])


def test_insert_with_client_id_then_duplicate_is_409(google: GoogleSandbox):
    cal = google.calendar_client(google.access(ADA))
    created = (
        cal.events()
        .insert(calendarId="primary", body=_event(id="crm0001abcd"))
        .execute()
    )
    assert created["id"] == "crm0001abcd"
    assert created["iCalUID"] == "crm0001abcd@google.com"
    assert created["status"] == "confirmed"
    assert created["organizer"] == {"email": ADA, "self": True}
    with pytest.raises(HttpError) as info:
        cal.events().insert(
            calendarId="primary", body=_event(id="crm0001abcd")
        ).execute()
    assert info.value.status_code == 409
    assert info.value.error_details[0]["reason"] == "duplicate"
    assert info.value.reason == "The requested identifier already exists."


@pytest.mark.parametrize(
    "bad_id", ["abcd", "ABCDEF123", "abcdw12345", "abc-def-123", "x" * 1025]
)
def test_client_ids_must_be_base32hex_5_to_1024(google: GoogleSandbox, bad_id: str):
    api = google.api(google.access(ADA))
    response = api.post("calendar/v3/calendars/primary/events", json=_event(id=bad_id))
    assert response.status_code == 400
    assert response.json()["error"]["errors"][0] == {
        "domain": "global",
        "reason": "invalid",
        "message": "Invalid resource id value.",
    }


def test_generated_ids_are_base32hex(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    body = api.post("calendar/v3/calendars/primary/events", json=_event()).json()
    assert len(body["id"]) == 26
    assert set(body["id"]) <= set("0123456789abcdefghijklmnopqrstuv")
    assert body["iCalUID"] == body["id"] + "@google.com"


def test_etag_is_twice_updated_microseconds_and_changes_on_every_write(
    google: GoogleSandbox,
):
    cal = google.calendar_client(google.access(ADA))
    created = (
        cal.events().insert(calendarId="primary", body=_event(id="etag00001")).execute()
    )
    etags = {created["etag"]}
    current = created
    for i in range(5):
        current = (
            cal.events()
            .patch(calendarId="primary", eventId="etag00001", body={"summary": f"v{i}"})
            .execute()
        )
        etags.add(current["etag"])
    assert len(etags) == 6
    from datetime import datetime

    updated = datetime.fromisoformat(current["updated"].replace("Z", "+00:00"))
    assert _etag_number(current["etag"]) == 2 * round(updated.timestamp() * 1_000_000)


def test_if_match_mismatch_is_412_and_match_succeeds(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    created = api.post(
        "calendar/v3/calendars/primary/events", json=_event(id="cond00001")
    ).json()
    stale = created["etag"]
    fresh = api.patch(
        "calendar/v3/calendars/primary/events/cond00001", json={"summary": "moved"}
    ).json()
    for method in ("PATCH", "PUT", "DELETE"):
        response = api.request(
            method,
            "calendar/v3/calendars/primary/events/cond00001",
            json=None if method == "DELETE" else _event(summary="x"),
            headers={"If-Match": stale},
        )
        assert response.status_code == 412
        assert response.json() == {
            "error": {
                "errors": [
                    {
                        "domain": "global",
                        "reason": "conditionNotMet",
                        "message": "Precondition Failed",
                        "locationType": "header",
                        "location": "If-Match",
                    }
                ],
                "code": 412,
                "message": "Precondition Failed",
            }
        }
    ok = api.patch(
        "calendar/v3/calendars/primary/events/cond00001",
        json={"summary": "again"},
        headers={"If-Match": fresh["etag"]},
    )
    assert ok.status_code == 200
    assert ok.json()["summary"] == "again"


def test_if_none_match_on_get_is_304_until_changed(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    created = api.post(
        "calendar/v3/calendars/primary/events", json=_event(id="cache0001")
    ).json()
    same = api.get(
        "calendar/v3/calendars/primary/events/cache0001",
        headers={"If-None-Match": created["etag"]},
    )
    assert same.status_code == 304
    assert same.content == b""
    api.patch(
        "calendar/v3/calendars/primary/events/cache0001", json={"summary": "changed"}
    )
    changed = api.get(
        "calendar/v3/calendars/primary/events/cache0001",
        headers={"If-None-Match": created["etag"]},
    )
    assert changed.status_code == 200
    assert changed.json()["summary"] == "changed"


def test_delete_leaves_tombstone_second_delete_is_410_and_id_stays_reserved(
    google: GoogleSandbox,
):
    api = google.api(google.access(ADA))
    api.post("calendar/v3/calendars/primary/events", json=_event(id="gone00001"))
    first = api.delete("calendar/v3/calendars/primary/events/gone00001")
    assert first.status_code == 204
    assert first.content == b""
    # Google: the get method always returns deleted events.
    tombstone = api.get("calendar/v3/calendars/primary/events/gone00001")
    assert tombstone.status_code == 200
    assert tombstone.json()["status"] == "cancelled"
    second = api.delete("calendar/v3/calendars/primary/events/gone00001")
    assert second.status_code == 410
    assert second.json() == {
        "error": {
            "errors": [
                {
                    "domain": "global",
                    "reason": "deleted",
                    "message": "Resource has been deleted",
                }
            ],
            "code": 410,
            "message": "Resource has been deleted",
        }
    }
    again = api.post(
        "calendar/v3/calendars/primary/events", json=_event(id="gone00001")
    )
    assert again.status_code == 409
    assert again.json()["error"]["errors"][0]["reason"] == "duplicate"
    # Updating a deleted event without restoring it is refused (python-client #846).
    assert (
        api.put(
            "calendar/v3/calendars/primary/events/gone00001", json=_event()
        ).status_code
        == 403
    )
    restored = api.put(
        "calendar/v3/calendars/primary/events/gone00001",
        json=_event(status="confirmed"),
    )
    assert restored.status_code == 200
    assert restored.json()["status"] == "confirmed"


def test_full_list_hides_tombstones_unless_show_deleted(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    api.post("calendar/v3/calendars/primary/events", json=_event(id="keep00001"))
    api.post("calendar/v3/calendars/primary/events", json=_event(id="drop00001"))
    api.delete("calendar/v3/calendars/primary/events/drop00001")
    listed = api.get("calendar/v3/calendars/primary/events").json()
    assert [e["id"] for e in listed["items"]] == ["keep00001"]
    # The collection has its own etag ("p3..." style, [OBS]).
    assert listed["etag"].startswith('"p3')
    assert listed["etag"].endswith('"')
    with_deleted = api.get(
        "calendar/v3/calendars/primary/events", params={"showDeleted": "true"}
    ).json()
    assert {e["id"]: e["status"] for e in with_deleted["items"]} == {
        "keep00001": "confirmed",
        "drop00001": "cancelled",
    }


def test_reminder_only_edit_keeps_updated_but_changes_etag(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    created = api.post(
        "calendar/v3/calendars/primary/events", json=_event(id="remind001")
    ).json()
    google.state.clock.advance(5)
    patched = api.patch(
        "calendar/v3/calendars/primary/events/remind001",
        json={
            "reminders": {
                "useDefault": False,
                "overrides": [{"method": "popup", "minutes": 10}],
            }
        },
    ).json()
    # "Updating event reminders will not cause this to change."
    assert patched["updated"] == created["updated"]
    assert patched["etag"] != created["etag"]
    google.state.clock.advance(5)
    moved = api.patch(
        "calendar/v3/calendars/primary/events/remind001", json={"summary": "Renamed"}
    ).json()
    assert moved["updated"] > created["updated"]


def test_update_replaces_and_patch_merges(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    api.post(
        "calendar/v3/calendars/primary/events",
        json=_event(id="merge0001", description="keep me", location="Zurich"),
    )
    patched = api.patch(
        "calendar/v3/calendars/primary/events/merge0001", json={"summary": "New"}
    ).json()
    assert (patched["summary"], patched["description"], patched["location"]) == (
        "New",
        "keep me",
        "Zurich",
    )
    cleared = api.patch(
        "calendar/v3/calendars/primary/events/merge0001", json={"location": None}
    ).json()
    assert "location" not in cleared
    replaced = api.put(
        "calendar/v3/calendars/primary/events/merge0001", json=_event(summary="Only")
    ).json()
    assert replaced["summary"] == "Only"
    assert "description" not in replaced


def test_update_without_start_is_400(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    api.post("calendar/v3/calendars/primary/events", json=_event(id="nostart01"))
    response = api.put(
        "calendar/v3/calendars/primary/events/nostart01",
        json={"summary": "x", "end": _event()["end"]},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Missing start time."


def test_end_before_start_is_time_range_empty(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    response = api.post(
        "calendar/v3/calendars/primary/events",
        json=_event(end={"dateTime": "2024-03-04T08:00:00+01:00"}),
    )
    assert response.status_code == 400
    assert response.json()["error"]["errors"][0]["reason"] == "timeRangeEmpty"


def test_unknown_event_is_404_not_found(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    response = api.get("calendar/v3/calendars/primary/events/nosuchevent")
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "errors": [
                {"domain": "global", "reason": "notFound", "message": "Not Found"}
            ],
            "code": 404,
            "message": "Not Found",
        }
    }


def test_unknown_calendar_is_404(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    assert (
        api.get("calendar/v3/calendars/someone-else%40example.com/events").status_code
        == 404
    )


def test_readonly_scope_cannot_insert(google: GoogleSandbox):
    api = google.api(google.access(ADA, [CALENDAR_READONLY]))
    assert api.get("calendar/v3/calendars/primary/events").status_code == 200
    response = api.post("calendar/v3/calendars/primary/events", json=_event())
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["errors"][0]["reason"] == "insufficientPermissions"
    assert error["status"] == "PERMISSION_DENIED"
    assert error["details"][0]["reason"] == "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
    assert error["details"][0]["metadata"] == {
        "service": "calendar-json.googleapis.com",
        "method": "calendar.v3.Events.Insert",
    }
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_send_updates_is_accepted_and_validated(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    ok = api.post(
        "calendar/v3/calendars/primary/events",
        params={"sendUpdates": "none"},
        json=_event(),
    )
    assert ok.status_code == 200
    bad = api.post(
        "calendar/v3/calendars/primary/events",
        params={"sendUpdates": "nobody"},
        json=_event(),
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["errors"][0]["location"] == "sendUpdates"


def test_import_requires_ical_uid_and_upserts(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    missing = api.post("calendar/v3/calendars/primary/events/import", json=_event())
    assert missing.status_code == 400
    first = api.post(
        "calendar/v3/calendars/primary/events/import",
        json=_event(
            iCalUID="meeting-1@example.org", organizer={"email": "boss@example.org"}
        ),
    ).json()
    assert first["iCalUID"] == "meeting-1@example.org"
    assert first["organizer"] == {"email": "boss@example.org"}
    second = api.post(
        "calendar/v3/calendars/primary/events/import",
        json=_event(iCalUID="meeting-1@example.org", summary="Renamed"),
    ).json()
    assert second["id"] == first["id"]
    assert second["summary"] == "Renamed"


def test_fields_partial_response(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    api.post("calendar/v3/calendars/primary/events", json=_event(id="fields001"))
    body = api.get(
        "calendar/v3/calendars/primary/events",
        params={"fields": "items(id,etag),nextSyncToken"},
    ).json()
    assert set(body) == {"items", "nextSyncToken"}
    assert set(body["items"][0]) == {"id", "etag"}
